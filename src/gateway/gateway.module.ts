import { Module } from '@nestjs/common';

import { DevicesModule } from '../devices/devices.module.js';
import { ConversationsModule } from '../conversations/conversations.module.js';
import { MessagesModule } from '../messages/messages.module.js';
import { PresenceModule } from '../presence/presence.module.js';
import { ConnectionCaps } from './connection-caps.service.js';
import { MessagingGateway } from './messaging.gateway.js';
import { RateLimitsService } from './rate-limits.service.js';
import { RequestDispatcher } from './request-dispatcher.js';
import { SessionService } from './session.service.js';
import { SlowConsumers } from './slow-consumers.service.js';

@Module({
  imports: [MessagesModule, DevicesModule, ConversationsModule, PresenceModule],
  providers: [MessagingGateway, SessionService, RequestDispatcher, RateLimitsService, ConnectionCaps, SlowConsumers],
})
export class GatewayModule {}
