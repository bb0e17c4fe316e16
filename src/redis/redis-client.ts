import calculateSlot from 'cluster-key-slot';
import { Cluster, Redis, type RedisOptions } from 'ioredis';

import type { AppConfig } from '../config/app-config.js';
import { redisUrlList } from '../config/config.schema.js';

/**
 * A connection to the service's Redis: one server (`Redis`) or a Redis Cluster
 * (`Cluster`, REDIS_MODE=cluster). Both take the same commands, scripts, `publish`,
 * `subscribe` and `on('message')`; a Cluster routes each command by its first key's slot,
 * so every multi-key command or script must keep its keys in one slot (hash tags).
 */
export type RedisClient = Redis | Cluster;

/** Options both kinds of connection take: `retryStrategy` paces reconnects (per node in a cluster). */
type ConnectionOptions = Pick<
  RedisOptions,
  'maxRetriesPerRequest' | 'enableOfflineQueue' | 'connectTimeout' | 'retryStrategy' | 'lazyConnect'
>;

/**
 * Connects as the configuration says. In cluster mode REDIS_URL lists seed nodes (the
 * others are discovered); their credentials and TLS come from the first URL.
 */
export function connectRedis(
  config: Pick<AppConfig, 'redisUrl'> & Partial<Pick<AppConfig, 'redisMode'>>,
  options: ConnectionOptions,
): RedisClient {
  if (config.redisMode !== 'cluster') return new Redis(config.redisUrl, options);
  const seeds = redisUrlList(config.redisUrl).map((url) => new URL(url));
  const first = seeds[0];
  const { retryStrategy, enableOfflineQueue, lazyConnect, ...perNode } = options;
  return new Cluster(
    seeds.map((url) => ({ host: url.hostname, port: Number(url.port || 6379) })),
    {
      enableOfflineQueue,
      lazyConnect,
      // Nodes that drop reconnect (as the single connection does) instead of waiting for a MOVED.
      clusterNodeRetryStrategy: retryStrategy,
      // No node answering at all: keep trying at the same pace.
      clusterRetryStrategy: retryStrategy,
      redisOptions: {
        ...perNode,
        username: first.username ? decodeURIComponent(first.username) : undefined,
        password: first.password ? decodeURIComponent(first.password) : undefined,
        tls: first.protocol === 'rediss:' ? {} : undefined,
      },
    },
  );
}

/** The database index the client works in (a cluster has database 0 only). */
export function databaseOf(client: RedisClient): number {
  return client instanceof Cluster ? 0 : (client.options.db ?? 0);
}

/** The hash slot of a key (its `{hash tag}` when it has one), as Redis Cluster computes it. */
export const slotOf = (key: string): number => calculateSlot(key);
