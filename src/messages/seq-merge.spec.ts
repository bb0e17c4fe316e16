import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

import type { WireMessage } from '@messaging-service/client/protocol';
import { type LiveItem, type MergeEvent, SeqMerge } from './seq-merge.js';

const HOLD = 100;
const CONVERSATION = '5b0c4d84-3d57-4c6e-9a51-0f4a8f3c2b10';

function item(seq: number, previousAt: number | null = 0, conversationId = CONVERSATION): LiveItem {
  const message: WireMessage = {
    id: `m-${conversationId.slice(0, 4)}-${seq}`,
    conversationId,
    seq,
    senderId: 'alice',
    senderDeviceId: 'phone',
    clientMsgId: `c-${seq}`,
    contentType: 'text/plain',
    body: String(seq),
    // Committed now (the tests' clock stands for the database's).
    createdAt: new Date().toISOString(),
  };
  return { message, userIds: ['bob'], previousAt };
}

describe('SeqMerge', () => {
  let emitted: number[];
  let events: Partial<Record<MergeEvent, number>>;
  let stored: Map<number, LiveItem>;
  let fills: [number, number][];
  let failFill: boolean;
  let merge: SeqMerge;

  beforeEach(() => {
    vi.useFakeTimers({ now: 1_000_000 });
    emitted = [];
    events = {};
    stored = new Map();
    fills = [];
    failFill = false;
    merge = new SeqMerge({
      holdMs: HOLD,
      emit: (live) => emitted.push(live.message.seq),
      fill: (_conversationId, after, before) => {
        fills.push([after, before]);
        if (failFill) return Promise.reject(new Error('database down'));
        return Promise.resolve([...stored.values()].filter((s) => s.message.seq > after && s.message.seq < before));
      },
      observe: (event, count) => (events[event] = (events[event] ?? 0) + count),
    });
  });

  afterEach(() => {
    vi.useRealTimers();
  });

  it('passes messages arriving in order straight through', () => {
    for (let seq = 1; seq <= 5; seq++) merge.accept(item(seq));
    expect(emitted).toEqual([1, 2, 3, 4, 5]);
    expect(merge.waiting).toBe(0);
  });

  it('holds a later seq until the missing one arrives, then sends both in order', () => {
    merge.accept(item(1));
    merge.accept(item(3));
    merge.accept(item(4));
    expect(emitted).toEqual([1]);
    merge.accept(item(2));
    expect(emitted).toEqual([1, 2, 3, 4]);
    expect(fills).toEqual([]);
  });

  it('reads a gap from storage after the hold, in order with what waited', async () => {
    merge.accept(item(1));
    stored.set(2, item(2));
    stored.set(3, item(3));
    merge.accept(item(4));
    await vi.advanceTimersByTimeAsync(HOLD - 1);
    expect(emitted).toEqual([1]);
    await vi.advanceTimersByTimeAsync(1);
    expect(fills).toEqual([[1, 4]]);
    expect(emitted).toEqual([1, 2, 3, 4]);
    expect(events.filled).toBe(2);
    // The lost publishes turn up after all: already sent, dropped.
    merge.accept(item(2));
    merge.accept(item(3));
    expect(emitted).toEqual([1, 2, 3, 4]);
    expect(events.late).toBe(2);
    merge.accept(item(5));
    expect(emitted).toEqual([1, 2, 3, 4, 5]);
  });

  it('skips a gap storage cannot give, and never sends below it afterwards', async () => {
    merge.accept(item(1));
    failFill = true;
    merge.accept(item(3));
    await vi.advanceTimersByTimeAsync(HOLD);
    expect(emitted).toEqual([1, 3]);
    expect(events.skipped).toBe(1);
    merge.accept(item(2));
    expect(emitted).toEqual([1, 3]);
  });

  it('reads every gap up to the highest waiting seq in one read', async () => {
    merge.accept(item(1));
    for (const seq of [2, 4, 5]) stored.set(seq, item(seq));
    merge.accept(item(3));
    merge.accept(item(6));
    await vi.advanceTimersByTimeAsync(HOLD);
    expect(fills).toEqual([[1, 6]]);
    expect(emitted).toEqual([1, 2, 3, 4, 5, 6]);
  });

  it('skips only what storage did not give', async () => {
    merge.accept(item(1));
    stored.set(3, item(3));
    merge.accept(item(5));
    await vi.advanceTimersByTimeAsync(HOLD);
    expect(emitted).toEqual([1, 3, 5]);
    expect(events.filled).toBe(1);
    expect(events.skipped).toBe(2);
  });

  it('drops a seq it already sent (a message published twice)', () => {
    merge.accept(item(1));
    merge.accept(item(1));
    merge.accept(item(3));
    merge.accept(item(3));
    merge.accept(item(2));
    expect(emitted).toEqual([1, 2, 3]);
    expect(events.late).toBe(2);
  });

  it('takes a first sight as the start when its predecessor was committed long ago', () => {
    merge.accept(item(41, Date.now() - HOLD));
    expect(emitted).toEqual([41]);
  });

  it('takes a first sight as the start when it needs no wait (read back from storage)', () => {
    merge.accept(item(41, null));
    expect(emitted).toEqual([41]);
  });

  it('holds a first sight whose predecessor was committed just now, until it arrives', () => {
    const now = Date.now();
    merge.accept(item(42, now - 10));
    expect(emitted).toEqual([]);
    merge.accept(item(41, now - HOLD * 10));
    expect(emitted).toEqual([41, 42]);
  });

  it('gives up on a recent predecessor at previousAt + hold, without reading storage', async () => {
    const now = Date.now();
    merge.accept(item(42, now - 30));
    await vi.advanceTimersByTimeAsync(HOLD - 31);
    expect(emitted).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(emitted).toEqual([42]);
    expect(fills).toEqual([]);
    merge.accept(item(41, now - HOLD * 10));
    expect(emitted).toEqual([42]);
  });

  it('never holds a first sight longer than the hold, whatever the clocks say', async () => {
    merge.accept(item(42, Date.now() + 60_000));
    await vi.advanceTimersByTimeAsync(HOLD);
    expect(emitted).toEqual([42]);
  });

  it("judges a first sight by the database's times alone, not this instance's clock", async () => {
    // Committed 10 s before this instance's now (a clock ahead of the database's), its
    // predecessor 10 ms before it: still possibly in flight.
    const late = item(42, 0);
    const committed = Date.now() - 10_000;
    late.message.createdAt = new Date(committed).toISOString();
    late.previousAt = committed - 10;
    merge.accept(late);
    expect(emitted).toEqual([]);
    await vi.advanceTimersByTimeAsync(HOLD - 10);
    expect(emitted).toEqual([42]);
  });

  describe('expectStored (another instance says what it stored)', () => {
    it('reads back a lost last message after the hold, with no later one to reveal it', async () => {
      merge.accept(item(1));
      merge.accept(item(2));
      stored.set(3, item(3));
      merge.expectStored(CONVERSATION, 3);
      await vi.advanceTimersByTimeAsync(HOLD - 1);
      expect(emitted).toEqual([1, 2]);
      await vi.advanceTimersByTimeAsync(1);
      expect(fills).toEqual([[2, 4]]);
      expect(emitted).toEqual([1, 2, 3]);
      expect(events.filled).toBe(1);
      merge.accept(item(3));
      merge.accept(item(4));
      expect(emitted).toEqual([1, 2, 3, 4]);
      expect(events.late).toBe(1);
    });

    it('waits for the live copy within the hold and reads nothing', async () => {
      merge.accept(item(1));
      merge.expectStored(CONVERSATION, 3);
      merge.accept(item(2));
      merge.accept(item(3));
      await vi.advanceTimersByTimeAsync(HOLD * 3);
      expect(emitted).toEqual([1, 2, 3]);
      expect(fills).toEqual([]);
    });

    it('ignores what already went out here', async () => {
      for (let seq = 1; seq <= 3; seq++) merge.accept(item(seq));
      merge.expectStored(CONVERSATION, 2);
      merge.expectStored(CONVERSATION, 3);
      await vi.advanceTimersByTimeAsync(HOLD * 3);
      expect(fills).toEqual([]);
      expect(merge.waiting).toBe(0);
    });

    it('reads the gap and the tip together, behind what waits', async () => {
      merge.accept(item(1));
      merge.accept(item(3));
      for (const seq of [2, 4, 5]) stored.set(seq, item(seq));
      merge.expectStored(CONVERSATION, 5);
      await vi.advanceTimersByTimeAsync(HOLD);
      expect(fills).toEqual([[1, 6]]);
      expect(emitted).toEqual([1, 2, 3, 4, 5]);
    });

    it('sends only the tip of a conversation unknown here, and nothing when told to skip those', async () => {
      const other = '0d1e2f30-4a5b-4c6d-8e9f-a0b1c2d3e4f5';
      stored.set(7, item(7, 0, other));
      merge.expectStored(other, 7, true);
      await vi.advanceTimersByTimeAsync(HOLD * 2);
      expect(fills).toEqual([]);
      merge.expectStored(other, 7);
      await vi.advanceTimersByTimeAsync(HOLD);
      expect(fills).toEqual([[6, 8]]);
      expect(emitted).toEqual([7]);
      merge.accept(item(8, 0, other));
      expect(emitted).toEqual([7, 8]);
    });

    it('skips the tip when storage fails, and goes on from after it', async () => {
      merge.accept(item(1));
      failFill = true;
      merge.expectStored(CONVERSATION, 2);
      await vi.advanceTimersByTimeAsync(HOLD);
      expect(emitted).toEqual([1]);
      expect(events.skipped).toBe(1);
      merge.accept(item(3));
      expect(emitted).toEqual([1, 3]);
    });
  });

  it('keeps conversations apart', () => {
    const other = '9d1e2f3a-0000-4000-8000-000000000001';
    merge.accept(item(1));
    merge.accept(item(1, 0, other));
    merge.accept(item(3));
    merge.accept(item(2, 0, other));
    expect(emitted).toEqual([1, 1, 2]);
    merge.accept(item(2));
    expect(emitted).toEqual([1, 1, 2, 2, 3]);
  });

  it('goes on after an emit throws', () => {
    const seen: number[] = [];
    const throwing = new SeqMerge({
      holdMs: HOLD,
      emit: (live) => {
        seen.push(live.message.seq);
        if (live.message.seq === 2) throw new Error('socket gone');
      },
      fill: () => Promise.resolve([]),
    });
    throwing.accept(item(1));
    throwing.accept(item(3));
    throwing.accept(item(2));
    expect(seen).toEqual([1, 2, 3]);
  });

  it('sends a random interleaving of several senders strictly in seq order', async () => {
    // Three instances' publish streams: each in order, interleaved at random, some lost
    // after the first (a first sight whose in-flight predecessor is lost too is skipped,
    // see the test above).
    for (let round = 0; round < 20; round++) {
      emitted.length = 0;
      const conversationId = `00000000-0000-4000-8000-${String(round).padStart(12, '0')}`;
      const total = 60;
      const streams: LiveItem[][] = [[], [], []];
      let last = 0;
      stored.clear();
      for (let seq = 1; seq <= total; seq++) {
        const live = item(seq, seq === 1 ? 0 : Date.now(), conversationId);
        stored.set(seq, live);
        if (seq > 1 && Math.random() < 0.05) continue;
        streams[Math.floor(Math.random() * 3)].push(live);
        last = seq;
      }
      while (streams.some((s) => s.length > 0)) {
        const open = streams.filter((s) => s.length > 0);
        merge.accept(open[Math.floor(Math.random() * open.length)].shift() as LiveItem);
      }
      await vi.advanceTimersByTimeAsync(HOLD * 5);
      // Up to the last one that arrived: a lost publish after it shows no gap here.
      expect(emitted).toEqual(Array.from({ length: last }, (_, i) => i + 1));
    }
  });
});
