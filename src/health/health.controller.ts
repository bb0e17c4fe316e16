import { Controller, Get, HttpStatus, Logger, Req, Res } from '@nestjs/common';
import type { Request, Response } from 'express';
import { ApiExcludeController } from '@nestjs/swagger';

import { AppConfig } from '../config/app-config.js';
import { ShutdownService } from '../lifecycle/shutdown.service.js';
import { HealthRepository } from './health.repository.js';

/** Liveness and readiness for orchestrators (PROTOCOL.md section 6). No auth. */
@ApiExcludeController()
@Controller('health')
export class HealthController {
  private readonly logger = new Logger(HealthController.name);

  constructor(
    private readonly repository: HealthRepository,
    private readonly config: AppConfig,
    private readonly shutdown: ShutdownService,
  ) {}

  /**
   * 200 while the process serves requests, the drain after SIGTERM included: an
   * orchestrator that saw liveness fail then would kill the instance before it answered
   * what is in flight (why this is not Terminus' check, which turns 503 at shutdown).
   */
  @Get('live')
  live(): Liveness {
    return { status: 'ok', info: {}, error: {}, details: {} };
  }

  /**
   * 200 when PostgreSQL and Redis answer, else 503; the body names each dependency and its
   * status only (`{ status, info, error }`, entries `{ status: 'up' | 'down' }`): this
   * route has no auth, so why a dependency is down (driver messages, addresses) goes to
   * the log with the request's id, never to the caller. `push` and its providers `apns`,
   * `fcm` and `webPush` are informational ('up', or 'disabled' when unconfigured) and never
   * fail readiness. Once SIGTERM came it is 503 at once (`shutdown: down`), so load
   * balancers stop routing here while the instance drains.
   */
  @Get('ready')
  async ready(@Req() request: Request, @Res({ passthrough: true }) response: Response): Promise<Readiness> {
    if (this.shutdown.draining) {
      response.status(HttpStatus.SERVICE_UNAVAILABLE);
      return { status: 'error', info: {}, error: { shutdown: { status: 'down' } } };
    }
    const checks = {
      postgres: () => this.repository.pingPostgres(),
      redis: () => this.repository.pingRedis(),
    };
    const results = await Promise.all(
      Object.entries(checks).map(async ([name, ping]) => {
        try {
          await ping();
          return [name, true] as const;
        } catch (error) {
          this.logger.warn({ msg: `readiness: ${name} is down`, requestId: request.id, err: error });
          return [name, false] as const;
        }
      }),
    );
    const info: Record<string, { status: 'up' | 'disabled' }> = {};
    const error: Record<string, { status: 'down' }> = {};
    for (const [name, up] of results) {
      if (up) info[name] = { status: 'up' };
      else error[name] = { status: 'down' };
    }
    // Informational: push is optional, so it never fails readiness. `push` is up when any
    // provider is configured; each provider says whether it is.
    const providers = { apns: this.config.apns, fcm: this.config.fcm, webPush: this.config.webPush };
    const anyOn = Object.values(providers).some((provider) => provider !== null);
    info.push = { status: anyOn ? 'up' : 'disabled' };
    for (const [name, provider] of Object.entries(providers)) {
      info[name] = { status: provider === null ? 'disabled' : 'up' };
    }
    const ready = Object.keys(error).length === 0;
    response.status(ready ? HttpStatus.OK : HttpStatus.SERVICE_UNAVAILABLE);
    return { status: ready ? 'ok' : 'error', info, error };
  }
}

interface Liveness {
  status: 'ok';
  info: Record<string, never>;
  error: Record<string, never>;
  details: Record<string, never>;
}

interface Readiness {
  status: 'ok' | 'error';
  info: Record<string, { status: 'up' | 'disabled' }>;
  error: Record<string, { status: 'down' }>;
}
