import { Module } from '@nestjs/common';

import { ConversationsModule } from '../conversations/conversations.module.js';
import { DevicesModule } from '../devices/devices.module.js';
import { MessageStoreModule } from '../message-store/message-store.module.js';
import { OfflineQueueModule } from '../offline-queue/offline-queue.module.js';
import { PushModule } from '../push/push.module.js';
import { DeliveryService } from './delivery.service.js';
import { E2eRecipients } from './e2e-recipients.service.js';
import { LiveStream } from './live-stream.service.js';
import { MessageFanout } from './message-fanout.service.js';
import { MessagesController } from './messages.controller.js';
import { MessagesService } from './messages.service.js';
import { MessagingMetrics } from './messaging.metrics.js';

@Module({
  imports: [ConversationsModule, DevicesModule, MessageStoreModule, OfflineQueueModule, PushModule],
  controllers: [MessagesController],
  providers: [MessagesService, MessageFanout, LiveStream, DeliveryService, E2eRecipients, MessagingMetrics],
  exports: [MessagesService, DeliveryService, MessagingMetrics],
})
export class MessagesModule {}
