import { randomUUID } from 'node:crypto';

import {
  Injectable,
  Logger,
  type OnApplicationBootstrap,
  type OnApplicationShutdown,
  type OnModuleInit,
} from '@nestjs/common';
import type { Redis } from 'ioredis';

import { RedisService } from './redis.service.js';

/** Per Redis database: deployments sharing a Redis server on different databases stay apart. */
const channelOf = (db: number) => `cache:invalidate:${db}`;
const TOPOLOGY_REFRESH_MS = 2_000;

type Handler = (key: string) => void;

/**
 * Cache invalidation across instances over Redis pub/sub. `invalidate` runs the local
 * handlers at once and tells every other instance, whose handlers run on receipt.
 * Caches using it also keep a short TTL, the bound if a message is ever missed.
 *
 * It also knows whether this is the only instance (`alone`): every instance subscribes
 * to the channel, so its subscriber count is the instance count. Alone, nothing needs to
 * cross Redis: invalidations stay local, and so do Socket.IO broadcasts (AppIoAdapter).
 * An instance announces itself as it boots, before it listens, and waits for its own
 * echo, so the others stop taking the shortcut before any client can reach it; a
 * periodic count notices instances that went away. When unsure (Redis down), not alone.
 */
@Injectable()
export class CacheBus implements OnModuleInit, OnApplicationBootstrap, OnApplicationShutdown {
  private readonly logger = new Logger(CacheBus.name);
  private readonly handlers = new Map<string, Handler[]>();
  private readonly echoes = new Map<string, () => void>();
  private subscriber?: Redis;
  private readonly channel: string;
  private aloneNow = false;
  private topologyGeneration = 0;
  private timer?: NodeJS.Timeout;

  constructor(private readonly redis: RedisService) {
    this.channel = channelOf(redis.client.options.db ?? 0);
    this.on('topology', () => {
      this.topologyGeneration += 1;
      this.aloneNow = false;
    });
  }

  get alone(): boolean {
    return this.aloneNow;
  }

  async onModuleInit(): Promise<void> {
    this.subscriber = this.redis.duplicate();
    this.subscriber.on('error', () => undefined);
    this.subscriber.on('message', (_channel: string, raw: string) => this.dispatch(raw));
    await this.subscriber.subscribe(this.channel).catch((error: unknown) => {
      this.logger.warn(`cache invalidation channel unavailable for now: ${String(error)}`);
    });
  }

  async onApplicationBootstrap(): Promise<void> {
    await this.invalidateAndConfirm('topology', 'joined');
    void this.countInstances();
    this.timer = setInterval(() => void this.countInstances(), TOPOLOGY_REFRESH_MS);
    this.timer.unref();
  }

  async onApplicationShutdown(): Promise<void> {
    clearInterval(this.timer);
    await this.subscriber?.quit().catch(() => this.subscriber?.disconnect());
  }

  on(topic: string, handler: Handler): void {
    this.handlers.set(topic, [...(this.handlers.get(topic) ?? []), handler]);
  }

  invalidate(topic: string, key: string): void {
    this.run(topic, key);
    if (this.aloneNow) return;
    this.redis.client.publish(this.channel, JSON.stringify([topic, key])).catch((error: unknown) => {
      this.logger.warn(`could not publish a cache invalidation: ${String(error)}`);
    });
  }

  /**
   * As `invalidate`, and resolves once the message came back through Redis to this
   * instance: Redis has then written it to every subscriber (or after `timeoutMs`).
   */
  async invalidateAndConfirm(topic: string, key: string, timeoutMs = 1_000): Promise<void> {
    const nonce = randomUUID();
    const echoed = new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.echoes.delete(nonce);
        resolve();
      }, timeoutMs);
      timer.unref();
      this.echoes.set(nonce, () => {
        clearTimeout(timer);
        resolve();
      });
    });
    this.run(topic, key);
    this.redis.client.publish(this.channel, JSON.stringify([topic, key, nonce])).catch((error: unknown) => {
      this.logger.warn(`could not publish a cache invalidation: ${String(error)}`);
    });
    await echoed;
  }

  private async countInstances(): Promise<void> {
    const generation = this.topologyGeneration;
    let alone: boolean;
    try {
      const reply = (await this.redis.client.pubsub('NUMSUB', this.channel)) as [string, number | string];
      alone = Number(reply[1]) <= 1;
    } catch {
      alone = false;
    }
    // An instance that announced itself meanwhile wins over a count taken before it.
    if (generation === this.topologyGeneration) this.aloneNow = alone;
  }

  private dispatch(raw: string): void {
    try {
      const [topic, key, nonce] = JSON.parse(raw) as [string, string, string?];
      if (nonce !== undefined) {
        const echo = this.echoes.get(nonce);
        if (echo) {
          this.echoes.delete(nonce);
          echo();
          return;
        }
      }
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
