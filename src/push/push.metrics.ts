import { Injectable } from '@nestjs/common';
import { Counter } from 'prom-client';

import { MetricsService } from '../health/metrics.service.js';

/** What became of a push try. */
export type PushOutcome = 'sent' | 'failed' | 'retried' | 'skipped';

/** Prometheus figures of push notifications, on the service's registry. */
@Injectable()
export class PushMetrics {
  private readonly pushes: Counter<'outcome' | 'reason'>;

  constructor(metrics: MetricsService) {
    this.pushes = new Counter({
      name: 'push_notifications_total',
      help: 'Push tries by outcome (sent, failed, retried, skipped) and reason (APNs reason or skip cause)',
      labelNames: ['outcome', 'reason'],
      registers: [metrics.registry],
    });
  }

  count(outcome: PushOutcome, reason: string): void {
    this.pushes.inc({ outcome, reason });
  }
}
