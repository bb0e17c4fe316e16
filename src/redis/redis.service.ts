import { Injectable, Logger, type OnApplicationShutdown } from '@nestjs/common';
import { Cluster, Redis } from 'ioredis';

import { AppConfig } from '../config/app-config.js';
import { observeSubscribePromises } from '../platform/ioredis-subscribe-promises.js';
import { coalesceWrites } from '../platform/write-coalescing.js';
import { PubSubCensus } from './pubsub-census.js';
import { connectRedis, databaseOf, type RedisClient } from './redis-client.js';

/**
 * The service's Redis connection: one server, or a Redis Cluster (REDIS_MODE=cluster).
 * ioredis reconnects by itself after an outage; commands issued while it is down fail
 * fast (no unbounded offline buffering) so callers can answer `unavailable` instead of
 * hanging.
 *
 * Pub/sub works the same in both modes: `client.publish(channel, text)`, and on a
 * `duplicate()`, `subscribe(channel)` and `on('message', ...)`. In a cluster a classic
 * PUBLISH reaches every node's subscribers; name channels with `channelDb` (0 in a
 * cluster), not `client.options`, which a Cluster lacks.
 */
@Injectable()
export class RedisService implements OnApplicationShutdown {
  private readonly logger = new Logger(RedisService.name);
  readonly client: RedisClient;
  readonly mode: 'single' | 'cluster';
  /** Subscribers per channel over every server (see PubSubCensus). */
  readonly census: PubSubCensus;

  constructor(config: AppConfig) {
    this.mode = config.redisMode === 'cluster' ? 'cluster' : 'single';
    this.client = connectRedis(config, {
      maxRetriesPerRequest: 1,
      enableOfflineQueue: true,
      connectTimeout: 5_000,
      retryStrategy: (attempt) => Math.min(attempt * 100, 2_000),
      // No auto-pipelining: it gained ~10% on the bench, but when the connection drops
      // ioredis can reject its internal pipeline's commands unhandled.
    });
    this.census = new PubSubCensus(this.client);
    const client = this.client;
    if (client instanceof Redis) client.on('connect', () => coalesceWrites(client.stream));
    this.client.on('error', (error: Error) => {
      this.logger.warn(`redis: ${error.message}`);
    });
  }

  /** The logical database, for naming channels per database (a cluster has 0 only). */
  get channelDb(): number {
    return databaseOf(this.client);
  }

  /** A second connection for blocking or subscriber use (pub/sub, adapters, job queues). */
  duplicate(): RedisClient {
    // A Cluster's subscriber re-subscribes on its own node connection and handles the
    // outcome itself (ClusterSubscriber); only a plain connection drops the promises.
    return this.client instanceof Cluster ? this.client.duplicate() : observeSubscribePromises(this.client.duplicate());
  }

  /** After the drain and the servers (see PrismaService): nothing in flight still needs it. */
  async onApplicationShutdown(): Promise<void> {
    this.census.close();
    await this.client.quit().catch(() => this.client.disconnect());
  }
}
