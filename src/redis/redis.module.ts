import { Global, Module } from '@nestjs/common';

import { CacheBus } from './cache-bus.service.js';
import { RedisService } from './redis.service.js';

@Global()
@Module({ providers: [RedisService, CacheBus], exports: [RedisService, CacheBus] })
export class RedisModule {}
