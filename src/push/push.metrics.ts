import { Injectable } from '@nestjs/common';
import { Counter } from 'prom-client';

import type { Platform } from '../devices/devices.repository.js';
import { MetricsService } from '../metrics/metrics.service.js';

/** What became of a push try. */
export type PushOutcome = 'sent' | 'failed' | 'retried' | 'skipped';

/** Why a push was not sent: no address (any more), its provider off, acked, or online. */
export type PushSkip = 'no_token' | 'provider_off' | 'acked' | 'online';

/** Prometheus figures of push notifications, on the service's registry. */
@Injectable()
export class PushMetrics {
  private readonly pushes: Counter<'platform' | 'outcome' | 'reason'>;

  constructor(metrics: MetricsService) {
    this.pushes = new Counter({
      name: 'push_notifications_total',
      help:
        'Push tries by platform (ios, android, web; unknown before a device is read), outcome (sent, failed, ' +
        "retried, skipped) and reason (the provider's reason, or the skip cause)",
      labelNames: ['platform', 'outcome', 'reason'],
      registers: [metrics.registry],
    });
  }

  count(platform: Platform | 'unknown', outcome: PushOutcome, reason: string): void {
    this.pushes.inc({ platform, outcome, reason });
  }
}
