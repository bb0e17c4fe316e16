import { randomUUID } from 'node:crypto';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { DeviceRef } from '../../src/devices/devices.types.js';
import { OfflineQueueRepository } from '../../src/offline-queue/offline-queue.repository.js';
import type { PendingEntry } from '../../src/offline-queue/offline-queue.types.js';
import { RedisService } from '../../src/redis/redis.service.js';
import { startTestApp, type TestApp } from '../support/app.js';
import { userId } from '../support/fixtures.js';

// The queue's bookkeeping that the connect-time audit trusts (cursor, acks out of order,
// highest seq), straight against Redis's scripts: a wrong cursor would hide a loss or
// bring acked messages back.

let service: TestApp;
let queues: OfflineQueueRepository;

beforeAll(async () => {
  service = await startTestApp();
  queues = service.app.get(OfflineQueueRepository);
});

afterAll(async () => {
  await service?.close();
});

function entries(conversationId: string, seqs: readonly number[]): PendingEntry[] {
  return seqs.map((seq) => ({
    messageId: randomUUID(),
    conversationId,
    seq,
    senderId: 'sender',
    score: 1_000_000 + seq,
  }));
}

async function stateOf(device: DeviceRef, conversationId: string) {
  const state = await queues.syncState(device, false);
  if (!state.synced) throw new Error('queue out of sync');
  return { whole: state.whole, ...state.conversations.find((c) => c.conversationId === conversationId) };
}

async function freshDevice(): Promise<DeviceRef> {
  const device = { userId: userId('q'), deviceId: 'phone' };
  await queues.syncState(device, true);
  return device;
}

describe('offline queue scripts', () => {
  it('acks in order move the cursor; acks out of order are recorded past it until the cursor passes them', async () => {
    const device = await freshDevice();
    const c = randomUUID();
    const list = entries(c, [1, 2, 3, 4, 5]);
    await queues.enqueueForDevices([device], list, 100);
    expect(await stateOf(device, c)).toMatchObject({ whole: true, highestSeq: 5, cursor: 0, queued: 5, ackedAhead: 0 });

    const first = await queues.ack(device, [list[0].messageId]);
    expect(first.cursors).toEqual([{ conversationId: c, ackedSeq: 1 }]);
    await queues.ack(device, [list[3].messageId, list[4].messageId]);
    expect(await stateOf(device, c)).toMatchObject({ cursor: 1, queued: 2, ackedAhead: 2 });

    const rest = await queues.ack(device, [list[1].messageId, list[2].messageId]);
    expect(rest.cursors).toEqual([{ conversationId: c, ackedSeq: 5 }]);
    expect(await stateOf(device, c)).toMatchObject({ cursor: 5, queued: 0, ackedAhead: 0 });
  });

  it('entries dropped past the cap move the cursor as acks do', async () => {
    const device = await freshDevice();
    const c = randomUUID();
    const dropped = await queues.enqueueForDevices([device], entries(c, [1, 2, 3, 4, 5, 6]), 4);
    expect(dropped.get(device)).toEqual([
      { conversationId: c, seq: 1 },
      { conversationId: c, seq: 2 },
    ]);
    expect(await stateOf(device, c)).toMatchObject({ whole: true, cursor: 2, queued: 4, highestSeq: 6 });
  });

  it('a repair skips what was acked and rewrites the structures a queue lost', async () => {
    const device = await freshDevice();
    const c = randomUUID();
    const list = entries(c, [1, 2, 3, 4]);
    await queues.enqueueForDevices([device], list, 100);
    await queues.ack(device, [list[0].messageId, list[2].messageId]);
    // The entries hash lost seq 2's entry: the structures disagree.
    const tag = `mq:{${device.userId}\u0000${device.deviceId}}`;
    await service.app.get(RedisService).client.hdel(`${tag}:m`, list[1].messageId);
    expect((await stateOf(device, c)).whole).toBe(false);

    await queues.enqueueForDevices([device], list, 100, 'repair');
    expect(await stateOf(device, c)).toMatchObject({ whole: true, cursor: 1, queued: 2, ackedAhead: 1 });
    expect((await queues.peek(device, 10)).map((ref) => ref.seq)).toEqual([2, 4]);
  });

  it('a plain enqueue leaves a queued entry alone and adds only new ones', async () => {
    const device = await freshDevice();
    const c = randomUUID();
    const list = entries(c, [1, 2]);
    await queues.enqueueForDevices([device], list.slice(0, 1), 100);
    await queues.enqueueForDevices([device], list, 100);
    expect(await stateOf(device, c)).toMatchObject({ whole: true, queued: 2, highestSeq: 2 });
  });
});
