import { describe, expect, it } from 'vitest';

import { StorageWriter } from './storage-writer.js';
import { memoryStorage } from './storage/memory.js';
import type { ClientStorage, StoredSend } from './storage/storage.js';
import { deferred, flush } from './spec-support.js';

function entry(order: number, overrides: Partial<StoredSend> = {}): StoredSend {
  return {
    clientMsgId: `m${order}`,
    conversationId: 'c1',
    createdAt: new Date(1_700_000_000_000 + order).toISOString(),
    attempts: 0,
    order,
    body: `hello ${order}`,
    ...overrides,
  };
}

type Call =
  | { op: 'put'; ids: string[] }
  | { op: 'delete'; ids: string[] }
  | { op: 'mark'; marks: Record<string, number> }
  | { op: 'load' };

/**
 * A memory storage that records each call, checks that calls never overlap, and lets a
 * test hold the next calls (`gate`) or make them fail (`failNext`).
 */
function recordingStorage() {
  const inner = memoryStorage();
  const calls: Call[] = [];
  const gates: Promise<void>[] = [];
  const failures: unknown[] = [];
  let active = 0;
  let overlapped = false;
  const run = async (call: Call, body: () => Promise<void>) => {
    calls.push(call);
    if (active > 0) overlapped = true;
    active++;
    try {
      const gate = gates.shift();
      if (gate) await gate;
      if (failures.length > 0) throw failures.shift();
      await body();
    } finally {
      active--;
    }
  };
  const storage: ClientStorage = {
    load: async () => {
      calls.push({ op: 'load' });
      return inner.load();
    },
    putOutbox: (entries) => run({ op: 'put', ids: entries.map((e) => e.clientMsgId) }, () => inner.putOutbox(entries)),
    deleteOutbox: (ids) => run({ op: 'delete', ids: [...ids] }, () => inner.deleteOutbox(ids)),
    setHighWater: (marks) => run({ op: 'mark', marks: { ...marks } }, () => inner.setHighWater(marks)),
  };
  return {
    storage,
    inner,
    calls,
    overlapped: () => overlapped,
    /** Holds the next storage write until the returned function is called. */
    gate: () => {
      const hold = deferred();
      gates.push(hold.promise);
      return hold.resolve;
    },
    failNext: (error: unknown) => failures.push(error),
  };
}

function setup() {
  const recording = recordingStorage();
  const errors: unknown[] = [];
  const writer = new StorageWriter(recording.storage, (error) => errors.push(error));
  return { ...recording, writer, errors };
}

describe('StorageWriter', () => {
  it('writes the changes of one tick as one batch', async () => {
    const { writer, calls, inner } = setup();

    await Promise.all([writer.put(entry(1)), writer.put(entry(2)), writer.mark('c1', 4), writer.mark('c2', 9)]);

    expect(calls).toEqual([
      { op: 'put', ids: ['m1', 'm2'] },
      { op: 'mark', marks: { c1: 4, c2: 9 } },
    ]);
    const state = await inner.load();
    expect(state.outbox.map((e) => e.clientMsgId)).toEqual(['m1', 'm2']);
    expect(state.highWater).toEqual({ c1: 4, c2: 9 });
  });

  it('keeps the last put of an entry within a tick, and the highest mark', async () => {
    const { writer, calls, inner } = setup();

    await Promise.all([
      writer.put(entry(1, { attempts: 0 })),
      writer.put(entry(1, { attempts: 3 })),
      writer.mark('c1', 7),
      writer.mark('c1', 5),
    ]);

    expect(calls).toEqual([
      { op: 'put', ids: ['m1'] },
      { op: 'mark', marks: { c1: 7 } },
    ]);
    expect((await inner.load()).outbox[0]?.attempts).toBe(3);
  });

  it('cancels a put with a delete of the same entry in the same tick', async () => {
    const { writer, calls, inner } = setup();

    const put = writer.put(entry(1));
    writer.delete('m1');
    await put;

    expect(calls).toEqual([{ op: 'delete', ids: ['m1'] }]);
    expect((await inner.load()).outbox).toEqual([]);
  });

  it('keeps an entry put again after its delete in the same tick', async () => {
    const { writer, calls, inner } = setup();
    await writer.put(entry(1));
    calls.length = 0;

    writer.delete('m1');
    await writer.put(entry(1, { attempts: 2 }));

    expect(calls).toEqual([{ op: 'put', ids: ['m1'] }]);
    expect((await inner.load()).outbox.map((e) => [e.clientMsgId, e.attempts])).toEqual([['m1', 2]]);
  });

  it('runs batches one at a time, in the order they were made', async () => {
    const { writer, calls, gate, overlapped } = setup();
    const release = gate();
    const done: string[] = [];

    void writer.put(entry(1)).then(() => done.push('m1'));
    await flush(); // the first batch is now in the storage, held
    void writer.put(entry(2)).then(() => done.push('m2'));
    void writer.mark('c1', 3).then(() => done.push('mark'));
    await flush();

    expect(calls).toEqual([{ op: 'put', ids: ['m1'] }]);
    expect(done).toEqual([]);

    release();
    await writer.idle();
    await flush();

    expect(calls).toEqual([
      { op: 'put', ids: ['m1'] },
      { op: 'put', ids: ['m2'] },
      { op: 'mark', marks: { c1: 3 } },
    ]);
    expect(done).toEqual(['m1', 'm2', 'mark']);
    expect(overlapped()).toBe(false);
  });

  it('runs a read after every change made before it, including one still being written', async () => {
    const { writer, gate, storage } = setup();
    const release = gate();
    void writer.put(entry(1));
    await flush();
    void writer.put(entry(2));
    writer.delete('m1');

    const read = writer.read(() => storage.load());
    await flush();
    release();

    expect((await read).outbox.map((e) => e.clientMsgId)).toEqual(['m2']);
  });

  it('rejects the waiters of a failed batch only; the next batch goes on', async () => {
    const { writer, failNext, inner } = setup();
    const failure = new Error('disk full');
    failNext(failure);

    const first = writer.put(entry(1));
    const firstMark = writer.mark('c1', 1);
    await expect(first).rejects.toBe(failure);
    await expect(firstMark).rejects.toBe(failure);

    await expect(writer.put(entry(2))).resolves.toBeUndefined();
    expect((await inner.load()).outbox.map((e) => e.clientMsgId)).toEqual(['m2']);
  });

  it('reports a failed delete through onError instead of throwing', async () => {
    const { writer, failNext, errors } = setup();
    const failure = new Error('locked');
    failNext(failure);

    writer.delete('m1');
    await writer.idle();
    await flush();

    expect(errors).toEqual([failure]);
  });

  it('resolves idle() once the writes made so far were attempted', async () => {
    const { writer, gate } = setup();
    await expect(writer.idle()).resolves.toBeUndefined();
    const release = gate();
    let written = false;
    void writer.put(entry(1)).then(() => (written = true));
    await flush();
    let idle = false;
    void writer.idle().then(() => (idle = true));
    await flush();
    expect(idle).toBe(false);

    release();
    await flush();
    expect(written).toBe(true);
    expect(idle).toBe(true);
  });
});
