import { Global, Module, RequestMethod, type MiddlewareConsumer, type NestModule } from '@nestjs/common';

import { DrainMiddleware } from './drain.middleware.js';
import { ShutdownService } from './shutdown.service.js';

/** The graceful shutdown: the drain state every edge consults, and the drain itself. */
@Global()
@Module({
  providers: [ShutdownService],
  exports: [ShutdownService],
})
export class LifecycleModule implements NestModule {
  configure(consumer: MiddlewareConsumer): void {
    consumer
      .apply(DrainMiddleware)
      .exclude({ path: 'health/*path', method: RequestMethod.ALL }, { path: 'metrics', method: RequestMethod.ALL })
      .forRoutes('*path');
  }
}
