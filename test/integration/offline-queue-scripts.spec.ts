// The offline queue's Redis scripts (src/offline-queue/lua/*.lua), each against a real Redis
// through the repository method that runs it, with the keys it leaves checked directly.
// The connect-time audit trusts their bookkeeping (cursor, acks out of order, highest seq):
// a wrong cursor would hide a loss or bring acked messages back.
import { createHash, randomUUID } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { parseEnv } from '../../src/config/config.parser.js';
import type { DeviceRef } from '../../src/devices/devices.types.js';
import { OfflineQueueRepository } from '../../src/offline-queue/offline-queue.repository.js';
import type { PendingEntry } from '../../src/offline-queue/offline-queue.types.js';
import { RedisService } from '../../src/redis/redis.service.js';
import { testEnv } from '../support/app.js';
import { useTestRedisDb } from '../support/databases.js';
import { userId } from '../support/fixtures.js';

const LUA_DIR = join(import.meta.dirname, '..', '..', 'src', 'offline-queue', 'lua');
const EPOCH_KEY = 'mq:epoch';

let redis: RedisService;
let queues: OfflineQueueRepository;

beforeAll(() => {
  // A Redis database of this file's own; the repository needs nothing else (no app, no PostgreSQL).
  const config = parseEnv(testEnv('postgresql://unused@127.0.0.1:1/unused', useTestRedisDb().url));
  redis = new RedisService(config);
  queues = new OfflineQueueRepository(redis);
});

afterAll(async () => {
  await redis?.onApplicationShutdown();
});

/** Entries of one conversation, in seq order (queue order follows seq unless `scores` says otherwise). */
function entries(conversationId: string, seqs: readonly number[], scores?: readonly number[]): PendingEntry[] {
  return seqs.map((seq, index) => ({
    messageId: randomUUID(),
    conversationId,
    seq,
    senderId: `sender-${seq}`,
    score: scores?.[index] ?? 1_000_000 + seq,
  }));
}

const ids = (list: readonly PendingEntry[]) => list.map((entry) => entry.messageId);

function keysOf(device: DeviceRef) {
  const tag = `mq:{${device.userId}\u0000${device.deviceId}}`;
  return {
    z: `${tag}:z`,
    m: `${tag}:m`,
    hi: `${tag}:hi`,
    cur: `${tag}:cur`,
    epoch: `${tag}:epoch`,
    conv: (conversationId: string) => `${tag}:c:${conversationId}`,
    ahead: (conversationId: string) => `${tag}:x:${conversationId}`,
  };
}

/** A device that is in sync with the current global epoch (as a new device is at registration). */
async function freshDevice(deviceId = 'phone'): Promise<DeviceRef> {
  const device = { userId: userId('q'), deviceId };
  await queues.syncState(device, true);
  return device;
}

/** A device Redis has never seen synced: no device epoch. */
function unsyncedDevice(): DeviceRef {
  return { userId: userId('q'), deviceId: 'phone' };
}

async function stateOf(device: DeviceRef, conversationId: string) {
  const state = await queues.syncState(device, false);
  if (!state.synced) throw new Error('queue out of sync');
  return { whole: state.whole, ...state.conversations.find((c) => c.conversationId === conversationId) };
}

async function seqsQueued(device: DeviceRef): Promise<number[]> {
  return (await queues.peek(device, 10_000)).map((ref) => ref.seq);
}

/** Everything Redis holds for one conversation of a device, for before/after comparisons. */
async function snapshot(device: DeviceRef, conversationId: string) {
  const k = keysOf(device);
  const client = redis.client;
  return {
    z: await client.zrange(k.z, '0', '-1', 'WITHSCORES'),
    m: await client.hgetall(k.m),
    hi: await client.hgetall(k.hi),
    cur: await client.hgetall(k.cur),
    conv: await client.zrange(k.conv(conversationId), '0', '-1', 'WITHSCORES'),
    ahead: await client.zrange(k.ahead(conversationId), '0', '-1', 'WITHSCORES'),
  };
}

describe('the script files', () => {
  it('holds one .lua file per script, each tested below', () => {
    expect(readdirSync(LUA_DIR).sort()).toEqual(['ack.lua', 'enqueue-many.lua', 'peek-synced.lua', 'sync-state.lua']);
  });

  it('runs the files on disk: the scripts Redis ran are exactly their text', async () => {
    const device = await freshDevice();
    const list = entries(randomUUID(), [1]);
    await queues.enqueueForDevices([device], list, 100);
    await queues.peekIfSynced(device, 10);
    await queues.ack(device, ids(list));

    const shas = readdirSync(LUA_DIR).map((file) =>
      createHash('sha1')
        .update(readFileSync(join(LUA_DIR, file)))
        .digest('hex'),
    );
    expect(await redis.client.script('EXISTS', ...shas)).toEqual(shas.map(() => 1));
  });
});

describe('enqueue-many.lua: enqueueForDevices', () => {
  it('queues entries oldest first, with an entry, a per-conversation set and the highest seq for each', async () => {
    const device = await freshDevice();
    const [a, b] = [randomUUID(), randomUUID()];
    const listA = entries(a, [1, 2], [10, 30]);
    const listB = entries(b, [7], [20]);

    const dropped = await queues.enqueueForDevices([device], [...listA, ...listB], 100);

    expect(dropped.size).toBe(0);
    expect((await queues.peek(device, 10)).map((ref) => ref.messageId)).toEqual([
      listA[0].messageId,
      listB[0].messageId,
      listA[1].messageId,
    ]);
    expect(await queues.length(device)).toBe(3);
    expect(await redis.client.hget(keysOf(device).m, listA[1].messageId)).toBe(`${a}|2|sender-2`);
    expect(await redis.client.zrange(keysOf(device).conv(a), '0', '-1', 'WITHSCORES')).toEqual([
      listA[0].messageId,
      '1',
      listA[1].messageId,
      '2',
    ]);
    expect(await stateOf(device, a)).toMatchObject({ whole: true, highestSeq: 2, cursor: 0, queued: 2, ackedAhead: 0 });
    expect(await stateOf(device, b)).toMatchObject({ highestSeq: 7, cursor: 0, queued: 1 });
  });

  it('leaves an entry already queued alone (its place too) and adds only new ones', async () => {
    const device = await freshDevice();
    const c = randomUUID();
    const list = entries(c, [1, 2]);
    await queues.enqueueForDevices([device], list.slice(0, 1), 100);

    await queues.enqueueForDevices([device], [{ ...list[0], score: 5 }, list[1]], 100);

    expect(await redis.client.zscore(keysOf(device).z, list[0].messageId)).toBe(String(list[0].score));
    expect(await stateOf(device, c)).toMatchObject({ whole: true, queued: 2, highestSeq: 2 });
  });

  it('never lowers the highest seq when an older message comes late', async () => {
    const device = await freshDevice();
    const c = randomUUID();
    await queues.enqueueForDevices([device], entries(c, [5]), 100);

    await queues.enqueueForDevices([device], entries(c, [3]), 100);

    expect(await stateOf(device, c)).toMatchObject({ whole: true, highestSeq: 5, queued: 2 });
    expect(await seqsQueued(device)).toEqual([3, 5]);
  });

  it('drops the oldest entries past the cap, returns them, and moves the cursor past them as acks do', async () => {
    const device = await freshDevice();
    const c = randomUUID();

    const dropped = await queues.enqueueForDevices([device], entries(c, [1, 2, 3, 4, 5, 6]), 4);

    expect(dropped.get(device)).toEqual([
      { conversationId: c, seq: 1 },
      { conversationId: c, seq: 2 },
    ]);
    expect(await stateOf(device, c)).toMatchObject({ whole: true, cursor: 2, queued: 4, highestSeq: 6 });
    expect(await seqsQueued(device)).toEqual([3, 4, 5, 6]);
  });

  it("moves a conversation's cursor to its highest seq when the cap drops all it had, and clears acks past it", async () => {
    const device = await freshDevice();
    const [a, b] = [randomUUID(), randomUUID()];
    const listA = entries(a, [1, 2, 3], [1, 2, 3]);
    await queues.enqueueForDevices([device], listA, 100);
    await queues.ack(device, [listA[2].messageId]); // acked ahead of the cursor

    const dropped = await queues.enqueueForDevices([device], entries(b, [9], [4]), 1);

    expect(dropped.get(device)).toEqual([
      { conversationId: a, seq: 1 },
      { conversationId: a, seq: 2 },
    ]);
    expect(await stateOf(device, a)).toMatchObject({ whole: true, cursor: 3, queued: 0, ackedAhead: 0 });
    expect(await stateOf(device, b)).toMatchObject({ cursor: 0, queued: 1, highestSeq: 9 });
  });

  it('fans out to many devices in one call and reports what each one dropped', async () => {
    const full = await freshDevice('full');
    const empty = await freshDevice('empty');
    const c = randomUUID();
    await queues.enqueueForDevices([full], entries(c, [1, 2]), 3);

    const fresh = entries(c, [3, 4]);
    const dropped = await queues.enqueueForDevices([full, empty], fresh, 3);

    expect([...dropped.keys()]).toEqual([full]);
    expect(dropped.get(full)).toEqual([{ conversationId: c, seq: 1 }]);
    expect(await seqsQueued(full)).toEqual([2, 3, 4]);
    expect(await seqsQueued(empty)).toEqual([3, 4]);
    expect(await stateOf(empty, c)).toMatchObject({ whole: true, cursor: 0, highestSeq: 4 });
  });

  it("takes a rebuild's thousands of entries in one go", async () => {
    const device = await freshDevice();
    const c = randomUUID();
    const seqs = Array.from({ length: 1_200 }, (_, index) => index + 1);

    await queues.enqueueForDevices([device], entries(c, seqs), 10_000);

    expect(await stateOf(device, c)).toMatchObject({ whole: true, queued: 1_200, highestSeq: 1_200, cursor: 0 });
  });
});

describe('enqueue-many.lua in repair mode: the rebuild from PostgreSQL', () => {
  it('skips what was acked and rewrites the structures a queue lost', async () => {
    const device = await freshDevice();
    const c = randomUUID();
    const list = entries(c, [1, 2, 3, 4]);
    await queues.enqueueForDevices([device], list, 100);
    await queues.ack(device, [list[0].messageId, list[2].messageId]);
    // The entries hash lost seq 2's entry: the structures disagree.
    await redis.client.hdel(keysOf(device).m, list[1].messageId);
    expect((await stateOf(device, c)).whole).toBe(false);

    await queues.enqueueForDevices([device], list, 100, 'repair');

    expect(await stateOf(device, c)).toMatchObject({ whole: true, cursor: 1, queued: 2, ackedAhead: 1 });
    expect(await seqsQueued(device)).toEqual([2, 4]);
  });

  it('puts back entries the queue order or a conversation set lost', async () => {
    const device = await freshDevice();
    const c = randomUUID();
    const list = entries(c, [1, 2, 3]);
    await queues.enqueueForDevices([device], list, 100);
    const k = keysOf(device);
    await redis.client.zrem(k.z, list[0].messageId);
    await redis.client.zrem(k.conv(c), list[2].messageId);
    expect((await stateOf(device, c)).whole).toBe(false);

    await queues.enqueueForDevices([device], list, 100, 'repair');

    expect(await stateOf(device, c)).toMatchObject({ whole: true, cursor: 0, queued: 3, highestSeq: 3 });
    expect(await seqsQueued(device)).toEqual([1, 2, 3]);
  });

  it('refills a queue that lost everything but its acked state, without bringing acked messages back', async () => {
    const device = await freshDevice();
    const c = randomUUID();
    const list = entries(c, [1, 2, 3, 4, 5]);
    await queues.enqueueForDevices([device], list, 100);
    await queues.ack(device, [list[0].messageId, list[1].messageId, list[3].messageId]);
    const k = keysOf(device);
    await redis.client.del(k.z, k.m, k.hi, k.conv(c));

    await queues.enqueueForDevices([device], list, 100, 'repair');

    expect(await seqsQueued(device)).toEqual([3, 5]);
    expect(await stateOf(device, c)).toMatchObject({ whole: true, cursor: 2, queued: 2, ackedAhead: 1, highestSeq: 5 });
  });

  it('leaves a whole queue exactly as it was', async () => {
    const device = await freshDevice();
    const c = randomUUID();
    const list = entries(c, [1, 2, 3, 4]);
    await queues.enqueueForDevices([device], list, 100);
    await queues.ack(device, [list[0].messageId, list[2].messageId]);
    const before = await snapshot(device, c);

    const dropped = await queues.enqueueForDevices([device], list, 100, 'repair');

    expect(dropped.size).toBe(0);
    expect(await snapshot(device, c)).toEqual(before);
  });
});

describe('ack.lua: ack', () => {
  it('returns each acked entry with its sender, and moves the cursor over acks in order', async () => {
    const device = await freshDevice();
    const c = randomUUID();
    const list = entries(c, [1, 2, 3]);
    await queues.enqueueForDevices([device], list, 100);

    const result = await queues.ack(device, [list[0].messageId, list[1].messageId]);

    expect(result.acked).toEqual([
      { messageId: list[0].messageId, conversationId: c, seq: 1, senderId: 'sender-1' },
      { messageId: list[1].messageId, conversationId: c, seq: 2, senderId: 'sender-2' },
    ]);
    expect(result.cursors).toEqual([{ conversationId: c, ackedSeq: 2 }]);
    expect(await stateOf(device, c)).toMatchObject({ whole: true, cursor: 2, queued: 1, ackedAhead: 0 });
    expect(await redis.client.hget(keysOf(device).m, list[0].messageId)).toBeNull();
  });

  it('records acks out of order past the cursor until the cursor passes them', async () => {
    const device = await freshDevice();
    const c = randomUUID();
    const list = entries(c, [1, 2, 3, 4, 5]);
    await queues.enqueueForDevices([device], list, 100);

    const first = await queues.ack(device, [list[0].messageId]);
    expect(first.cursors).toEqual([{ conversationId: c, ackedSeq: 1 }]);
    const ahead = await queues.ack(device, [list[3].messageId, list[4].messageId]);
    expect(ahead.cursors).toEqual([{ conversationId: c, ackedSeq: 1 }]);
    expect(await stateOf(device, c)).toMatchObject({ cursor: 1, queued: 2, ackedAhead: 2 });
    expect(await redis.client.zrange(keysOf(device).ahead(c), '0', '-1')).toEqual([
      list[3].messageId,
      list[4].messageId,
    ]);

    const rest = await queues.ack(device, [list[1].messageId, list[2].messageId]);
    expect(rest.cursors).toEqual([{ conversationId: c, ackedSeq: 5 }]);
    expect(await stateOf(device, c)).toMatchObject({ cursor: 5, queued: 0, ackedAhead: 0 });
  });

  it('moves the cursor to the highest seq ever queued when a conversation empties', async () => {
    const device = await freshDevice();
    const c = randomUUID();
    const list = entries(c, [4, 6]);
    await queues.enqueueForDevices([device], list, 100);

    const result = await queues.ack(device, ids(list));

    expect(result.cursors).toEqual([{ conversationId: c, ackedSeq: 6 }]);
    expect(await stateOf(device, c)).toMatchObject({ whole: true, cursor: 6, queued: 0, ackedAhead: 0 });
  });

  it('skips unknown and repeated ids, touching no cursor', async () => {
    const device = await freshDevice();
    const c = randomUUID();
    const list = entries(c, [1, 2]);
    await queues.enqueueForDevices([device], list, 100);
    await queues.ack(device, [list[1].messageId]);
    const before = await snapshot(device, c);

    const result = await queues.ack(device, [randomUUID(), list[1].messageId]);

    expect(result).toEqual({ acked: [], cursors: [] });
    expect(await snapshot(device, c)).toEqual(before);
  });

  it('reports a new cursor for each conversation touched', async () => {
    const device = await freshDevice();
    const [a, b] = [randomUUID(), randomUUID()];
    const listA = entries(a, [1, 2]);
    const listB = entries(b, [1, 2]);
    await queues.enqueueForDevices([device], [...listA, ...listB], 100);

    const result = await queues.ack(device, [listA[0].messageId, listB[0].messageId, listB[1].messageId]);

    expect(result.acked.map((entry) => entry.conversationId).sort()).toEqual([a, b, b].sort());
    expect(result.cursors.sort((x, y) => x.conversationId.localeCompare(y.conversationId))).toEqual(
      [
        { conversationId: a, ackedSeq: 1 },
        { conversationId: b, ackedSeq: 2 },
      ].sort((x, y) => x.conversationId.localeCompare(y.conversationId)),
    );
  });

  it("acks on one device's queue only", async () => {
    const phone = await freshDevice('phone');
    const laptop = await freshDevice('laptop');
    const c = randomUUID();
    const list = entries(c, [1, 2]);
    await queues.enqueueForDevices([phone, laptop], list, 100);

    await queues.ack(phone, ids(list));

    expect(await seqsQueued(phone)).toEqual([]);
    expect(await seqsQueued(laptop)).toEqual([1, 2]);
    expect(await stateOf(laptop, c)).toMatchObject({ whole: true, cursor: 0, queued: 2 });
  });
});

describe('sync-state.lua: syncState', () => {
  it('marks a new device in sync at once, with the global epoch', async () => {
    const device = unsyncedDevice();

    const state = await queues.syncState(device, true);

    expect(state).toEqual({ synced: true, length: 0, whole: true, conversations: [] });
    const epoch = await redis.client.get(EPOCH_KEY);
    expect(epoch).not.toBeNull();
    expect(await redis.client.get(keysOf(device).epoch)).toBe(epoch);
  });

  it('asks for a rebuild of a known device never synced, and reports it synced once its epoch is set', async () => {
    const device = unsyncedDevice();
    await queues.syncState(await freshDevice(), true); // a global epoch exists
    const epoch = await redis.client.get(EPOCH_KEY);

    const before = await queues.syncState(device, false);
    expect(before).toEqual({ synced: false, epoch });

    await queues.setDeviceEpoch(device, epoch!);
    expect(await queues.syncState(device, false)).toEqual({ synced: true, length: 0, whole: true, conversations: [] });
  });

  it('asks every device for a rebuild after the global epoch is reset', async () => {
    const device = await freshDevice();
    const old = await redis.client.get(EPOCH_KEY);

    await queues.resetEpoch();
    const state = await queues.syncState(device, false);

    const epoch = await redis.client.get(EPOCH_KEY);
    expect(epoch).not.toBe(old);
    expect(state).toEqual({ synced: false, epoch });
  });

  it('makes a fresh global epoch when Redis lost it, and asks for a rebuild', async () => {
    const device = await freshDevice();
    const old = await redis.client.get(EPOCH_KEY);
    await redis.client.del(EPOCH_KEY);

    const state = await queues.syncState(device, false);

    const epoch = await redis.client.get(EPOCH_KEY);
    expect(epoch).not.toBeNull();
    expect(epoch).not.toBe(old);
    expect(state).toEqual({ synced: false, epoch });
  });

  it('reports, per conversation, the highest seq, the cursor and the queued and acked-ahead counts', async () => {
    const device = await freshDevice();
    const [a, b] = [randomUUID(), randomUUID()];
    const listA = entries(a, [1, 2, 3]);
    const listB = entries(b, [5]);
    await queues.enqueueForDevices([device], [...listA, ...listB], 100);
    await queues.ack(device, [listA[0].messageId, listA[2].messageId, listB[0].messageId]);

    const state = await queues.syncState(device, false);

    if (!state.synced) throw new Error('queue out of sync');
    expect(state.length).toBe(1);
    expect(state.whole).toBe(true);
    expect(state.conversations.sort((x, y) => x.highestSeq - y.highestSeq)).toEqual([
      { conversationId: a, highestSeq: 3, cursor: 1, queued: 1, ackedAhead: 1 },
      { conversationId: b, highestSeq: 5, cursor: 5, queued: 0, ackedAhead: 0 },
    ]);
  });

  it('reports a queue whose entries hash lost an entry as not whole', async () => {
    const device = await freshDevice();
    const c = randomUUID();
    const list = entries(c, [1, 2]);
    await queues.enqueueForDevices([device], list, 100);

    await redis.client.hdel(keysOf(device).m, list[0].messageId);

    expect(await stateOf(device, c)).toMatchObject({ whole: false, queued: 2 });
  });

  it('reports a queue whose conversation set lost an entry as not whole', async () => {
    const device = await freshDevice();
    const c = randomUUID();
    const list = entries(c, [1, 2]);
    await queues.enqueueForDevices([device], list, 100);

    await redis.client.zrem(keysOf(device).conv(c), list[1].messageId);

    expect(await stateOf(device, c)).toMatchObject({ whole: false, queued: 1 });
  });
});

describe('peek-synced.lua: peekIfSynced', () => {
  it('returns the oldest entries up to the limit, oldest first, and the whole queue length', async () => {
    const device = await freshDevice();
    const c = randomUUID();
    const list = entries(c, [1, 2, 3, 4, 5]);
    await queues.enqueueForDevices([device], list, 100);

    const page = await queues.peekIfSynced(device, 3);

    expect(page).toEqual({
      length: 5,
      refs: list.slice(0, 3).map((entry) => ({ messageId: entry.messageId, conversationId: c, seq: entry.seq })),
    });
  });

  it('returns an empty page for an empty queue in sync', async () => {
    const device = await freshDevice();

    expect(await queues.peekIfSynced(device, 10)).toEqual({ refs: [], length: 0 });
  });

  it('returns null for a queue never synced, or synced in an older epoch', async () => {
    expect(await queues.peekIfSynced(unsyncedDevice(), 10)).toBeNull();

    const device = await freshDevice();
    await queues.enqueueForDevices([device], entries(randomUUID(), [1]), 100);
    await queues.resetEpoch();

    expect(await queues.peekIfSynced(device, 10)).toBeNull();
  });

  it('returns null when the global epoch is gone, without making a new one', async () => {
    const device = await freshDevice();
    await redis.client.del(EPOCH_KEY);

    expect(await queues.peekIfSynced(device, 10)).toBeNull();
    expect(await redis.client.get(EPOCH_KEY)).toBeNull();
  });

  it('skips an id whose entry is missing but counts it in the length', async () => {
    const device = await freshDevice();
    const c = randomUUID();
    const list = entries(c, [1, 2, 3]);
    await queues.enqueueForDevices([device], list, 100);
    await redis.client.hdel(keysOf(device).m, list[0].messageId);

    const page = await queues.peekIfSynced(device, 2);

    expect(page).toEqual({ length: 3, refs: [{ messageId: list[1].messageId, conversationId: c, seq: 2 }] });
  });
});
