import { Injectable, type OnApplicationBootstrap, type OnModuleDestroy } from '@nestjs/common';

import { CacheBus } from '../redis/cache-bus.service.js';
import { RedisService } from '../redis/redis.service.js';

/** The Redis adapter's request channel for `/v1`: every instance subscribes to it. */
const ADAPTER_REQUEST_CHANNEL = 'sio-request#/v1#';
const REFRESH_MS = 2_000;

/**
 * Whether this is the only instance. While it is, broadcasts need not go through Redis
 * (every socket is local), which saves an encode, a publish and a decode per emit. An
 * instance announces itself as it boots, before it listens, so the others stop taking
 * the shortcut before any socket can connect to it; a periodic count of the adapter's
 * subscribers notices instances that went away. When unsure (Redis down), not alone.
 */
@Injectable()
export class ClusterTopology implements OnApplicationBootstrap, OnModuleDestroy {
  private aloneNow = false;
  private generation = 0;
  private timer?: NodeJS.Timeout;

  constructor(
    private readonly redis: RedisService,
    private readonly bus: CacheBus,
  ) {
    bus.on('topology', () => {
      this.generation += 1;
      this.aloneNow = false;
    });
  }

  get alone(): boolean {
    return this.aloneNow;
  }

  /** Runs before the instance listens: the others know of it before any socket can connect. */
  async onApplicationBootstrap(): Promise<void> {
    await this.bus.invalidateAndConfirm('topology', 'joined');
    void this.refresh();
    this.timer = setInterval(() => void this.refresh(), REFRESH_MS);
    this.timer.unref();
  }

  onModuleDestroy(): void {
    clearInterval(this.timer);
  }

  private async refresh(): Promise<void> {
    const generation = this.generation;
    let alone: boolean;
    try {
      const reply = (await this.redis.client.pubsub('NUMSUB', ADAPTER_REQUEST_CHANNEL)) as [string, number | string];
      alone = Number(reply[1]) <= 1;
    } catch {
      alone = false;
    }
    // An instance that announced itself meanwhile wins over a count taken before it.
    if (generation === this.generation) this.aloneNow = alone;
  }
}
