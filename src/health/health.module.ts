import { Global, Module, type MiddlewareConsumer, type NestModule } from '@nestjs/common';

import { HealthController } from './health.controller.js';
import { HealthRepository } from './health.repository.js';
import { HttpMetricsMiddleware } from './http-metrics.middleware.js';
import { MetricsController } from './metrics.controller.js';
import { MetricsService } from './metrics.service.js';

/** Health checks and the metrics registry, which every feature module may use. */
@Global()
@Module({
  controllers: [HealthController, MetricsController],
  providers: [HealthRepository, MetricsService],
  exports: [MetricsService],
})
export class HealthModule implements NestModule {
  configure(consumer: MiddlewareConsumer): void {
    consumer.apply(HttpMetricsMiddleware).forRoutes('*path');
  }
}
