import { Injectable, Logger, type OnApplicationShutdown, type OnModuleInit } from '@nestjs/common';
import type { Redis } from 'ioredis';

import { InstanceTopology } from './instance-topology.service.js';
import { RedisService } from './redis.service.js';

/** Per Redis database: deployments sharing a Redis server on different databases stay apart. */
const channelOf = (db: number) => `cache:invalidate:${db}`;

type Handler = (key: string) => void;

/**
 * Cache invalidation across instances over Redis pub/sub. `invalidate` runs the local
 * handlers at once and tells every other instance, whose handlers run on receipt.
 * Caches using it also keep a short TTL, the bound if a message is ever missed.
 *
 * While this is the only instance (InstanceTopology.alone), invalidations stay local:
 * nobody else would receive them. A new instance subscribes here before it announces
 * itself (module init comes before bootstrap), and so before it listens or caches.
 */
@Injectable()
export class CacheBus implements OnModuleInit, OnApplicationShutdown {
  private readonly logger = new Logger(CacheBus.name);
  private readonly handlers = new Map<string, Handler[]>();
  private subscriber?: Redis;
  private readonly channel: string;

  constructor(
    private readonly redis: RedisService,
    private readonly topology: InstanceTopology,
  ) {
    this.channel = channelOf(redis.client.options.db ?? 0);
  }

  /** InstanceTopology.alone, for SessionService, which still asks here. */
  get alone(): boolean {
    return this.topology.alone;
  }

  async onModuleInit(): Promise<void> {
    this.subscriber = this.redis.duplicate();
    this.subscriber.on('error', () => undefined);
    this.subscriber.on('message', (_channel: string, raw: string) => this.dispatch(raw));
    await this.subscriber.subscribe(this.channel).catch((error: unknown) => {
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

/**
 * A small TTL cache keyed by string, bounded in size (oldest entries go first). Loads
 * race invalidations, so a value is stored only if nothing was invalidated since the
 * load began (`version` taken before the load, passed to `set`).
 */
export class TtlCache<V> {
  private readonly entries = new Map<string, { value: V; expiresAt: number }>();
  private invalidations = 0;

  constructor(
    private readonly ttlMs: number,
    private readonly maxEntries = 50_000,
  ) {}

  get(key: string): V | undefined {
    const entry = this.entries.get(key);
    if (!entry) return undefined;
    if (entry.expiresAt <= Date.now()) {
      this.entries.delete(key);
      return undefined;
    }
    return entry.value;
  }

  /** Take before loading; pass to `set`. */
  get version(): number {
    return this.invalidations;
  }

  set(key: string, value: V, version: number): void {
    if (version !== this.invalidations) return;
    if (this.entries.size >= this.maxEntries) {
      const oldest = this.entries.keys().next();
      if (!oldest.done) this.entries.delete(oldest.value);
    }
    this.entries.set(key, { value, expiresAt: Date.now() + this.ttlMs });
  }

  delete(key: string): void {
    this.invalidations += 1;
    this.entries.delete(key);
  }

  /** Deletes every key starting with `prefix`. */
  deletePrefix(prefix: string): void {
    this.invalidations += 1;
    for (const key of this.entries.keys()) if (key.startsWith(prefix)) this.entries.delete(key);
  }
}
