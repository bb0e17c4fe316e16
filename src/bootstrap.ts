import { NestFactory } from '@nestjs/core';
import type { NestExpressApplication } from '@nestjs/platform-express';
import { Logger } from 'nestjs-pino';

import { AppModule } from './app.module.js';
import { AppIoAdapter } from './gateway/io.adapter.js';
import { InstanceTopology } from './redis/instance-topology.service.js';
import { RedisService } from './redis/redis.service.js';
import { MetricsService } from './metrics/metrics.service.js';
import { HttpExceptionFilter } from './http/http-exception.filter.js';
import { setupOpenApi } from './http/openapi.js';
import type { AppConfig } from './config/app-config.js';
import { applyMigrations } from './prisma/migrator.js';

/**
 * Builds the application from a validated config: migrations first (unless disabled),
 * then the Nest app with its HTTP and Socket.IO listeners. Used by main.ts and the e2e
 * tests, so both run the same wiring.
 */
export async function createApp(config: AppConfig): Promise<NestExpressApplication> {
  const app = await NestFactory.create<NestExpressApplication>(AppModule.forRoot(config), {
    bufferLogs: true,
    cors:
      config.corsOrigins.length > 0 ? { origin: config.corsOrigins.includes('*') ? true : config.corsOrigins } : false,
  });
  const logger = app.get(Logger);
  app.useLogger(logger);
  app.disable('x-powered-by');
  app.useWebSocketAdapter(new AppIoAdapter(app, config, app.get(RedisService), app.get(InstanceTopology)));
  app.useGlobalFilters(new HttpExceptionFilter(app.get(MetricsService)));
  // A message at maxMessageBytes must fit, even as base64 ciphertext with JSON escapes.
  app.useBodyParser('json', { limit: Math.max(100 * 1024, config.limits.maxMessageBytes * 2 + 64 * 1024) });
  setupOpenApi(app);
  if (config.migrateOnStart) {
    const { applied } = await applyMigrations(config.databaseUrl, {
      log: (line: string) => logger.log(line, 'Migrations'),
    });
    logger.log(
      applied.length > 0
        ? `applied ${applied.length} migration(s): ${applied.join(', ')}`
        : 'database schema is up to date',
      'Migrations',
    );
  }
  return app;
}
