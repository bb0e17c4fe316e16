import { Injectable } from '@nestjs/common';
import { Counter, Gauge, Histogram } from 'prom-client';

import { MetricsService } from '../metrics/metrics.service.js';

/** Prometheus figures of the message path, on the service's registry. */
@Injectable()
export class MessagingMetrics {
  readonly messagesStored: Counter;
  readonly messagesDelivered: Counter;
  readonly messagesAcked: Counter;
  readonly queueDepth: Histogram;
  readonly connections: Gauge;
  readonly slowConsumerDisconnects: Counter;
  readonly requestDuration: Histogram<'event' | 'outcome'>;
  readonly liveReordered: Counter<'event'>;

  constructor(metrics: MetricsService) {
    const registers = [metrics.registry];
    this.messagesStored = new Counter({ name: 'messages_stored_total', help: 'Messages stored durably', registers });
    this.messagesDelivered = new Counter({
      name: 'messages_delivered_total',
      help: 'Message deliveries queued for recipient devices (live and offline)',
      registers,
    });
    this.messagesAcked = new Counter({ name: 'messages_acked_total', help: 'Messages acked by devices', registers });
    this.queueDepth = new Histogram({
      name: 'offline_queue_depth',
      help: 'Offline-queue length of devices, observed when they connect',
      buckets: [0, 1, 10, 100, 1_000, 10_000, 100_000],
      registers,
    });
    this.connections = new Gauge({ name: 'socket_connections', help: 'Connected Socket.IO clients', registers });
    this.slowConsumerDisconnects = new Counter({
      name: 'socket_slow_consumer_disconnects_total',
      help: 'Sockets disconnected for holding more than SOCKET_SEND_BUFFER_BYTES unsent (clients that stopped reading)',
      registers,
    });
    this.requestDuration = new Histogram({
      name: 'socket_request_duration_seconds',
      help: 'Socket.IO request latency by event and outcome (ok or error code)',
      labelNames: ['event', 'outcome'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers,
    });
    this.liveReordered = new Counter({
      name: 'live_messages_reordered_total',
      help:
        'Live messages put back into seq order across instances: held (waited for an earlier seq), ' +
        'filled (read back from PostgreSQL for a lost or slow publish), skipped (a gap storage did not give), ' +
        'late (arrived after it was filled or skipped; dropped)',
      labelNames: ['event'],
      registers,
    });
  }
}
