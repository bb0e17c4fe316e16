import { Injectable } from '@nestjs/common';
import { RateLimiterMemory, RateLimiterRes } from 'rate-limiter-flexible';

import { AppError, ErrorCode } from '../common/app-error.js';
import { AppConfig } from '../config/app-config.js';

/**
 * Flood protection for the realtime edge (rate-limiter-flexible, in memory per
 * instance): requests per socket, and handshakes per user. Over a limit the answer is
 * `rate_limited` with `details.retryAfterMs`; the socket stays connected.
 */
@Injectable()
export class RateLimitsService {
  private readonly events: RateLimiterMemory;
  private readonly connects: RateLimiterMemory;

  constructor(config: AppConfig) {
    const { eventsPerSecond, connectsPerMinute } = config.rateLimits;
    // Two seconds' worth of points refilled over two seconds: bursts of 2x are fine.
    this.events = new RateLimiterMemory({ points: eventsPerSecond * 2, duration: 2 });
    this.connects = new RateLimiterMemory({ points: connectsPerMinute, duration: 60 });
  }

  consumeEvent(socketId: string): Promise<void> {
    return this.consume(this.events, socketId, 'too many requests on this connection');
  }

  consumeConnect(userId: string): Promise<void> {
    return this.consume(this.connects, userId, 'too many connections for this user');
  }

  private async consume(limiter: RateLimiterMemory, key: string, message: string): Promise<void> {
    try {
      await limiter.consume(key);
    } catch (rejection) {
      if (rejection instanceof RateLimiterRes) {
        throw new AppError(ErrorCode.RateLimited, message, {
          retryAfterMs: Math.max(1, Math.ceil(rejection.msBeforeNext)),
        });
      }
      throw rejection;
    }
  }
}
