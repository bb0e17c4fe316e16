import { Injectable } from '@nestjs/common';

import type { DeviceRef } from '../devices/devices.types.js';
import { OfflineQueueService } from '../offline-queue/offline-queue.service.js';
import { MessageStore } from '../message-store/message-store.service.js';
import { RealtimeService } from '../realtime/realtime.service.js';
import type { PageData, ReceiptPayload } from '@messaging-service/client/protocol';
import { MessagingMetrics } from './messaging.metrics.js';
import { fitPage } from './page-budget.js';

/** A device's side of delivery: what it has not acked yet, and acking it. */
@Injectable()
export class DeliveryService {
  constructor(
    private readonly queue: OfflineQueueService,
    private readonly store: MessageStore,
    private readonly realtime: RealtimeService,
    private readonly metrics: MessagingMetrics,
  ) {}

  /** Makes the device's queue trustworthy (rebuilt if Redis lost it) and returns its length. */
  async prepare(device: DeviceRef, isNew: boolean): Promise<number> {
    // A new device receives what is sent from now on: cursors at the current seqs. Known
    // devices already have theirs (member additions create them for every device).
    if (isNew) await this.queue.startCursors(device);
    const length = await this.queue.syncedLength(device, isNew);
    this.metrics.queueDepth.observe(length);
    return length;
  }

  /**
   * The oldest `limit` queued messages, without removing them; fewer (and `hasMore`)
   * where more would weigh over `maxBytes` (see fitPage).
   */
  async unacked(device: DeviceRef, limit: number, maxBytes = Infinity): Promise<PageData> {
    const { refs, length } = await this.queue.peekSynced(device, limit);
    const { messages, missing, unreadable } = await this.store.openByIds(refs.map((ref) => ref.messageId));
    // Entries whose message is gone (conversation deleted) or cannot be opened (corrupted
    // at rest, logged) can never be delivered: drop them so the rest of the queue flows.
    const undeliverable = [...missing, ...unreadable];
    await this.queue.discard(device, undeliverable);
    const page = fitPage(messages, maxBytes, 'oldest');
    return { messages: page, hasMore: length - undeliverable.length > page.length };
  }

  /** Removes ids from this device's queue; tells each sender's devices they were delivered. */
  async ack(device: DeviceRef, messageIds: readonly string[]): Promise<{ acked: number }> {
    const { acked } = await this.queue.ack(device, [...new Set(messageIds)]);
    this.metrics.messagesAcked.inc(acked.length);
    const receipts = new Map<string, ReceiptPayload & { senderId: string; messageIds: string[] }>();
    for (const entry of acked) {
      const key = `${entry.senderId}\u0000${entry.conversationId}`;
      const receipt = receipts.get(key) ?? {
        senderId: entry.senderId,
        conversationId: entry.conversationId,
        userId: device.userId,
        status: 'delivered' as const,
        seq: 0,
        messageIds: [],
      };
      receipt.seq = Math.max(receipt.seq, entry.seq);
      receipt.messageIds.push(entry.messageId);
      receipts.set(key, receipt);
    }
    for (const { senderId, ...receipt } of receipts.values()) {
      if (senderId === device.userId) continue;
      this.realtime.emitReceipt([senderId], receipt);
    }
    return { acked: acked.length };
  }
}
