import { Controller, Get, HttpStatus, Res, ServiceUnavailableException } from '@nestjs/common';
import type { Response } from 'express';
import { ApiExcludeController } from '@nestjs/swagger';
import { HealthCheck, HealthCheckService, HealthIndicatorService, type HealthCheckResult } from '@nestjs/terminus';

import { AppConfig } from '../config/app-config.js';
import { HealthRepository } from './health.repository.js';

const CHECK_TIMEOUT_MS = 1_500;

/** Liveness and readiness for orchestrators (PROTOCOL.md section 6). No auth. */
@ApiExcludeController()
@Controller('health')
export class HealthController {
  constructor(
    private readonly health: HealthCheckService,
    private readonly indicators: HealthIndicatorService,
    private readonly repository: HealthRepository,
    private readonly config: AppConfig,
  ) {}

  /** 200 while the process serves requests. */
  @Get('live')
  @HealthCheck()
  live(): Promise<HealthCheckResult> {
    return this.health.check([]);
  }

  /**
   * 200 when PostgreSQL and Redis answer; 503 naming each one that did not, in
   * Terminus's body (`{ status: 'error', info, error, details }`), answered here rather
   * than by the API's error filter so the failing dependency stays visible. `push` is
   * always up and says whether APNs push is enabled (`{ status: 'up', enabled }`).
   */
  @Get('ready')
  async ready(@Res({ passthrough: true }) response: Response): Promise<unknown> {
    try {
      return await this.check();
    } catch (error) {
      if (!(error instanceof ServiceUnavailableException)) throw error;
      response.status(HttpStatus.SERVICE_UNAVAILABLE);
      return error.getResponse();
    }
  }

  private check(): Promise<HealthCheckResult> {
    return this.health.check([
      () =>
        this.indicators
          .check('postgres')
          .attempt(() => this.repository.pingPostgres())
          .withTimeout(CHECK_TIMEOUT_MS),
      () =>
        this.indicators
          .check('redis')
          .attempt(() => this.repository.pingRedis())
          .withTimeout(CHECK_TIMEOUT_MS),
      // Informational: push is optional, so it never fails readiness.
      () => this.indicators.check('push').up({ enabled: this.config.apns !== null }),
    ]);
  }
}
