import { describe, expect, it } from 'vitest';

import type { AppConfig } from '../config/app-config.js';
import type { DeviceRef } from '../devices/devices.types.js';
import type { CursorWriter } from './cursor-writer.js';
import type { DeliveryCursorsRepository } from './delivery-cursors.repository.js';
import type { OfflineQueueMetrics } from './offline-queue.metrics.js';
import type { OfflineQueueRepository } from './offline-queue.repository.js';
import { OfflineQueueService } from './offline-queue.service.js';
import type { PendingEntry } from './offline-queue.types.js';
import type { QueueSourceRepository } from './queue-source.repository.js';

/** The Redis side's one write, recorded per call; `fail` makes the next call reject. */
class RecordedQueues {
  readonly calls: { recipients: DeviceRef[]; entries: PendingEntry[] }[] = [];
  fail = false;

  enqueueForDevices(recipients: readonly DeviceRef[], entries: readonly PendingEntry[]) {
    this.calls.push({ recipients: [...recipients], entries: [...entries] });
    if (this.fail) {
      this.fail = false;
      return Promise.reject(new Error('READONLY'));
    }
    return Promise.resolve(new Map());
  }
}

function service() {
  const queues = new RecordedQueues();
  const queue = new OfflineQueueService(
    queues as unknown as OfflineQueueRepository,
    {} as QueueSourceRepository,
    {} as DeliveryCursorsRepository,
    {} as CursorWriter,
    {} as OfflineQueueMetrics,
    { offlineQueueMax: 50_000 } as AppConfig,
  );
  return { queues, queue };
}

const bob = [
  { userId: 'bob', deviceId: 'phone' },
  { userId: 'bob', deviceId: 'laptop' },
];
const entry = (seq: number, conversationId = 'c'): PendingEntry => ({
  messageId: `m${seq}`,
  conversationId,
  seq,
  senderId: 'alice',
  score: seq,
});

describe('OfflineQueueService.enqueueMessage grouping', () => {
  it('writes the messages of one tick for the same recipients in one call, in order', async () => {
    const { queues, queue } = service();
    await Promise.all([1, 2, 3].map((seq) => queue.enqueueMessage('c\nalice\nweb', bob, entry(seq))));
    expect(queues.calls).toHaveLength(1);
    expect(queues.calls[0].entries.map((e) => e.seq)).toEqual([1, 2, 3]);
  });

  it('writes nothing until the tick ends, then one call per recipient group', async () => {
    const { queues, queue } = service();
    const sends = [
      queue.enqueueMessage('c\nalice\nweb', bob, entry(1)),
      queue.enqueueMessage('d\nalice\nweb', [bob[0]], entry(1, 'd')),
    ];
    expect(queues.calls).toEqual([]);
    await Promise.all(sends);
    expect(queues.calls.map((call) => call.entries.map((e) => `${e.conversationId}${e.seq}`))).toEqual([
      ['c1'],
      ['d1'],
    ]);
  });

  it('starts a group of its own when the recipients changed within the tick (a member joined)', async () => {
    const { queues, queue } = service();
    const carol = { userId: 'carol', deviceId: 'tablet' };
    await Promise.all([
      queue.enqueueMessage('c\nalice\nweb', bob, entry(1)),
      queue.enqueueMessage('c\nalice\nweb', [...bob, carol], entry(2)),
      queue.enqueueMessage('c\nalice\nweb', [...bob, carol], entry(3)),
    ]);
    expect(queues.calls.map((call) => [call.recipients.length, call.entries.map((e) => e.seq)])).toEqual([
      [2, [1]],
      [3, [2, 3]],
    ]);
  });

  it('writes the next tick separately', async () => {
    const { queues, queue } = service();
    await queue.enqueueMessage('c\nalice\nweb', bob, entry(1));
    await queue.enqueueMessage('c\nalice\nweb', bob, entry(2));
    expect(queues.calls).toHaveLength(2);
  });

  it('rejects every message of a group whose write failed, and only those', async () => {
    const { queues, queue } = service();
    queues.fail = true;
    const results = await Promise.allSettled([
      queue.enqueueMessage('c\nalice\nweb', bob, entry(1)),
      queue.enqueueMessage('c\nalice\nweb', bob, entry(2)),
      queue.enqueueMessage('d\nalice\nweb', bob, entry(1, 'd')),
    ]);
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected', 'fulfilled']);
  });

  it('queues nothing for a message without recipients', async () => {
    const { queues, queue } = service();
    await queue.enqueueMessage('c\nalice\nweb', [], entry(1));
    expect(queues.calls).toEqual([]);
  });
});
