import { Injectable, Logger } from '@nestjs/common';

import { MembershipService } from '../conversations/membership.service.js';
import { DevicesRepository } from '../devices/devices.repository.js';
import { MessagingMetrics } from './messaging.metrics.js';
import { OfflineQueueService } from '../offline-queue/offline-queue.service.js';
import { RealtimeService } from '../realtime/realtime.service.js';
import type { WireMessage } from '../realtime/realtime.types.js';
import type { Sender } from './messages.service.js';

/**
 * The one step after a message is committed: queue it for every recipient device (every
 * device of every member but the sending one), then deliver it live. Queue first, so an
 * ack that races the live emit always finds the entry to remove.
 */
@Injectable()
export class MessageFanout {
  private readonly logger = new Logger(MessageFanout.name);

  constructor(
    private readonly membership: MembershipService,
    private readonly devices: DevicesRepository,
    private readonly queue: OfflineQueueService,
    private readonly realtime: RealtimeService,
    private readonly metrics: MessagingMetrics,
  ) {}

  async afterCommit(message: WireMessage, sender: Sender): Promise<void> {
    const memberIds = await this.membership.memberIds(message.conversationId);
    const recipients = (await this.devices.devicesOf(memberIds)).filter(
      (device) => !(device.userId === sender.userId && device.deviceId === sender.deviceId),
    );
    try {
      await this.queue.enqueue(recipients, [
        {
          messageId: message.id,
          conversationId: message.conversationId,
          seq: message.seq,
          senderId: message.senderId,
          score: Date.parse(message.createdAt),
        },
      ]);
    } catch (error) {
      // The message is stored; PostgreSQL still holds it past each device's cursor.
      // Forget the queues' epoch so every device rebuilds from PostgreSQL on next sync.
      this.logger.error(`offline enqueue failed, queues will be rebuilt: ${String(error)}`);
      this.queue.invalidateAll();
    }
    this.realtime.emitMessage(memberIds, message, sender.socketId);
    this.metrics.messagesStored.inc();
    this.metrics.messagesDelivered.inc(recipients.length);
  }
}
