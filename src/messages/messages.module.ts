import { Module } from '@nestjs/common';

import { ConversationsModule } from '../conversations/conversations.module.js';
import { DevicesModule } from '../devices/devices.module.js';
import { OfflineQueueModule } from '../offline-queue/offline-queue.module.js';
import { PushModule } from '../push/push.module.js';
import { DeliveryService } from './delivery.service.js';
import { E2eRecipients } from './e2e-recipients.service.js';
import { MessageFanout } from './message-fanout.service.js';
import { MessageCodec } from './message.codec.js';
import { MessagesController } from './messages.controller.js';
import { MessagesRepository } from './messages.repository.js';
import { MessagesService } from './messages.service.js';
import { MessagingMetrics } from './messaging.metrics.js';
import { OrderedEmitter } from './ordered-emitter.js';
import { SendBatcher } from './send-batcher.js';

@Module({
  imports: [ConversationsModule, DevicesModule, OfflineQueueModule, PushModule],
  controllers: [MessagesController],
  providers: [
    MessagesRepository,
    MessageCodec,
    MessagesService,
    MessageFanout,
    DeliveryService,
    E2eRecipients,
    MessagingMetrics,
    OrderedEmitter,
    SendBatcher,
  ],
  exports: [MessagesService, DeliveryService, MessagingMetrics, OrderedEmitter],
})
export class MessagesModule {}
