import { Module } from '@nestjs/common';

import { HealthController } from './health.controller.js';
import { HealthRepository } from './health.repository.js';

/** Liveness and readiness (PROTOCOL.md section 6). */
@Module({
  controllers: [HealthController],
  providers: [HealthRepository],
})
export class HealthModule {}
