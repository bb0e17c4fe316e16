import { describe, expect, it } from 'vitest';

import type { AppConfig } from '../config/app-config.js';
import type { DeviceRef } from '../devices/devices.types.js';
import type { CursorWriter } from './cursor-writer.js';
import type { DeliveryCursorsRepository } from './delivery-cursors.repository.js';
import type { OfflineQueueMetrics } from './offline-queue.metrics.js';
import type { AckResult, OfflineQueueRepository } from './offline-queue.repository.js';
import { OfflineQueueService } from './offline-queue.service.js';
import type { PendingEntry } from './offline-queue.types.js';
import type { QueueSourceRepository } from './queue-source.repository.js';

/**
 * The Redis side's writes, recorded per call; `fail` makes the next call reject. Its ack
 * holds a queue of entries (m<seq> in conversation c, or as `stored` says) and removes
 * each id once, as ack.lua does; the cursor it reports is the highest seq acked.
 */
class RecordedQueues {
  readonly calls: { recipients: DeviceRef[]; entries: PendingEntry[] }[] = [];
  readonly acks: { device: DeviceRef; messageIds: string[] }[] = [];
  readonly stored = new Map(['m1', 'm2', 'm3', 'm4', 'd1'].map((id) => [id, id.startsWith('d') ? 'd' : 'c']));
  fail = false;

  ack(device: DeviceRef, messageIds: readonly string[]): Promise<AckResult> {
    this.acks.push({ device, messageIds: [...messageIds] });
    if (this.fail) {
      this.fail = false;
      return Promise.reject(new Error('READONLY'));
    }
    const acked: AckResult['acked'] = [];
    for (const messageId of messageIds) {
      const conversationId = this.stored.get(messageId);
      if (conversationId === undefined) continue;
      this.stored.delete(messageId);
      acked.push({ messageId, conversationId, seq: Number(messageId.slice(1)), senderId: 'alice' });
    }
    const cursors = new Map<string, number>();
    for (const e of acked) cursors.set(e.conversationId, Math.max(cursors.get(e.conversationId) ?? 0, e.seq));
    return Promise.resolve({
      acked,
      cursors: [...cursors].map(([conversationId, ackedSeq]) => ({ conversationId, ackedSeq })),
    });
  }

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
  const advanced: { deviceId: string; cursors: { conversationId: string; ackedSeq: number }[] }[] = [];
  const cursors = {
    advance: (_userId: string, deviceId: string, moved: { conversationId: string; ackedSeq: number }[]) =>
      advanced.push({ deviceId, cursors: [...moved] }),
  };
  const queue = new OfflineQueueService(
    queues as unknown as OfflineQueueRepository,
    {} as QueueSourceRepository,
    {} as DeliveryCursorsRepository,
    cursors as unknown as CursorWriter,
    {} as OfflineQueueMetrics,
    { offlineQueueMax: 50_000 } as AppConfig,
  );
  return { queues, queue, advanced };
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

describe('OfflineQueueService.ack grouping', () => {
  const phone = bob[0];
  const laptop = bob[1];

  it("writes one device's acks of one tick in one call, and answers each ack with what it removed", async () => {
    const { queues, queue, advanced } = service();
    const answers = await Promise.all([
      queue.ack(phone, ['m1']),
      queue.ack(phone, ['m2', 'd1']),
      queue.ack(phone, ['m3']),
    ]);
    expect(queues.acks).toEqual([{ device: phone, messageIds: ['m1', 'm2', 'd1', 'm3'] }]);
    expect(answers.map((a) => a.acked.map((e) => e.messageId))).toEqual([['m1'], ['m2', 'd1'], ['m3']]);
    // Each answer's cursors are those of the conversations it touched; all of them move once.
    expect(answers.map((a) => a.cursors.map((c) => c.conversationId).sort())).toEqual([['c'], ['c', 'd'], ['c']]);
    expect(advanced).toEqual([
      {
        deviceId: 'phone',
        cursors: [
          { conversationId: 'c', ackedSeq: 3 },
          { conversationId: 'd', ackedSeq: 1 },
        ],
      },
    ]);
  });

  it('counts an id two acks of the tick name for the first only, as two writes would', async () => {
    const { queue } = service();
    const [first, second] = await Promise.all([queue.ack(phone, ['m1', 'm2']), queue.ack(phone, ['m2', 'm9'])]);
    expect(first.acked.map((e) => e.messageId)).toEqual(['m1', 'm2']);
    expect(second).toEqual({ acked: [], cursors: [] });
  });

  it('writes each device separately, and the next tick separately', async () => {
    const { queues, queue } = service();
    await Promise.all([queue.ack(phone, ['m1']), queue.ack(laptop, ['m2'])]);
    await queue.ack(phone, ['m3']);
    expect(queues.acks.map((a) => [a.device.deviceId, a.messageIds])).toEqual([
      ['phone', ['m1']],
      ['laptop', ['m2']],
      ['phone', ['m3']],
    ]);
  });

  it('splits a tick past 1,000 ids into further calls', async () => {
    const { queues, queue } = service();
    const ids = (from: number) => Array.from({ length: 400 }, (_, i) => `x${from + i}`);
    await Promise.all([queue.ack(phone, ids(0)), queue.ack(phone, ids(400)), queue.ack(phone, ids(800))]);
    expect(queues.acks.map((a) => a.messageIds.length)).toEqual([800, 400]);
  });

  it('rejects every ack of a device whose write failed, and moves no cursor', async () => {
    const { queues, queue, advanced } = service();
    queues.fail = true;
    const results = await Promise.allSettled([
      queue.ack(phone, ['m1']),
      queue.ack(phone, ['m2']),
      queue.ack(laptop, ['m3']),
    ]);
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected', 'fulfilled']);
    expect(advanced.map((a) => a.deviceId)).toEqual(['laptop']);
  });
});
