import { Injectable, Logger } from '@nestjs/common';

import { MembershipService } from '../conversations/membership.service.js';
import { DeviceDirectory } from '../devices/device-directory.service.js';
import { MessagingMetrics } from './messaging.metrics.js';
import { OfflineQueueService } from '../offline-queue/offline-queue.service.js';
import { PushService } from '../push/push.service.js';
import { LiveStream } from './live-stream.service.js';
import type { WireMessage } from '@messaging-service/client/protocol';
import type { DeviceRef } from '../devices/devices.types.js';
import type { Sender } from './messages.types.js';

/**
 * The one step after a message is committed: queue it for every recipient device (every
 * device of every member but the sending one), deliver it live, and hand it to push
 * (which schedules APNs pushes for iOS devices that stay offline).
 *
 * The queue write goes out in the same tick as the live emit (at its end, together with
 * the other messages of the same group commit) and its reply is not awaited first:
 * commands on the one Redis connection run in the order they were written, and a
 * recipient's `ack` can only be read in a later tick, so it always runs after the
 * entry was added. Awaiting the reply first would add a Redis round trip to every
 * delivery. Should the write fail (Redis down), queues are rebuilt from PostgreSQL;
 * should an ack ever overtake it (the script had to be reloaded, or the recipient is on
 * another instance and Redis reorders across connections), the message is delivered
 * again by `get-unacked`: a duplicate the client drops by id, never a loss.
 */
@Injectable()
export class MessageFanout {
  private readonly logger = new Logger(MessageFanout.name);

  constructor(
    private readonly membership: MembershipService,
    private readonly directory: DeviceDirectory,
    private readonly queue: OfflineQueueService,
    private readonly live: LiveStream,
    private readonly metrics: MessagingMetrics,
    private readonly push: PushService,
  ) {}

  /**
   * Never throws: the message is already stored, so the sender's reply stands. If the
   * fan-out fails half-way, every queue is marked for a rebuild from PostgreSQL, which
   * holds the message past each recipient device's cursor. Resolves once the queue write
   * is issued and the message handed to live delivery (LiveStream, which keeps seq
   * order across instances; `previousAt` is the store's), not when Redis answers. A
   * message whose fan-out failed is not published: receivers read it back from
   * PostgreSQL once a later one arrives, and its recipients' queues are rebuilt.
   */
  async afterCommit(message: WireMessage, sender: Sender, previousAt: number): Promise<void> {
    this.metrics.messagesStored.inc();
    let memberIds: string[];
    let recipients: DeviceRef[];
    try {
      memberIds = await this.membership.memberIds(message.conversationId);
      recipients = (await this.directory.devicesOf(memberIds)).filter(
        (device) => !(device.userId === sender.userId && device.deviceId === sender.deviceId),
      );
    } catch (error) {
      this.failed(error);
      return;
    }
    const queued = this.queue.enqueueMessage(
      `${message.conversationId}\n${sender.userId}\n${sender.deviceId}`,
      recipients,
      {
        messageId: message.id,
        conversationId: message.conversationId,
        seq: message.seq,
        senderId: message.senderId,
        score: Date.parse(message.createdAt),
      },
    );
    this.live.publish(message, memberIds, previousAt);
    // The sender's reply does not wait for Redis either (the message is committed; a
    // failed queue write is repaired from PostgreSQL): push and metrics follow the write.
    queued.then(
      () => {
        this.push.messageQueued(message, recipients);
        this.metrics.messagesDelivered.inc(recipients.length);
      },
      (error: unknown) => this.failed(error),
    );
  }

  private failed(error: unknown): void {
    this.logger.error(`fan-out failed after commit; offline queues will be rebuilt: ${String(error)}`);
    this.queue.invalidateAll();
  }
}
