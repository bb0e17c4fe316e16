import type { Server as HttpServer } from 'node:http';
import type { Socket } from 'node:net';

import type { INestApplicationContext } from '@nestjs/common';
import { createAdapter } from '@socket.io/redis-adapter';
import type { Server, ServerOptions } from 'socket.io';

import type { AppConfig } from '../config/app-config.js';
import { IoAdapterWithoutIdleBindings } from '../platform/nest-io-bind-handlers.js';
import { skipRedisWhenAlone } from '../platform/redis-adapter-local-when-alone.js';
import { publishSafely } from '../platform/redis-adapter-publish-safely.js';
import { countServersWith } from '../platform/redis-adapter-server-count.js';
import { coalesceWrites } from '../platform/write-coalescing.js';
import type { InstanceTopology } from '../redis/instance-topology.service.js';
import type { RedisClient } from '../redis/redis-client.js';
import type { RedisService } from '../redis/redis.service.js';

/** Room for the event envelope (event name, ids, JSON and base64 overhead) above the body limit. */
const ENVELOPE_BYTES = 64 * 1024;

/**
 * Socket.IO server options: a frame limit well above maxMessageBytes (base64 e2e
 * ciphertext is 4/3 larger) so an oversized message gets a `payload_too_large` reply,
 * while a frame past the limit only closes its own connection; CORS from CORS_ORIGINS
 * (browsers' polling transport). Auth is by token, never cookies, so cross-site
 * WebSocket handshakes gain nothing.
 *
 * Rooms span instances through the Redis adapter (@socket.io/redis-adapter): an emit
 * to a user or conversation room reaches sockets on every instance, and a removed
 * member's sockets leave a room everywhere.
 *
 * On a Redis Cluster too it is the classic adapter (PUBLISH/PSUBSCRIBE through the
 * Cluster client), not the sharded one (`createShardedAdapter`, SPUBLISH): with ioredis
 * 6.0 the sharded subscriptions of a master that fails over are dropped by the server
 * (SUNSUBSCRIBE) and not always taken up on the new master, and broadcasts between
 * instances then stopped for good in about one failover in three
 * (test/cluster/cluster-failover.spec.ts). Classic pub/sub is not bound to slots and
 * reaches every node's subscribers, so it survives failovers; the cost is that each
 * broadcast crosses every node of the cluster, as it crosses the one Redis today.
 *
 * The library patches it applies live in src/platform/, each with a spec pinning what it
 * relies on.
 */
export class AppIoAdapter extends IoAdapterWithoutIdleBindings {
  private readonly clients: RedisClient[] = [];

  constructor(
    app: INestApplicationContext,
    private readonly config: AppConfig,
    private readonly redis: RedisService,
    private readonly topology: InstanceTopology,
  ) {
    super(app);
  }

  override createIOServer(port: number, options?: Partial<ServerOptions>): Server {
    const origins = this.config.corsOrigins;
    const server = super.createIOServer(port, {
      ...options,
      maxHttpBufferSize: Math.ceil(this.config.limits.maxMessageBytes * 2) + ENVELOPE_BYTES,
      pingInterval: 25_000,
      pingTimeout: 20_000,
      connectTimeout: 10_000,
      cors: origins.length > 0 ? { origin: origins.includes('*') ? true : origins, credentials: true } : undefined,
    } as ServerOptions);
    // Each WebSocket's TCP socket sends what one tick wrote to it in one writev.
    (this.httpServer as HttpServer | undefined)?.on('upgrade', (_request: unknown, socket: Socket) =>
      coalesceWrites(socket),
    );
    const pub = this.redis.duplicate();
    const sub = this.redis.duplicate();
    // Outages are reported by the main connection and readiness; these just reconnect.
    for (const client of [pub, sub]) client.on('error', () => undefined);
    this.clients.push(pub, sub);
    const prefix = `sio:${this.redis.channelDb}`;
    const counted = countServersWith(
      createAdapter(publishSafely(pub), sub, { key: prefix }),
      prefix,
      async (channel) => (await this.redis.census.count([channel]))[0],
    );
    server.adapter(skipRedisWhenAlone(counted, this.topology));
    return server;
  }

  override async close(server: Server): Promise<void> {
    await super.close(server);
    await Promise.all(this.clients.map((client) => client.quit().catch(() => client.disconnect())));
  }
}
