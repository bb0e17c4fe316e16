import { Injectable } from '@nestjs/common';

import { PrismaService } from '../prisma/prisma.service.js';
import { RedisService } from '../redis/redis.service.js';

/** Each round trip gives up after this long; the late answer is still observed, never left unhandled. */
const PING_TIMEOUT_MS = 1_000;

/** The round trips readiness is made of. */
@Injectable()
export class HealthRepository {
  constructor(
    private readonly prisma: PrismaService,
    private readonly redis: RedisService,
  ) {}

  async pingPostgres(): Promise<void> {
    await bounded(this.prisma.$queryRaw`SELECT 1`, 'PostgreSQL');
  }

  async pingRedis(): Promise<void> {
    const reply = await bounded(this.redis.client.ping(), 'Redis');
    if (reply !== 'PONG') throw new Error('unexpected PING reply');
  }
}

function bounded<T>(operation: PromiseLike<T>, name: string): Promise<T> {
  const settled = Promise.resolve(operation);
  settled.catch(() => undefined);
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${name} did not answer within ${PING_TIMEOUT_MS} ms`)), PING_TIMEOUT_MS);
  });
  return Promise.race([settled, timeout]).finally(() => clearTimeout(timer));
}
