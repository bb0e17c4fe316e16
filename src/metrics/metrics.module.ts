import { Global, Module, type MiddlewareConsumer, type NestModule } from '@nestjs/common';

import { HttpMetricsMiddleware } from './http-metrics.middleware.js';
import { MetricsController } from './metrics.controller.js';
import { MetricsService } from './metrics.service.js';

/**
 * The process's Prometheus registry, `/metrics`, and the HTTP request figures. Global:
 * every feature module registers its own metrics on the one registry, and none of them
 * should have to import an edge module (health) to do it.
 */
@Global()
@Module({
  controllers: [MetricsController],
  providers: [MetricsService],
  exports: [MetricsService],
})
export class MetricsModule implements NestModule {
  configure(consumer: MiddlewareConsumer): void {
    consumer.apply(HttpMetricsMiddleware).forRoutes('*path');
  }
}
