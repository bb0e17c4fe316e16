import { Global, Module } from '@nestjs/common';

import { CacheBus } from './cache-bus.service.js';
import { InstanceTopology } from './instance-topology.service.js';
import { RedisService } from './redis.service.js';

@Global()
@Module({
  providers: [RedisService, InstanceTopology, CacheBus],
  exports: [RedisService, InstanceTopology, CacheBus],
})
export class RedisModule {}
