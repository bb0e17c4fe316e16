// Test isolation on the services of test/support/global-setup.ts:
// - createTestDatabase(): a fresh PostgreSQL database cloned from the migrated template;
// - useTestRedisDb(): a Redis logical database index that no other test of the run uses;
// - startPrivateRedis(): a Redis server of one's own, for tests that stop and restart it
//   (started through scripts/local-services.mjs, the launcher of every local service).
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { Cluster } from 'ioredis';
import pg from 'pg';
import { inject, type ProvidedContext } from 'vitest';

import { startRedisProcess, type RedisProcess } from '../../scripts/local-services.mjs';
import type { RedisClient } from '../../src/redis/redis-client.js';
import { freePort } from './free-port.js';

/** Names of the databases made here; global-setup.ts drops leftovers by this prefix. */
const TEST_DATABASE_PREFIX = 'test_';
const CREATE_RETRY_MS = 15_000;

type SettingKey = keyof ProvidedContext;

/** A value from the global setup: inject() first, else the environment variable of the same name. */
function setting(key: SettingKey): string {
  let value: string | number | undefined;
  try {
    value = inject(key);
  } catch {
    value = undefined; // not inside a Vitest worker
  }
  if (value === undefined || value === '') value = process.env[key];
  if (value === undefined || value === '') {
    throw new Error(`${key} is not set: run the tests through Vitest with test/support/global-setup.ts as globalSetup`);
  }
  return String(value);
}

function quoteIdentifier(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function withAdmin<T>(action: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({
    connectionString: setting('TEST_PG_ADMIN_URL'),
    connectionTimeoutMillis: 10_000,
    query_timeout: 60_000,
  });
  client.on('error', () => {}); // a dropped connection surfaces as the query's error
  await client.connect();
  try {
    return await action(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

function isObjectInUse(error: unknown): boolean {
  // 55006 object_in_use: "source database ... is being accessed by other users"
  return error instanceof Error && 'code' in error && error.code === '55006';
}

export interface TestDatabase {
  /** postgresql://postgres@127.0.0.1:PORT/<name> */
  url: string;
  name: string;
  /** Drops the database, closing any connection still open to it. Idempotent. */
  drop(): Promise<void>;
}

let databaseCounter = 0;

/**
 * A new database with every migration applied (a clone of the template made by the global
 * setup), named uniquely for this worker process. Drop it in afterAll; leftovers are
 * dropped at the end of the run.
 */
export async function createTestDatabase(): Promise<TestDatabase> {
  databaseCounter += 1;
  const name = [
    TEST_DATABASE_PREFIX.slice(0, -1),
    process.env.VITEST_POOL_ID ?? '0',
    process.pid,
    databaseCounter,
    randomBytes(3).toString('hex'),
  ].join('_');
  const template = setting('TEST_PG_TEMPLATE');
  await withAdmin(async (client) => {
    const deadline = Date.now() + CREATE_RETRY_MS;
    for (;;) {
      try {
        await client.query(`CREATE DATABASE ${quoteIdentifier(name)} TEMPLATE ${quoteIdentifier(template)}`);
        return;
      } catch (error) {
        if (!isObjectInUse(error) || Date.now() >= deadline) throw error;
        await sleep(50 + Math.floor(Math.random() * 100));
      }
    }
  });
  const url = new URL(setting('TEST_PG_ADMIN_URL'));
  url.pathname = `/${name}`;
  let dropped: Promise<void> | undefined;
  return {
    url: url.toString(),
    name,
    drop: () =>
      (dropped ??= withAdmin(async (client) => {
        await client.query(`DROP DATABASE IF EXISTS ${quoteIdentifier(name)} WITH (FORCE)`);
      })),
  };
}

let nextRedisIndex = 1;

/**
 * 'cluster' in the cluster project (vitest.config.ts): the test Redis is then a Redis
 * Cluster, and REDIS_MODE=cluster goes with its URL (testEnv in app.ts).
 */
export function testRedisMode(): 'single' | 'cluster' {
  try {
    return setting('TEST_REDIS_MODE') === 'cluster' ? 'cluster' : 'single';
  } catch {
    return 'single';
  }
}

/**
 * A Redis logical database of the test Redis that no other call in this test run gets
 * (index 1 and up; the global setup empties every database at the start of the run).
 * Indices are claimed with exclusively created files, atomic across worker processes.
 */
export function useTestRedisDb(): { url: string; index: number } {
  const baseUrl = setting('TEST_REDIS_URL');
  // A cluster has database 0 only: its test files run one at a time (vitest.config.ts)
  // and keep apart by their random ids.
  if (testRedisMode() === 'cluster') return { url: baseUrl, index: 0 };
  const claimsDir = setting('TEST_REDIS_CLAIMS_DIR');
  const databases = Number(setting('TEST_REDIS_DATABASES'));
  for (let index = nextRedisIndex; index < databases; index += 1) {
    try {
      writeFileSync(join(claimsDir, String(index)), `pid ${process.pid} pool ${process.env.VITEST_POOL_ID ?? '?'}\n`, {
        flag: 'wx',
      });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'EEXIST') continue;
      throw error;
    }
    nextRedisIndex = index + 1;
    return { url: `${baseUrl}/${index}`, index };
  }
  throw new Error(`all ${databases - 1} Redis databases of the test Redis are taken in this run`);
}

/**
 * Empties what the client works on, as if Redis lost it: its database, or in a cluster
 * every master (FLUSHDB through a Cluster client would reach one random node).
 */
export async function flushTestRedis(client: RedisClient): Promise<void> {
  await Promise.all((client instanceof Cluster ? client.nodes('master') : [client]).map((server) => server.flushdb()));
}

// ---------------------------------------------------------------------------------------
// Private Redis

export interface PrivateRedis {
  /** redis://127.0.0.1:PORT */
  url: string;
  port: number;
  /** Its data folder (append-only file on: data survives stop/start). */
  dir: string;
  /** Stops the server (SIGTERM: it flushes its data first). Idempotent. */
  stop(): Promise<void>;
  /** Starts it again, on the same port and folder; resolves once it answers PING. */
  start(): Promise<void>;
  /**
   * Stops it and removes its folder. Optional: the global teardown kills private servers
   * still running and empties their folder (TEST_TMP_DIR) at the end of the run.
   */
  close(): Promise<void>;
}

const privateServers = new Set<{ redis?: RedisProcess; dir: string }>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const server of privateServers) {
      server.redis?.kill();
      rmSync(server.dir, { recursive: true, force: true });
    }
  });
}

/** The run's scratch folder (emptied by the global teardown), else the system's. */
function scratchBase(): string {
  try {
    return setting('TEST_TMP_DIR');
  } catch {
    return tmpdir();
  }
}

/**
 * A redis-server of its own (scripts/local-services.mjs startRedisProcess: a child of this
 * worker, not daemonized) on a free port, in a temporary folder, for tests that stop and
 * restart Redis.
 */
export async function startPrivateRedis(): Promise<PrivateRedis> {
  const dir = mkdtempSync(join(scratchBase(), 'private-redis-'));
  const port = await freePort();
  const server: { redis?: RedisProcess; dir: string } = { dir };
  privateServers.add(server);
  installExitHook();

  const start = async (): Promise<void> => {
    if (server.redis?.running()) return;
    server.redis = await startRedisProcess({ port, dir });
  };

  const stop = async (): Promise<void> => {
    await server.redis?.stop();
  };

  const close = async (): Promise<void> => {
    await stop();
    privateServers.delete(server);
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    await start();
  } catch (error) {
    await close();
    throw error;
  }
  return { url: `redis://127.0.0.1:${port}`, port, dir, stop, start, close };
}
