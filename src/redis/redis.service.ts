import { Injectable, Logger, type OnModuleDestroy } from '@nestjs/common';
import { Redis } from 'ioredis';

import { AppConfig } from '../config/app-config.js';

/**
 * The service's Redis connection. ioredis reconnects by itself after an outage; commands
 * issued while it is down fail fast (no unbounded offline buffering) so callers can answer
 * `unavailable` instead of hanging.
 */
@Injectable()
export class RedisService implements OnModuleDestroy {
  private readonly logger = new Logger(RedisService.name);
  readonly client: Redis;

  constructor(config: AppConfig) {
    this.client = new Redis(config.redisUrl, {
      maxRetriesPerRequest: 1,
      enableOfflineQueue: true,
      connectTimeout: 5_000,
      retryStrategy: (attempt) => Math.min(attempt * 100, 2_000),
      // No auto-pipelining: it gained ~10% on the bench, but when the connection drops
      // ioredis can reject its internal pipeline's commands unhandled.
    });
    this.client.on('error', (error: Error) => {
      this.logger.warn(`redis: ${error.message}`);
    });
  }

  /** A second connection for blocking or subscriber use (pub/sub, adapters, job queues). */
  duplicate(): Redis {
    return this.client.duplicate();
  }

  async onModuleDestroy(): Promise<void> {
    await this.client.quit().catch(() => this.client.disconnect());
  }
}
