import { Injectable, Logger, type OnApplicationShutdown, type OnModuleInit } from '@nestjs/common';
import { cacheChannelOf } from './channels.js';
import { InstanceTopology } from './instance-topology.service.js';
import type { RedisClient } from './redis-client.js';
import { RedisService } from './redis.service.js';

type Handler = (key: string) => void;

/**
 * Cache invalidation across instances over Redis pub/sub. `invalidate` runs the local
 * handlers at once and tells every other instance, whose handlers run on receipt.
 * Caches using it also keep a short TTL, the bound if a message is ever missed.
 *
 * In a Redis Cluster the same works: a classic PUBLISH reaches the subscribers on every
 * node, and the Cluster client's subscriber follows the nodes as they change.
 *
 * While this is the only instance (InstanceTopology.alone), invalidations stay local:
 * nobody else would receive them. A new instance subscribes here before it announces
 * itself (module init comes before bootstrap), and so before it listens or caches.
 */
@Injectable()
export class CacheBus implements OnModuleInit, OnApplicationShutdown {
  private readonly logger = new Logger(CacheBus.name);
  private readonly handlers = new Map<string, Handler[]>();
  private subscriber?: RedisClient;
  private readonly channel: string;

  constructor(
    private readonly redis: RedisService,
    private readonly topology: InstanceTopology,
  ) {
    this.channel = cacheChannelOf(redis.channelDb);
  }

  async onModuleInit(): Promise<void> {
    const subscriber = (this.subscriber = this.redis.duplicate());
    subscriber.on('error', () => undefined);
    subscriber.on('message', (_channel: string, raw: string) => this.dispatch(raw));
    await subscriber.subscribe(this.channel).catch((error: unknown) => {
      this.logger.warn(`cache invalidation channel unavailable for now: ${String(error)}`);
    });
  }

  async onApplicationShutdown(): Promise<void> {
    await this.subscriber?.quit().catch(() => this.subscriber?.disconnect());
  }

  on(topic: string, handler: Handler): void {
    this.handlers.set(topic, [...(this.handlers.get(topic) ?? []), handler]);
  }

  invalidate(topic: string, key: string): void {
    this.run(topic, key);
    if (this.topology.alone) return;
    this.redis.client.publish(this.channel, JSON.stringify([topic, key])).catch((error: unknown) => {
      this.logger.warn(`could not publish a cache invalidation: ${String(error)}`);
    });
  }

  private dispatch(raw: string): void {
    try {
      const [topic, key] = JSON.parse(raw) as [string, string];
      this.run(topic, key);
    } catch {
      this.logger.warn('ignored a malformed cache invalidation');
    }
  }

  private run(topic: string, key: string): void {
    for (const handler of this.handlers.get(topic) ?? []) handler(key);
  }
}
