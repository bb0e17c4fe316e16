// The test harness itself: the launcher of the local services (scripts/local-services.mjs,
// which npm start and the bench use too), the services of test/support/global-setup.ts and
// the isolation helpers of test/support/databases.ts. If these fail, every other
// integration test would.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { Redis } from 'ioredis';
import pg from 'pg';
import { afterAll, describe, expect, inject, it } from 'vitest';

import {
  acquirePidLock,
  freePorts,
  localServicesStatus,
  startLocalServices,
  stopLocalServices,
} from '../../scripts/local-services.mjs';
import { createTestDatabase, startPrivateRedis, useTestRedisDb, type TestDatabase } from '../support/databases.js';

const opened: { end(): Promise<void> }[] = [];
const databases: TestDatabase[] = [];

async function pgClient(url: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 10_000, query_timeout: 30_000 });
  // drop() terminates sessions still open to the database: without a listener that is an uncaught error.
  client.on('error', () => {});
  await client.connect();
  opened.push({ end: () => client.end() });
  return client;
}

function redisClient(url: string): Redis {
  const redis = new Redis(url, { connectTimeout: 5_000, maxRetriesPerRequest: 1, retryStrategy: () => null });
  redis.on('error', () => {}); // failures surface as the commands' errors
  opened.push({
    end: () => {
      redis.disconnect();
      return Promise.resolve();
    },
  });
  return redis;
}

async function testDatabase(): Promise<TestDatabase> {
  const database = await createTestDatabase();
  databases.push(database);
  return database;
}

afterAll(async () => {
  for (const client of opened.splice(0)) await client.end().catch(() => undefined);
  for (const database of databases.splice(0)) await database.drop();
});

describe('test services (global setup)', () => {
  it('provides the same settings through inject() and the environment', () => {
    expect(inject('TEST_PG_ADMIN_URL')).toMatch(/^postgresql:\/\/postgres@127\.0\.0\.1:\d+\/postgres$/);
    expect(process.env.TEST_PG_ADMIN_URL).toBe(inject('TEST_PG_ADMIN_URL'));
    expect(inject('TEST_REDIS_URL')).toBe(`redis://127.0.0.1:${inject('TEST_REDIS_PORT')}`);
    expect(process.env.TEST_REDIS_URL).toBe(inject('TEST_REDIS_URL'));
    expect(process.env.TEST_REDIS_PORT).toBe(String(inject('TEST_REDIS_PORT')));
  });

  it('runs PostgreSQL with the migrated template', async () => {
    const admin = await pgClient(inject('TEST_PG_ADMIN_URL'));
    const { rows } = await admin.query<{ one: number }>('SELECT 1 AS one');
    expect(rows).toEqual([{ one: 1 }]);
    const template = await admin.query<{ datistemplate: boolean }>(
      'SELECT datistemplate FROM pg_database WHERE datname = $1',
      [inject('TEST_PG_TEMPLATE')],
    );
    expect(template.rows).toEqual([{ datistemplate: true }]);
  });

  it('runs Redis with enough logical databases for every test file', async () => {
    const redis = redisClient(inject('TEST_REDIS_URL'));
    expect(await redis.ping()).toBe('PONG');
    expect(await redis.config('GET', 'databases')).toEqual(['databases', String(inject('TEST_REDIS_DATABASES'))]);
    expect(inject('TEST_REDIS_DATABASES')).toBeGreaterThanOrEqual(1024);
  });
});

describe('createTestDatabase', () => {
  it('makes a database with the migrations applied', async () => {
    const database = await testDatabase();
    expect(database.url).toBe(new URL(`/${database.name}`, inject('TEST_PG_ADMIN_URL')).toString());
    const client = await pgClient(database.url);
    const { rows } = await client.query<{ table: string | null }>(
      "SELECT to_regclass('public._prisma_migrations')::text AS table",
    );
    expect(rows).toEqual([{ table: '_prisma_migrations' }]);
    const current = await client.query<{ name: string }>('SELECT current_database() AS name');
    expect(current.rows[0]?.name).toBe(database.name);
  });

  it('makes independent databases, and drops them', async () => {
    const [first, second] = await Promise.all([testDatabase(), testDatabase()]);
    if (first === undefined || second === undefined) throw new Error('unreachable');
    expect(first.name).not.toBe(second.name);

    const a = await pgClient(first.url);
    const b = await pgClient(second.url);
    await a.query('CREATE TABLE only_in_first (value int)');
    await a.query('INSERT INTO only_in_first VALUES (1)');
    const inSecond = await b.query<{ table: string | null }>(
      "SELECT to_regclass('public.only_in_first')::text AS table",
    );
    expect(inSecond.rows).toEqual([{ table: null }]);

    // drop() closes connections still open to it, and is idempotent.
    await first.drop();
    await first.drop();
    const admin = await pgClient(inject('TEST_PG_ADMIN_URL'));
    const left = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [first.name]);
    expect(left.rowCount).toBe(0);
    const other = await b.query<{ one: number }>('SELECT 1 AS one');
    expect(other.rows).toEqual([{ one: 1 }]);
  });
});

describe('useTestRedisDb', () => {
  it('gives each call its own, empty Redis database', async () => {
    const first = useTestRedisDb();
    const second = useTestRedisDb();
    expect(first.index).toBeGreaterThan(0);
    expect(second.index).not.toBe(first.index);
    expect(first.url).toBe(`${inject('TEST_REDIS_URL')}/${first.index}`);

    const a = redisClient(first.url);
    const b = redisClient(second.url);
    expect(await a.dbsize()).toBe(0);
    expect(await b.dbsize()).toBe(0);
    await a.set('harness:key', 'first');
    expect(await b.get('harness:key')).toBeNull();
    await b.set('harness:key', 'second');
    expect(await a.get('harness:key')).toBe('first');
    expect(await b.get('harness:key')).toBe('second');
  });
});

describe('startPrivateRedis', () => {
  it('stops and starts again on the same port, keeping its data', async () => {
    const server = await startPrivateRedis();
    try {
      expect(server.url).toBe(`redis://127.0.0.1:${server.port}`);
      expect(server.dir.startsWith(inject('TEST_TMP_DIR'))).toBe(true);
      const before = redisClient(server.url);
      expect(await before.ping()).toBe('PONG');
      await before.set('survives', 'restart');
      before.disconnect();

      await server.stop();
      await server.stop(); // idempotent
      const down = redisClient(server.url);
      await expect(down.ping()).rejects.toThrow();
      down.disconnect();

      await server.start();
      const after = redisClient(server.url);
      expect(await after.ping()).toBe('PONG');
      expect(await after.get('survives')).toBe('restart');
      after.disconnect();
    } finally {
      await server.close();
    }
  });
});

describe('the local services launcher', () => {
  it('starts PostgreSQL and Redis in a folder of its own, reuses them when running, and stops them', async () => {
    const localDir = mkdtempSync(join(inject('TEST_TMP_DIR'), 'launcher-'));
    const [pgPort, redisPort] = (await freePorts(2)) as [number, number];
    const options = { localDir, pgPort, redisPort, log: () => undefined };
    try {
      const first = await startLocalServices(options);
      expect(first.databaseUrl).toBe(`postgresql://postgres@127.0.0.1:${pgPort}/messaging`);
      expect(first.redisUrl).toBe(`redis://127.0.0.1:${redisPort}`);
      expect(first.postmasterPid).toEqual(expect.any(Number));
      expect(first.redisPid).toEqual(expect.any(Number));

      const again = await startLocalServices(options);
      expect(again.postmasterPid).toBe(first.postmasterPid);
      expect(again.redisPid).toBe(first.redisPid);

      const db = await pgClient(first.databaseUrl);
      const { rows } = await db.query<{ name: string }>('SELECT current_database() AS name');
      expect(rows).toEqual([{ name: 'messaging' }]);
      await db.end();
      const redis = redisClient(first.redisUrl);
      expect(await redis.ping()).toBe('PONG');
      redis.disconnect();
      expect((await localServicesStatus(options)).running).toBe(true);

      await stopLocalServices(options);
      const stopped = await localServicesStatus(options);
      expect(stopped.postgres.running).toBe(false);
      expect(stopped.redis.running).toBe(false);
    } finally {
      await stopLocalServices(options).catch(() => undefined);
    }
  });

  it('takes over a lock whose holder is gone and refuses one whose holder runs', async () => {
    const dir = mkdtempSync(join(inject('TEST_TMP_DIR'), 'lock-'));
    const file = join(dir, 'held.lock');
    const gone = spawnSync(process.execPath, ['-e', '']).pid;
    writeFileSync(file, `${gone}\n`);
    const taken = await acquirePidLock(file);
    expect(taken.acquired).toBe(true);
    if (taken.acquired) taken.release();

    writeFileSync(file, `${process.ppid}\n`); // Vitest's main process: alive
    expect(await acquirePidLock(file)).toEqual({ acquired: false, holder: process.ppid });
  });
});
