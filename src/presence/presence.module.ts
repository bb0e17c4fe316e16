import { Module } from '@nestjs/common';

import { ConversationsModule } from '../conversations/conversations.module.js';
import { MembershipRepository } from '../conversations/membership.repository.js';
import { OfflineQueueModule } from '../offline-queue/offline-queue.module.js';
import { ConversationStreamsService } from './conversation-streams.service.js';
import { PresenceRepository } from './presence.repository.js';
import { PresenceService } from './presence.service.js';
import { TypingService } from './typing.service.js';

@Module({
  imports: [ConversationsModule, OfflineQueueModule],
  providers: [PresenceRepository, PresenceService, TypingService, MembershipRepository, ConversationStreamsService],
  exports: [PresenceService, TypingService, ConversationStreamsService],
})
export class PresenceModule {}
