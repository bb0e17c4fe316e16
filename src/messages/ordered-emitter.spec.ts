import { afterEach, describe, expect, it, vi } from 'vitest';

import { OrderedEmitter } from './ordered-emitter.js';

describe('OrderedEmitter', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('emits a conversation in seq order even when fan-outs finish out of order', () => {
    const emitter = new OrderedEmitter();
    const seen: number[] = [];
    for (const seq of [1, 2, 3]) emitter.reserve('c', seq);
    emitter.emit('c', 3, () => seen.push(3));
    emitter.emit('c', 2, () => seen.push(2));
    expect(seen).toEqual([]);
    emitter.emit('c', 1, () => seen.push(1));
    expect(seen).toEqual([1, 2, 3]);
  });

  it('does not hold conversations back for each other', () => {
    const emitter = new OrderedEmitter();
    const seen: string[] = [];
    emitter.reserve('a', 1);
    emitter.reserve('b', 1);
    emitter.emit('b', 1, () => seen.push('b1'));
    expect(seen).toEqual(['b1']);
  });

  it('lets successors go when a reserved seq is released (rolled back, duplicate)', () => {
    const emitter = new OrderedEmitter();
    const seen: number[] = [];
    emitter.reserve('c', 1);
    emitter.reserve('c', 2);
    emitter.emit('c', 2, () => seen.push(2));
    emitter.release('c', 1);
    expect(seen).toEqual([2]);
  });

  it('ignores a release once the emit is registered', () => {
    const emitter = new OrderedEmitter();
    const seen: number[] = [];
    emitter.reserve('c', 1);
    emitter.reserve('c', 2);
    emitter.emit('c', 2, () => seen.push(2));
    emitter.release('c', 2);
    emitter.emit('c', 1, () => seen.push(1));
    expect(seen).toEqual([1, 2]);
  });

  it('emits at once what was never reserved', () => {
    const emitter = new OrderedEmitter();
    const seen: number[] = [];
    emitter.emit('c', 7, () => seen.push(7));
    expect(seen).toEqual([7]);
  });

  it('skips a seq that stalls its successors for too long', () => {
    vi.useFakeTimers();
    const emitter = new OrderedEmitter();
    const seen: number[] = [];
    emitter.reserve('c', 1);
    emitter.reserve('c', 2);
    emitter.emit('c', 2, () => seen.push(2));
    vi.advanceTimersByTime(4_999);
    expect(seen).toEqual([]);
    vi.advanceTimersByTime(2);
    expect(seen).toEqual([2]);
  });

  it('counts the stall from the last step forward, and skips only the seq that is stuck', () => {
    vi.useFakeTimers();
    const emitter = new OrderedEmitter();
    const seen: number[] = [];
    for (const seq of [1, 2, 3, 4]) emitter.reserve('c', seq);
    emitter.emit('c', 2, () => seen.push(2));
    vi.advanceTimersByTime(4_000);
    emitter.emit('c', 1, () => seen.push(1)); // progress: 1 and 2 go, 3 now holds 4 back
    emitter.emit('c', 4, () => seen.push(4));
    expect(seen).toEqual([1, 2]);
    vi.advanceTimersByTime(4_999);
    expect(seen).toEqual([1, 2]);
    vi.advanceTimersByTime(2);
    expect(seen).toEqual([1, 2, 4]);
    vi.useRealTimers();
  });

  it('keeps going when one emit throws', () => {
    const emitter = new OrderedEmitter();
    const seen: number[] = [];
    emitter.reserve('c', 1);
    emitter.reserve('c', 2);
    emitter.emit('c', 2, () => seen.push(2));
    emitter.emit('c', 1, () => {
      throw new Error('socket gone');
    });
    expect(seen).toEqual([2]);
  });
});
