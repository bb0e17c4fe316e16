import { Module } from '@nestjs/common';

import { DevicesModule } from '../devices/devices.module.js';
import { ConversationsRepository } from './conversations.repository.js';
import { ConversationsService } from './conversations.service.js';
import { MembershipService } from './membership.service.js';

@Module({
  imports: [DevicesModule],
  providers: [ConversationsRepository, ConversationsService, MembershipService],
  exports: [ConversationsService, MembershipService],
})
export class ConversationsModule {}
