import { Module } from '@nestjs/common';

import { CursorWriter } from './cursor-writer.js';
import { DeliveryCursorsRepository } from './delivery-cursors.repository.js';
import { OfflineQueueMetrics } from './offline-queue.metrics.js';
import { OfflineQueueRepository } from './offline-queue.repository.js';
import { OfflineQueueService } from './offline-queue.service.js';
import { QueueSourceRepository } from './queue-source.repository.js';

/** Per-device queues in Redis and the delivery cursors in PostgreSQL they are rebuilt from. */
@Module({
  providers: [
    OfflineQueueRepository,
    QueueSourceRepository,
    DeliveryCursorsRepository,
    OfflineQueueService,
    OfflineQueueMetrics,
    CursorWriter,
  ],
  exports: [OfflineQueueService],
})
export class OfflineQueueModule {}
