import { afterEach, describe, expect, it, vi } from 'vitest';

import { LiveOrder } from './live-order.js';

describe('LiveOrder', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('emits a conversation in seq order even when fan-outs finish out of order', () => {
    const order = new LiveOrder();
    const seen: number[] = [];
    const [one, two, three] = [1, 2, 3].map(() => order.reserve('c'));
    three.emit(() => seen.push(3));
    two.emit(() => seen.push(2));
    expect(seen).toEqual([]);
    one.emit(() => seen.push(1));
    expect(seen).toEqual([1, 2, 3]);
  });

  it('does not hold conversations back for each other', () => {
    const order = new LiveOrder();
    const seen: string[] = [];
    order.reserve('a');
    order.reserve('b').emit(() => seen.push('b1'));
    expect(seen).toEqual(['b1']);
  });

  it('lets successors go when a place is released (rolled back, duplicate)', () => {
    const order = new LiveOrder();
    const seen: number[] = [];
    const [one, two] = [order.reserve('c'), order.reserve('c')];
    two.emit(() => seen.push(2));
    one.release();
    expect(seen).toEqual([2]);
  });

  it('ignores a release once the emit is registered, and a second emit', () => {
    const order = new LiveOrder();
    const seen: number[] = [];
    const [one, two] = [order.reserve('c'), order.reserve('c')];
    two.emit(() => seen.push(2));
    two.release();
    two.emit(() => seen.push(-2));
    one.emit(() => seen.push(1));
    one.release();
    expect(seen).toEqual([1, 2]);
  });

  it('sends at once an emit that comes after its place was skipped', () => {
    vi.useFakeTimers();
    const order = new LiveOrder();
    const seen: number[] = [];
    const [one, two] = [order.reserve('c'), order.reserve('c')];
    two.emit(() => seen.push(2));
    vi.advanceTimersByTime(5_001);
    expect(seen).toEqual([2]);
    one.emit(() => seen.push(1));
    expect(seen).toEqual([2, 1]);
  });

  it('skips a place that stalls its successors for too long', () => {
    vi.useFakeTimers();
    const order = new LiveOrder();
    const seen: number[] = [];
    order.reserve('c');
    order.reserve('c').emit(() => seen.push(2));
    vi.advanceTimersByTime(4_999);
    expect(seen).toEqual([]);
    vi.advanceTimersByTime(2);
    expect(seen).toEqual([2]);
  });

  it('counts the stall from the last step forward, and skips only the place that is stuck', () => {
    vi.useFakeTimers();
    const order = new LiveOrder();
    const seen: number[] = [];
    const slots = [1, 2, 3, 4].map(() => order.reserve('c'));
    slots[1].emit(() => seen.push(2));
    vi.advanceTimersByTime(4_000);
    slots[0].emit(() => seen.push(1)); // progress: 1 and 2 go, 3 now holds 4 back
    slots[3].emit(() => seen.push(4));
    expect(seen).toEqual([1, 2]);
    vi.advanceTimersByTime(4_999);
    expect(seen).toEqual([1, 2]);
    vi.advanceTimersByTime(2);
    expect(seen).toEqual([1, 2, 4]);
  });

  it('does not push the stall back when only later places get ready', () => {
    vi.useFakeTimers();
    const order = new LiveOrder();
    const seen: number[] = [];
    const slots = [1, 2, 3].map(() => order.reserve('c'));
    slots[1].emit(() => seen.push(2));
    vi.advanceTimersByTime(4_000);
    slots[2].emit(() => seen.push(3));
    vi.advanceTimersByTime(1_001);
    expect(seen).toEqual([2, 3]);
  });

  it('keeps going when one emit throws', () => {
    const order = new LiveOrder();
    const seen: number[] = [];
    const [one, two] = [order.reserve('c'), order.reserve('c')];
    two.emit(() => seen.push(2));
    one.emit(() => {
      throw new Error('socket gone');
    });
    expect(seen).toEqual([2]);
  });

  it('forgets a conversation once its line is empty', () => {
    const order = new LiveOrder();
    order.reserve('c').release();
    expect((order as unknown as { lines: Map<string, unknown> }).lines.size).toBe(0);
  });
});
