import { randomUUID } from 'node:crypto';

import {
  Injectable,
  Logger,
  type OnApplicationBootstrap,
  type OnApplicationShutdown,
  type OnModuleInit,
} from '@nestjs/common';
import { cacheChannelOf, instancesChannelOf } from './channels.js';
import type { RedisClient } from './redis-client.js';
import { RedisService } from './redis.service.js';

const REFRESH_MS = 2_000;
const ANNOUNCE_TIMEOUT_MS = 1_000;

/**
 * Whether this is the only instance of the service (`alone`). Alone, nothing needs to
 * cross Redis: cache invalidations stay local (CacheBus), and so do Socket.IO broadcasts
 * (AppIoAdapter).
 *
 * Every instance subscribes to one channel, so its subscriber count is the instance
 * count. An instance announces itself as it boots, before it listens, and waits for its
 * own echo (one Redis has then written the announcement to every subscriber; a cluster
 * forwards it to its other nodes' subscribers over the cluster bus, a moment later, so
 * there the others may still take the shortcut for that moment), so the others stop
 * taking the shortcut before any client can reach it; a periodic count notices
 * instances that went away. When unsure (Redis down), not alone.
 */
@Injectable()
export class InstanceTopology implements OnModuleInit, OnApplicationBootstrap, OnApplicationShutdown {
  private readonly logger = new Logger(InstanceTopology.name);
  private readonly channel: string;
  private readonly db: number;
  private subscriber?: RedisClient;
  private aloneNow = false;
  /** Bumped by every announcement, so that a count taken before one does not undo it. */
  private generation = 0;
  private readonly echoes = new Map<string, () => void>();
  private timer?: NodeJS.Timeout;

  constructor(private readonly redis: RedisService) {
    this.db = redis.channelDb;
    this.channel = instancesChannelOf(this.db);
  }

  get alone(): boolean {
    return this.aloneNow;
  }

  async onModuleInit(): Promise<void> {
    const subscriber = (this.subscriber = this.redis.duplicate());
    subscriber.on('error', () => undefined);
    subscriber.on('message', (_channel: string, nonce: string) => this.received(nonce));
    await subscriber.subscribe(this.channel).catch((error: unknown) => {
      this.logger.warn(`instance channel unavailable for now: ${String(error)}`);
    });
  }

  async onApplicationBootstrap(): Promise<void> {
    await this.announce();
    void this.count();
    this.timer = setInterval(() => void this.count(), REFRESH_MS);
    this.timer.unref();
  }

  async onApplicationShutdown(): Promise<void> {
    clearInterval(this.timer);
    await this.subscriber?.quit().catch(() => this.subscriber?.disconnect());
  }

  /**
   * Tells every other instance that one more is there, and resolves once the message came
   * back through Redis to this instance (or after ANNOUNCE_TIMEOUT_MS).
   */
  private async announce(): Promise<void> {
    const nonce = randomUUID();
    const echoed = new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.echoes.delete(nonce);
        resolve();
      }, ANNOUNCE_TIMEOUT_MS);
      timer.unref();
      this.echoes.set(nonce, () => {
        clearTimeout(timer);
        resolve();
      });
    });
    this.joined();
    this.redis.client.publish(this.channel, nonce).catch((error: unknown) => {
      this.logger.warn(`could not announce this instance: ${String(error)}`);
    });
    await echoed;
  }

  private received(nonce: string): void {
    const echo = this.echoes.get(nonce);
    if (echo) {
      this.echoes.delete(nonce);
      echo();
      return;
    }
    this.joined();
  }

  /** Another instance announced itself (or this one did): not alone, whatever a count said. */
  private joined(): void {
    this.generation += 1;
    this.aloneNow = false;
  }

  private async count(): Promise<void> {
    const generation = this.generation;
    let alone: boolean;
    try {
      // The cache channel too: an instance of an older version (a rolling deploy) listens
      // there only, and must still count.
      const [instances, olderInstances] = await this.redis.census.count([this.channel, cacheChannelOf(this.db)]);
      alone = instances <= 1 && olderInstances <= 1;
    } catch {
      alone = false;
    }
    // An instance that announced itself meanwhile wins over a count taken before it.
    if (generation === this.generation) this.aloneNow = alone;
  }
}
