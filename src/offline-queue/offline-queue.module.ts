import { Module } from '@nestjs/common';

import { DevicesModule } from '../devices/devices.module.js';
import { CursorWriter } from './cursor-writer.js';
import { OfflineQueueRepository } from './offline-queue.repository.js';
import { OfflineQueueService } from './offline-queue.service.js';

@Module({
  imports: [DevicesModule],
  providers: [OfflineQueueRepository, OfflineQueueService, CursorWriter],
  exports: [OfflineQueueService],
})
export class OfflineQueueModule {}
