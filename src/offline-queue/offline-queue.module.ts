import { Module } from '@nestjs/common';

import { DevicesModule } from '../devices/devices.module.js';
import { CursorWriter } from './cursor-writer.js';
import { OfflineQueueMetrics } from './offline-queue.metrics.js';
import { OfflineQueueRepository } from './offline-queue.repository.js';
import { OfflineQueueService } from './offline-queue.service.js';
import { QueueSourceRepository } from './queue-source.repository.js';

@Module({
  imports: [DevicesModule],
  providers: [OfflineQueueRepository, QueueSourceRepository, OfflineQueueService, OfflineQueueMetrics, CursorWriter],
  exports: [OfflineQueueService],
})
export class OfflineQueueModule {}
