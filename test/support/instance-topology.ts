import type { AppConfig } from '../../src/config/app-config.js';
import { CacheBus } from '../../src/redis/cache-bus.service.js';
import { InstanceTopology } from '../../src/redis/instance-topology.service.js';
import { RedisService } from '../../src/redis/redis.service.js';

/** What an instance of the service has of its Redis pub/sub side, without the rest. */
export interface TopologyInstance {
  topology: InstanceTopology;
  cache: CacheBus;
  stop(): Promise<void>;
}

/** Starts the instance count and cache bus on `config`'s Redis, as an app's lifecycle would. */
export async function startTopologyInstance(
  config: Pick<AppConfig, 'redisUrl'> & Partial<AppConfig>,
): Promise<TopologyInstance> {
  const redis = new RedisService(config as AppConfig);
  const topology = new InstanceTopology(redis);
  const cache = new CacheBus(redis, topology);
  await topology.onModuleInit();
  await cache.onModuleInit();
  await topology.onApplicationBootstrap();
  return {
    topology,
    cache,
    stop: async () => {
      await cache.onApplicationShutdown();
      await topology.onApplicationShutdown();
      await redis.onApplicationShutdown();
    },
  };
}
