// Vitest globalSetup of the `integration` and `e2e` projects: one PostgreSQL and one Redis
// for the whole test run (scripts/local-services.mjs, data in .local/test, ports picked free
// at run time), and a template database `messaging_template` with every migration applied,
// which test/support/databases.ts clones for each test file.
//
// The `cluster` project gets a Redis Cluster instead (three masters with one replica
// each, started by the same launcher in the same folder when that project first asks):
// TEST_REDIS_MODE is 'cluster' there and TEST_REDIS_URL lists its nodes.
//
// Vitest calls this once per project that has tests to run, in the main process and one
// after the other; the services are shared through a process-wide reference count and
// stopped by the last teardown. Tests reach them through inject() (typed below) or the
// same values in process.env (set before the test workers are forked).
import { existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';

import { Redis } from 'ioredis';
import pg from 'pg';
import type { TestProject } from 'vitest/node';

import {
  acquirePidLock,
  freeClusterPorts,
  freePorts,
  killRedisOf,
  processAlive,
  ROOT,
  startLocalRedisCluster,
  startLocalServices,
  stopLocalServices,
  type LocalServicesOptions,
} from '../../scripts/local-services.mjs';
import { applyMigrations } from '../../src/prisma/migrator.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** postgresql://postgres@127.0.0.1:PORT/postgres (superuser, trust authentication). */
    TEST_PG_ADMIN_URL: string;
    /** The migrated database that createTestDatabase() clones. */
    TEST_PG_TEMPLATE: string;
    TEST_REDIS_PORT: number;
    /** redis://127.0.0.1:PORT (no database index). */
    TEST_REDIS_URL: string;
    /** How many logical databases the test Redis has (index 0 is left unused). */
    TEST_REDIS_DATABASES: number;
    /** Folder where useTestRedisDb() claims database indices, one file per index. */
    TEST_REDIS_CLAIMS_DIR: string;
    /** Scratch folder of this run (startPrivateRedis() servers live there), emptied at the end. */
    TEST_TMP_DIR: string;
    /** 'cluster' in the cluster project: TEST_REDIS_URL then lists the cluster's nodes. */
    TEST_REDIS_MODE: 'single' | 'cluster';
  }
}

/** The project whose tests run against a Redis Cluster (vitest.config.ts). */
const CLUSTER_PROJECT = 'cluster';

type TestServicesContext = {
  TEST_PG_ADMIN_URL: string;
  TEST_PG_TEMPLATE: string;
  TEST_REDIS_PORT: number;
  TEST_REDIS_URL: string;
  TEST_REDIS_DATABASES: number;
  TEST_REDIS_CLAIMS_DIR: string;
  TEST_TMP_DIR: string;
};

const LOCAL_ROOT = join(ROOT, '.local');
/** Held (pid inside) by the run that uses .local/test; a concurrent run gets its own folder. */
const LOCK_FILE = join(LOCAL_ROOT, 'test.lock');
const RUN_DIR_PATTERN = /^test-run-(\d+)$/;

const TEMPLATE_DATABASE = 'messaging_template';
/** Must match the names made by createTestDatabase() in databases.ts. */
const TEST_DATABASE_PATTERN = 'test\\_%';
const REDIS_DATABASES = 1024;

interface Services {
  localDir: string;
  /** Set when this run holds LOCK_FILE and uses .local/test; unset: a private folder, removed at the end. */
  releaseLock?: () => void;
  context: TestServicesContext;
}

interface SharedState {
  users: number;
  services: Promise<Services>;
  /** The cluster's seed URLs, once the cluster project asked for it. */
  cluster?: Promise<string>;
}

// The file is loaded once per project (separate module instances), hence a global.
const STATE = Symbol.for('messaging-service.test.global-setup');
type GlobalWithState = typeof globalThis & { [STATE]?: SharedState };

function log(line: string): void {
  process.stderr.write(`[test services] ${line}\n`);
}

function launcherOptions(localDir: string, more: LocalServicesOptions = {}): LocalServicesOptions {
  return { localDir, log: (line) => log(line), ...more };
}

/** Services of concurrent runs that died without their teardown. */
async function cleanUpAbandonedRunDirs(): Promise<void> {
  for (const entry of readdirSync(LOCAL_ROOT)) {
    const pid = Number(RUN_DIR_PATTERN.exec(entry)?.[1]);
    if (!pid || processAlive(pid)) continue;
    const dir = join(LOCAL_ROOT, entry);
    log(`cleaning up ${dir}, left by test run ${pid}`);
    await stopLocalServices(launcherOptions(dir)).catch((error: unknown) => log(String(error)));
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Empties the run's scratch folder, killing the private Redis servers still running there
 * (startPrivateRedis() in a worker that Vitest killed, or a test that never stopped its own).
 */
function removeScratch(tmpDir: string): void {
  if (!existsSync(tmpDir)) return;
  for (const entry of readdirSync(tmpDir)) {
    const pid = killRedisOf(join(tmpDir, entry));
    if (pid !== null) log(`killed the private Redis (pid ${pid}) left running in ${join(tmpDir, entry)}`);
  }
  rmSync(tmpDir, { recursive: true, force: true });
}

function quoteIdentifier(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

async function withAdmin<T>(adminUrl: string, action: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: adminUrl, connectionTimeoutMillis: 10_000, query_timeout: 120_000 });
  client.on('error', () => {}); // a dropped connection surfaces as the query's error
  await client.connect();
  try {
    return await action(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

async function dropTestDatabases(client: pg.Client): Promise<void> {
  const { rows } = await client.query<{ datname: string }>('SELECT datname FROM pg_database WHERE datname LIKE $1', [
    TEST_DATABASE_PATTERN,
  ]);
  for (const { datname } of rows) {
    await client.query(`DROP DATABASE IF EXISTS ${quoteIdentifier(datname)} WITH (FORCE)`);
  }
}

/** (Re)creates the template from the migrations of this checkout. */
async function prepareTemplate(adminUrl: string): Promise<void> {
  const template = quoteIdentifier(TEMPLATE_DATABASE);
  await withAdmin(adminUrl, async (client) => {
    await dropTestDatabases(client);
    const exists = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [TEMPLATE_DATABASE]);
    if (exists.rowCount) {
      await client.query(`ALTER DATABASE ${template} WITH IS_TEMPLATE false`);
      await client.query(`DROP DATABASE ${template} WITH (FORCE)`);
    }
    await client.query(`CREATE DATABASE ${template}`);
  });
  const templateUrl = new URL(adminUrl);
  templateUrl.pathname = `/${TEMPLATE_DATABASE}`;
  const lines: string[] = [];
  try {
    await applyMigrations(templateUrl.toString(), { log: (line) => lines.push(line) });
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    throw new Error(`applying the migrations to ${TEMPLATE_DATABASE} failed: ${message}\n${lines.join('\n')}`, {
      cause: error,
    });
  }
  await withAdmin(adminUrl, async (client) => {
    // No session may stay in the template (CREATE DATABASE ... TEMPLATE would refuse), nor come later.
    await client.query(`ALTER DATABASE ${template} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false`);
    await client.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1', [
      TEMPLATE_DATABASE,
    ]);
  });
}

async function flushRedis(port: number): Promise<void> {
  const redis = new Redis({
    host: '127.0.0.1',
    port,
    lazyConnect: true,
    connectTimeout: 10_000,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  try {
    await redis.connect();
    await redis.flushall();
  } finally {
    redis.disconnect();
  }
}

async function startServices(): Promise<Services> {
  mkdirSync(LOCAL_ROOT, { recursive: true });
  await cleanUpAbandonedRunDirs();
  const lock = await acquirePidLock(LOCK_FILE);
  const releaseLock = lock.acquired ? lock.release : undefined;
  const localDir = join(LOCAL_ROOT, lock.acquired ? 'test' : `test-run-${process.pid}`);
  if (!lock.acquired) log(`.local/test is used by another test run (pid ${lock.holder}): using ${localDir}`);
  try {
    // A run that crashed may have left them running, on its own ports.
    if (lock.acquired) await stopLocalServices(launcherOptions(localDir));
    const [pgPort, redisPort] = (await freePorts(2)) as [number, number];
    const services = await startLocalServices(
      launcherOptions(localDir, { pgPort, redisPort, redisDatabases: REDIS_DATABASES }),
    );
    await prepareTemplate(services.adminUrl);
    await flushRedis(redisPort);
    const claimsDir = join(localDir, 'redis-claims');
    rmSync(claimsDir, { recursive: true, force: true });
    mkdirSync(claimsDir, { recursive: true });
    const tmpDir = join(localDir, 'tmp');
    removeScratch(tmpDir);
    mkdirSync(tmpDir, { recursive: true });
    const context: TestServicesContext = {
      TEST_PG_ADMIN_URL: services.adminUrl,
      TEST_PG_TEMPLATE: TEMPLATE_DATABASE,
      TEST_REDIS_PORT: redisPort,
      TEST_REDIS_URL: services.redisUrl,
      TEST_REDIS_DATABASES: REDIS_DATABASES,
      TEST_REDIS_CLAIMS_DIR: claimsDir,
      TEST_TMP_DIR: tmpDir,
    };
    // Workers are forked after every globalSetup ran, with a copy of process.env.
    for (const [key, value] of Object.entries(context)) process.env[key] = String(value);
    log(`PostgreSQL on 127.0.0.1:${pgPort}, Redis on 127.0.0.1:${redisPort} (${localDir})`);
    return { localDir, releaseLock, context };
  } catch (error) {
    await stopServices({ localDir, releaseLock }).catch((stopError: unknown) => log(String(stopError)));
    throw error;
  }
}

async function stopServices({
  localDir,
  releaseLock,
  context,
}: Partial<Services> & { localDir: string }): Promise<void> {
  try {
    removeScratch(join(localDir, 'tmp'));
    let ports: LocalServicesOptions = {};
    if (context !== undefined) {
      // Databases that tests did not drop: keep .local/test small.
      await withAdmin(context.TEST_PG_ADMIN_URL, dropTestDatabases).catch((error: unknown) =>
        log(`dropping test databases: ${String(error)}`),
      );
      ports = { pgPort: Number(new URL(context.TEST_PG_ADMIN_URL).port), redisPort: context.TEST_REDIS_PORT };
    }
    await stopLocalServices(launcherOptions(localDir, ports));
  } finally {
    if (releaseLock !== undefined) releaseLock();
    else rmSync(localDir, { recursive: true, force: true });
  }
}

/** A Redis Cluster in the run's folder, on fresh ports (a stale nodes.conf would name others). */
async function startCluster(localDir: string): Promise<string> {
  rmSync(join(localDir, 'redis-cluster'), { recursive: true, force: true });
  const started = Date.now();
  const { redisUrl } = await startLocalRedisCluster(
    launcherOptions(localDir, { redisClusterPorts: await freeClusterPorts(6) }),
  );
  log(`Redis Cluster on ${redisUrl} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  return redisUrl;
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const holder = globalThis as GlobalWithState;
  let state = holder[STATE];
  if (state === undefined) {
    state = { users: 0, services: startServices() };
    holder[STATE] = state;
  }
  const shared = state;
  shared.users += 1;
  let services: Services;
  try {
    services = await shared.services;
  } catch (error) {
    shared.users -= 1;
    if (shared.users === 0 && holder[STATE] === shared) delete holder[STATE];
    throw error;
  }
  const { context } = services;
  let redisUrl = context.TEST_REDIS_URL;
  if (project.name === CLUSTER_PROJECT) {
    try {
      redisUrl = await (shared.cluster ??= startCluster(services.localDir));
    } catch (error) {
      shared.users -= 1;
      if (shared.users === 0 && holder[STATE] === shared) {
        delete holder[STATE];
        await stopServices(services);
      }
      throw error;
    }
  }
  project.provide('TEST_REDIS_MODE', project.name === CLUSTER_PROJECT ? 'cluster' : 'single');
  project.provide('TEST_PG_ADMIN_URL', context.TEST_PG_ADMIN_URL);
  project.provide('TEST_PG_TEMPLATE', context.TEST_PG_TEMPLATE);
  project.provide('TEST_REDIS_PORT', context.TEST_REDIS_PORT);
  project.provide('TEST_REDIS_URL', redisUrl);
  project.provide('TEST_REDIS_DATABASES', context.TEST_REDIS_DATABASES);
  project.provide('TEST_REDIS_CLAIMS_DIR', context.TEST_REDIS_CLAIMS_DIR);
  project.provide('TEST_TMP_DIR', context.TEST_TMP_DIR);

  let tornDown = false;
  return async () => {
    if (tornDown) return;
    tornDown = true;
    shared.users -= 1;
    if (shared.users > 0) return;
    if (holder[STATE] === shared) delete holder[STATE];
    await stopServices(services);
  };
}
