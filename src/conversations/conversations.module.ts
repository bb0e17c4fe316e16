import { Module } from '@nestjs/common';

import { DevicesModule } from '../devices/devices.module.js';
import { OfflineQueueModule } from '../offline-queue/offline-queue.module.js';
import { ConversationsController } from './conversations.controller.js';
import { ConversationsRepository } from './conversations.repository.js';
import { ConversationsService } from './conversations.service.js';
import { MembersController } from './members.controller.js';
import { MembersService } from './members.service.js';
import { MembershipService } from './membership.service.js';
import { ReadMarksService } from './read-marks.service.js';

@Module({
  imports: [DevicesModule, OfflineQueueModule],
  controllers: [ConversationsController, MembersController],
  providers: [ConversationsRepository, ConversationsService, MembershipService, MembersService, ReadMarksService],
  exports: [ConversationsService, MembershipService, MembersService, ReadMarksService],
})
export class ConversationsModule {}
