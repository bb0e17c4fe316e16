import type { AddressInfo } from 'node:net';

import type { NestExpressApplication } from '@nestjs/platform-express';

import { createApp } from '../../src/bootstrap.js';
import type { AppConfig } from '../../src/config/app-config.js';
import { parseEnv } from '../../src/config/config.parser.js';
import { createTestDatabase, testRedisMode, useTestRedisDb } from './databases.js';

/** The fixed secrets of the test environment (never used outside tests). */
export const TEST_JWT_SECRET = 'test-secret-test-secret-test-secret-0123456789';
export const TEST_ENCRYPTION_KEYS = `1:${Buffer.alloc(32, 1).toString('base64')}`;

export interface TestApp {
  app: NestExpressApplication;
  config: AppConfig;
  /** http://127.0.0.1:<port> */
  url: string;
  databaseUrl: string;
  redisUrl: string;
  close(): Promise<void>;
}

/** A test service's environment on the given database and Redis index. */
export function testEnv(databaseUrl: string, redisUrl: string, overrides: Record<string, string> = {}) {
  return {
    NODE_ENV: 'test',
    PORT: '0',
    HOST: '127.0.0.1',
    DATABASE_URL: databaseUrl,
    REDIS_URL: redisUrl,
    REDIS_MODE: testRedisMode(),
    JWT_SECRET: TEST_JWT_SECRET,
    ENCRYPTION_KEYS: TEST_ENCRYPTION_KEYS,
    MIGRATE_ON_START: 'false',
    LOG_LEVEL: 'error',
    ...overrides,
  };
}

/** The environment a test service runs with, on its own database and Redis index. */
export async function testEnvironment(overrides: Record<string, string> = {}): Promise<{
  env: Record<string, string>;
  dropDatabase: () => Promise<void>;
}> {
  const database = await createTestDatabase();
  const redis = useTestRedisDb();
  return { env: testEnv(database.url, redis.url, overrides), dropDatabase: () => database.drop() };
}

/**
 * Serves the application built from `config` in this process on a free loopback port,
 * as main.ts would. `stop` closes it and keeps its database (for a restart); `close`
 * also drops the database (`dropDatabase`).
 */
export async function serveTestApp(
  config: AppConfig,
  dropDatabase: () => Promise<void>,
): Promise<TestApp & { stop(): Promise<void> }> {
  const app = await createApp(config);
  await app.listen(0, '127.0.0.1');
  const { port } = app.getHttpServer().address() as AddressInfo;
  let stopped: Promise<void> | undefined;
  const stop = () => (stopped ??= app.close());
  return {
    app,
    config,
    url: `http://127.0.0.1:${port}`,
    databaseUrl: config.databaseUrl,
    redisUrl: config.redisUrl,
    stop,
    close: async () => {
      await stop();
      await dropDatabase();
    },
  };
}

/**
 * Boots the whole application in this process on a free loopback port, with its own
 * database (from the migrated template) and Redis index, as main.ts would.
 */
export async function startTestApp(overrides: Record<string, string> = {}): Promise<TestApp> {
  const { env, dropDatabase } = await testEnvironment(overrides);
  return serveTestApp(parseEnv(env), dropDatabase);
}
