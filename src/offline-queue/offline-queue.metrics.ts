import { Injectable } from '@nestjs/common';
import { Counter } from 'prom-client';

import { MetricsService } from '../metrics/metrics.service.js';

/** Prometheus figures of the offline queue, on the service's registry. */
@Injectable()
export class OfflineQueueMetrics {
  /** Queues rebuilt from PostgreSQL: `epoch` after Redis lost everything, `partial` after it lost some. */
  readonly repairs: Counter<'cause'>;

  constructor(metrics: MetricsService) {
    this.repairs = new Counter({
      name: 'offline_queue_repairs_total',
      help: 'Device queues rebuilt from PostgreSQL, by cause (epoch: Redis lost everything; partial: it lost some)',
      labelNames: ['cause'],
      registers: [metrics.registry],
    });
  }
}
