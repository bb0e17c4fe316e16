// `npm run bench`: measures the built service against a bare Socket.IO relay on this machine.
//
//   npm run bench                                   every scenario but soak (a few minutes)
//   npm run bench -- --scenario soak                mixed load for 5 minutes, the service's memory sampled
//   npm run bench -- --scenario two-instances       one instance against two sharing PostgreSQL and Redis
//   npm run bench -- --scenario throughput          one scenario (repeat or comma-separate for more)
//   npm run bench -- --quick                        smaller counts, a smoke run (about a minute)
//   npm run bench -- --scenario throughput --cpu-prof   also profile the service while measuring
//
// It starts its own PostgreSQL and Redis (scripts/local-services.mjs, data in .local/bench,
// ports BENCH_PG_PORT/BENCH_REDIS_PORT, default 55491/56491; synchronous_commit stays on),
// empties them, builds the service (npm run build) and runs dist/main.js with
// NODE_ENV=production and secrets generated for the run, starts bench/bare-relay.mjs, and
// drives both from forked socket.io-client processes (bench/load-worker.mjs) over loopback;
// the `client` scenario drives the service through the client SDK (bench/client-worker.mjs),
// the `soak` scenario through its own mixed load (bench/soak-worker.mjs); `two-instances`
// starts a second instance of the service beside the first (bench/instances-scenario.mjs).
// It prints a table and writes bench/results.json. Everything it started is stopped at the
// end, also on an error or Ctrl-C (--keep-services leaves PostgreSQL and Redis running).
import { fork, spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import { Redis } from 'ioredis';
import { SignJWT } from 'jose';
import pg from 'pg';

import { acquirePidLock, freePort, startLocalServices, stopLocalServices } from '../scripts/local-services.mjs';
import { SERVICE_NODE_FLAGS } from '../scripts/node-flags.mjs';
import { attachProfiler } from './lib/inspector.mjs';
import {
  CpuMeter,
  LoadWorker,
  childPids,
  sleep,
  stopAllChildren,
  stopChild,
  track,
  trackedNames,
} from './lib/processes.mjs';
import { formatCpu, formatInstances, formatSoak, formatTable, rowsOf } from './lib/report.mjs';
import { formatProfile, summarizeProfile } from './profile-summary.mjs';
import * as scenarioRunners from './scenarios.mjs';
import { OPT_IN_SCENARIOS, SCENARIOS, settingsFor } from './scenarios.mjs';

const ROOT = join(import.meta.dirname, '..');
const LOCAL_DIR = join(ROOT, '.local', 'bench');
const PG_PORT = Number(process.env.BENCH_PG_PORT ?? '55491');
const REDIS_PORT = Number(process.env.BENCH_REDIS_PORT ?? '56491');
const SERVICE_LOG = join(LOCAL_DIR, 'service.log');
/** The log of the n-th instance (n ≥ 2) a scenario starts beside the first. */
const extraServiceLog = (n) => join(LOCAL_DIR, `service-${n}.log`);
const PROFILE_DIR = join(LOCAL_DIR, 'profile');

const USAGE = `usage: npm run bench -- [options]
  --scenario <name>   run only these (repeat or comma-separate): ${SCENARIOS.join(', ')}
                      (without --scenario: all but ${[...OPT_IN_SCENARIOS].join(', ')}, which runs only when named)
  --quick             smaller counts and shorter runs (smoke run; the soak lasts 30 s)
  --workers <n>       load-generator processes for the message scenarios (default 2)
  --latency-rate <n>  the latency scenario's offered rate in msg/s (default 1000)
  --soak-seconds <n>  how long the soak scenario's load runs (default 300, 30 with --quick)
  --cpu-prof          profile the service and the bare relay (V8 sampling profiler over --inspect on
                      loopback) during each measured run; summaries printed, profiles in
                      .local/bench/profile/ (the relay's as <scenario>.bare.cpuprofile)
  --no-build          use the existing dist/ instead of running npm run build
  --keep-services     leave the bench PostgreSQL and Redis running afterwards
  --log-level <level> the service's LOG_LEVEL (default info, as in production)
  --out <file>        where to write the results (default bench/results.json)`;

const { values: options } = parseArgs({
  options: {
    scenario: { type: 'string', multiple: true },
    quick: { type: 'boolean', default: false },
    workers: { type: 'string', default: '2' },
    'latency-rate': { type: 'string', default: '1000' },
    'soak-seconds': { type: 'string' },
    'cpu-prof': { type: 'boolean', default: false },
    'no-build': { type: 'boolean', default: false },
    'keep-services': { type: 'boolean', default: false },
    'log-level': { type: 'string', default: 'info' },
    out: { type: 'string', default: join(ROOT, 'bench', 'results.json') },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (options.help) {
  process.stdout.write(`${USAGE}\n`);
  process.exit(0);
}
const selected = (options.scenario ?? SCENARIOS.filter((name) => !OPT_IN_SCENARIOS.has(name)))
  .flatMap((value) => value.split(','))
  .map((value) => value.trim());
for (const name of selected) {
  if (!SCENARIOS.includes(name)) {
    process.stderr.write(`unknown scenario "${name}"\n${USAGE}\n`);
    process.exit(2);
  }
}
const scenarios = SCENARIOS.filter((name) => selected.includes(name));
// Scenarios with no bare-relay run: the relay has no offline queue, the SDK speaks only the service's
// protocol, and the soak watches the service's own memory.
const SERVICE_ONLY = new Set(['drain', 'client', 'soak', 'two-instances']);
const messageWorkerCount = Math.max(1, Number.parseInt(options.workers, 10) || 2);

const log = (line) => process.stderr.write(`[bench] ${line}\n`);
// A closed pipe (`npm run bench | head`) must not end the run before its cleanup.
process.stdout.on('error', () => undefined);
process.stderr.on('error', () => undefined);

// ------------------------------------------------------------------------------ helpers

/** Runs a command to completion (tracked, so Ctrl-C stops it too); resolves its stdout. */
function run(command, args, { env = process.env, quiet = false } = {}) {
  return new Promise((resolve, reject) => {
    const child = track(
      `${command} ${args.join(' ')}`,
      spawn(command, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', quiet ? 'pipe' : 'inherit'] }),
    );
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => (stdout += chunk));
    child.stderr?.on('data', (chunk) => (stderr += chunk));
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      if (code === 0) resolve(stdout);
      else reject(new Error(`${command} ${args.join(' ')} failed (${code ?? signal})\n${stdout}${stderr}`.trim()));
    });
  });
}

function tail(file, lines = 30) {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

function packageVersion(name) {
  try {
    return JSON.parse(readFileSync(join(ROOT, 'node_modules', name, 'package.json'), 'utf8')).version;
  } catch {
    return null;
  }
}

function git(...args) {
  const result = spawnSync('git', args, { cwd: ROOT, encoding: 'utf8' });
  return result.status === 0 ? result.stdout.trim() : null;
}

/** A short digest of the built service that ran (every .js file under dist/), to tell builds of a dirty tree apart. */
function distDigest() {
  const hash = createHash('sha256');
  const walk = (dir) => {
    for (const entry of readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (entry.name.endsWith('.js')) hash.update(path.slice(ROOT.length)).update(readFileSync(path));
    }
  };
  try {
    walk(join(ROOT, 'dist'));
    return hash.digest('hex').slice(0, 12);
  } catch {
    return null;
  }
}

function openFilesLimit() {
  try {
    const match = /^Max open files\s+(\d+)\s+(\d+)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    return match ? { soft: Number(match[1]), hard: Number(match[2]) } : null;
  } catch {
    return null;
  }
}

// ----------------------------------------------------------------- services and processes

const servicesOptions = {
  localDir: LOCAL_DIR,
  pgPort: PG_PORT,
  redisPort: REDIS_PORT,
  log: (line) => log(`services: ${line}`),
};
let servicesStarted = false;

/** The bench's PostgreSQL and Redis: { databaseUrl, redisUrl, postmasterPid, redisPid, … }. */
async function startBenchServices() {
  log(`starting PostgreSQL (:${PG_PORT}) and Redis (:${REDIS_PORT}) in ${LOCAL_DIR}`);
  servicesStarted = true;
  return startLocalServices(servicesOptions);
}

async function stopBenchServices() {
  if (!servicesStarted || options['keep-services']) return;
  servicesStarted = false;
  log('stopping PostgreSQL and Redis');
  try {
    await stopLocalServices({ ...servicesOptions, log: () => undefined });
  } catch (error) {
    log(`stopping the local services failed: ${error.message}`);
  }
}

/** Drops and recreates the database, empties Redis; returns the settings worth recording. */
async function freshStores(urls) {
  const databaseName = new URL(urls.DATABASE_URL).pathname.slice(1);
  const admin = new URL(urls.DATABASE_URL);
  admin.pathname = '/postgres';
  const client = new pg.Client({ connectionString: admin.toString() });
  await client.connect();
  let postgres;
  try {
    await client.query(`DROP DATABASE IF EXISTS "${databaseName}" WITH (FORCE)`);
    await client.query(`CREATE DATABASE "${databaseName}"`);
    const setting = async (name) => (await client.query(`SHOW ${name}`)).rows[0][name];
    postgres = {
      version: await setting('server_version'),
      synchronous_commit: await setting('synchronous_commit'),
      fsync: await setting('fsync'),
      shared_buffers: await setting('shared_buffers'),
      max_connections: await setting('max_connections'),
    };
  } finally {
    await client.end();
  }
  const redis = new Redis(urls.REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1 });
  await redis.connect();
  let redisInfo;
  try {
    await redis.flushall();
    const info = await redis.info('server');
    const [, appendonly] = await redis.config('GET', 'appendonly');
    const [, appendfsync] = await redis.config('GET', 'appendfsync');
    redisInfo = { version: /redis_version:(\S+)/.exec(info)?.[1] ?? null, appendonly, appendfsync };
  } finally {
    redis.disconnect();
  }
  return { postgres, redis: redisInfo };
}

/**
 * Counters of the work the service asks of its stores, read in an instant: PostgreSQL write
 * transactions (transaction ids handed out; each probe takes one itself) and WAL bytes,
 * and the commands Redis processed and the bytes it read and wrote on its connections
 * (pub/sub deliveries to subscribers count as written bytes, not commands; each probe's
 * INFO reply adds about 2 KB). (pg_stat_database would count reads too, but a backend may
 * publish its statistics up to 10 s late.)
 */
async function storeCounters(urls) {
  const admin = new URL(urls.DATABASE_URL);
  admin.pathname = '/postgres';
  const client = new pg.Client({ connectionString: admin.toString() });
  client.on('error', () => undefined);
  await client.connect();
  const redis = new Redis(urls.REDIS_URL, { maxRetriesPerRequest: 1 });
  redis.on('error', () => undefined);
  const wal0 = (await client.query('SELECT pg_current_wal_lsn() AS lsn')).rows[0].lsn;
  return {
    async counters() {
      const { rows } = await client.query(
        `SELECT pg_current_xact_id()::text::bigint AS xid, pg_wal_lsn_diff(pg_current_wal_lsn(), $1) AS wal`,
        [wal0],
      );
      const info = await redis.info('stats');
      const stat = (name) => Number(new RegExp(`^${name}:(\\d+)`, 'm').exec(info)?.[1] ?? 0);
      return {
        pgWriteTransactions: Number(rows[0].xid),
        pgWalBytes: Number(rows[0].wal),
        redisCommands: stat('total_commands_processed'),
        redisNetInputBytes: stat('total_net_input_bytes'),
        redisNetOutputBytes: stat('total_net_output_bytes'),
      };
    },
    /** Calls per Redis command so far (INFO commandstats; commands run by scripts included). */
    async redisCommandCalls() {
      const info = await redis.info('commandstats');
      return Object.fromEntries(
        [...info.matchAll(/^cmdstat_(\S+?):calls=(\d+)/gm)].map(([, command, calls]) => [command, Number(calls)]),
      );
    },
    /**
     * Between scenarios: vacuum and analyze the service's database and write a checkpoint,
     * so one scenario's dead rows and dirty pages are not cleaned up during the next one's
     * measurement (autovacuum and checkpoints run in production too, spread over time).
     */
    async tidy() {
      const db = new pg.Client({ connectionString: urls.DATABASE_URL });
      db.on('error', () => undefined);
      try {
        await db.connect();
        await db.query('VACUUM (ANALYZE)');
      } finally {
        await db.end().catch(() => undefined);
      }
      await client.query('CHECKPOINT');
    },
    async close() {
      await client.end().catch(() => undefined);
      redis.disconnect();
    },
  };
}

/**
 * Starts the bare relay; with --cpu-prof its inspector is open too, so that the same
 * runs profile both and the README's breakdown can set each component beside the relay's.
 */
async function startBareRelay() {
  const inspectPort = options['cpu-prof'] && !process.env.BENCH_HEAP_PROF ? await freePort() : null;
  const execArgv = inspectPort ? [`--inspect=127.0.0.1:${inspectPort}`] : [];
  const child = track(
    'bare relay',
    fork(join(ROOT, 'bench', 'bare-relay.mjs'), [], { execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }),
  );
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the bare relay did not start within 15 s')), 15_000);
    child.once('exit', (code) => reject(new Error(`the bare relay exited (${code}) while starting`)));
    child.on('message', (message) => {
      if (message?.type === 'listening') {
        clearTimeout(timer);
        resolve(message.port);
      }
    });
  });
  const profiler = inspectPort ? await attachProfiler(inspectPort) : null;
  return { child, pid: child.pid, url: `http://127.0.0.1:${port}`, profiler };
}

/**
 * Starts one instance of the service on a free port, logging to `logFile`; `profile`
 * opens its inspector for --cpu-prof. A second instance (the two-instances scenario)
 * shares the stores and the secrets: only the port and the log differ.
 */
async function startService(urls, secrets, { logFile = SERVICE_LOG, profile = options['cpu-prof'] } = {}) {
  const port = await freePort();
  const env = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    NODE_ENV: 'production',
    HOST: '127.0.0.1',
    PORT: String(port),
    DATABASE_URL: urls.DATABASE_URL,
    REDIS_URL: urls.REDIS_URL,
    JWT_SECRET: secrets.jwtSecret,
    ENCRYPTION_KEYS: secrets.encryptionKeys,
    LOG_LEVEL: options['log-level'],
    MIGRATE_ON_START: 'true',
    // Every load socket comes from 127.0.0.1: the per-address cap (default 2,000) would
    // refuse the connections scenario's 10,000 as `rate_limited`. The per-user cap stays:
    // each bench socket is a user of its own.
    MAX_CONNECTIONS_PER_IP: '0',
  };
  // BENCH_SERVICE_NODE_FLAGS: extra Node flags for the service (e.g. --trace-gc; output in the service log).
  const args = [
    ...SERVICE_NODE_FLAGS, // as in production (npm start, start:prod, the Dockerfile)
    ...(process.env.BENCH_SERVICE_NODE_FLAGS ?? '').split(/\s+/).filter(Boolean),
    join(ROOT, 'dist', 'main.js'),
  ];
  const inspectPort = profile ? await freePort() : null;
  if (inspectPort) {
    rmSync(PROFILE_DIR, { recursive: true, force: true });
    mkdirSync(PROFILE_DIR, { recursive: true });
    args.unshift(`--inspect=127.0.0.1:${inspectPort}`);
  }
  const logFd = openSync(logFile, 'w');
  const child = track(
    logFile === SERVICE_LOG ? 'service' : `service (${logFile})`,
    spawn(process.execPath, args, { cwd: ROOT, env, stdio: ['ignore', logFd, logFd] }),
  );
  closeSync(logFd);
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 90_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`the service exited (${child.exitCode ?? child.signalCode}) while starting:\n${tail(logFile)}`);
    }
    try {
      const response = await fetch(`${url}/health/ready`, { signal: AbortSignal.timeout(2_000) });
      if (response.status === 200) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`the service was not ready within 90 s:\n${tail(logFile)}`);
    await sleep(200);
  }
  const profiler = inspectPort ? await attachProfiler(inspectPort) : null;
  return { child, pid: child.pid, url, port, profiler };
}

// ------------------------------------------------------------------------------- lock

// One bench at a time per machine: runs share LOCAL_DIR, the ports and dist/, and one run's
// cleanup would stop the other's PostgreSQL and Redis.
const LOCK_FILE = join(LOCAL_DIR, 'bench.lock');
let releaseLock = () => undefined;

async function takeLock() {
  const lock = await acquirePidLock(LOCK_FILE);
  if (!lock.acquired)
    throw new Error(`another bench run (pid ${lock.holder}) is using ${LOCAL_DIR}: wait for it to end`);
  releaseLock = lock.release;
}

// ---------------------------------------------------------------------------- cleanup

let cleaning = null;
function cleanup() {
  cleaning ??= (async () => {
    const names = trackedNames();
    if (names.length > 0) log(`stopping ${names.join(', ')}`);
    await stopAllChildren();
    await stopBenchServices();
    releaseLock();
  })();
  return cleaning;
}

for (const [signal, code] of [
  ['SIGINT', 130],
  ['SIGTERM', 143],
  ['SIGHUP', 129],
]) {
  process.on(signal, () => {
    if (cleaning) {
      log(`${signal} again: still stopping what the bench started`);
      return;
    }
    log(`${signal}: stopping everything the bench started`);
    cleanup().finally(() => process.exit(code));
  });
}
process.on('uncaughtException', (error) => {
  log(`unexpected error: ${error.stack ?? error}`);
  cleanup().finally(() => process.exit(1));
});
process.on('unhandledRejection', (error) => {
  log(`unexpected rejection: ${error?.stack ?? error}`);
  cleanup().finally(() => process.exit(1));
});

// ------------------------------------------------------------------------------- main

async function main() {
  const startedAt = new Date();
  const settings = settingsFor(options.quick);
  const latencyRate = Number(options['latency-rate']);
  if (!Number.isFinite(latencyRate) || latencyRate <= 0) throw new Error('--latency-rate must be a positive number');
  settings.latency.ratePerSecond = latencyRate;
  if (options['soak-seconds'] !== undefined) {
    const seconds = Number(options['soak-seconds']);
    if (!Number.isFinite(seconds) || seconds < 10)
      throw new Error('--soak-seconds must be a number of seconds, at least 10');
    settings.soak.durationMs = Math.round(seconds * 1000);
  }
  await takeLock();
  log(`scenarios: ${scenarios.join(', ')}${options.quick ? ' (quick)' : ''}`);

  if (!options['no-build']) {
    log('building the service (npm run build)');
    try {
      await run(process.execPath, [
        join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'),
        '-p',
        'tsconfig.build.json',
      ]);
      // The offline queue's Lua scripts ship beside the compiled code.
      await run(process.execPath, [join(ROOT, 'scripts', 'copy-lua.mjs')]);
    } catch (error) {
      throw new Error(`the build failed (use --no-build to bench the existing dist/):\n${error.message}`, {
        cause: error,
      });
    }
  }
  if (!existsSync(join(ROOT, 'dist', 'main.js'))) throw new Error('dist/main.js is missing: run npm run build');

  const builtDigest = distDigest();
  const services = await startBenchServices();
  const urls = { DATABASE_URL: services.databaseUrl, REDIS_URL: services.redisUrl };
  const storeSettings = await freshStores(urls);
  const secrets = {
    jwtSecret: randomBytes(48).toString('base64'),
    encryptionKeys: `1:${randomBytes(32).toString('base64')}`,
  };
  const stores = await storeCounters(urls);
  const needsBare = scenarios.some((name) => !SERVICE_ONLY.has(name));
  const bare = needsBare ? await startBareRelay() : null;
  log('starting the service (dist/main.js, NODE_ENV=production)');
  const service = await startService(urls, secrets);
  log(`service on ${service.url} (pid ${service.pid})${bare ? `, bare relay on ${bare.url} (pid ${bare.pid})` : ''}`);

  const workerCount = Math.max(
    messageWorkerCount,
    scenarios.includes('connections') ? settings.connections.workers : 0,
  );
  const workers = await Promise.all(
    Array.from({ length: workerCount }, (_, i) => LoadWorker.start(join(ROOT, 'bench', 'load-worker.mjs'), i)),
  );

  /** Load processes a scenario starts itself (ctx.startLoadWorker), counted as load while they run. */
  const scenarioWorkerPids = new Set();
  /** Further instances while the two-instances scenario runs them (ctx.startExtraService): service2, service3, … */
  const extras = [];
  const { postmasterPid, redisPid } = services;
  const cpu = new CpuMeter(() => ({
    service: [service.pid],
    ...Object.fromEntries(extras.map((extra, i) => [`service${i + 2}`, [extra.pid]])),
    bare: bare ? [bare.pid] : [],
    postgres: postmasterPid ? [postmasterPid, ...childPids(postmasterPid)] : [],
    redis: redisPid ? [redisPid] : [],
    load: [...workers.map((worker) => worker.pid), ...scenarioWorkerPids],
  }));
  const jwtKey = new TextEncoder().encode(secrets.jwtSecret);
  const profiles = {};

  /**
   * The service's own request timing (socket_request_duration_seconds of /metrics): per
   * event, the sum of seconds and the count, from the request's arrival to its reply.
   * Also its event-loop delay p99 and max (`loop:p99`, `loop:max`, seconds) since the
   * previous scrape: prom-client resets that histogram on every scrape, so the scrape at
   * the start of a measured run leaves the one at its end with the run alone.
   */
  async function handlerTimes() {
    const times = {};
    try {
      const text = await (await fetch(`${service.url}/metrics`, { signal: AbortSignal.timeout(5_000) })).text();
      const pattern = /^socket_request_duration_seconds_(sum|count)\{([^}]*)\} (\S+)$/gm;
      for (const [, kind, labels, value] of text.matchAll(pattern)) {
        const event = /event="([^"]*)"/.exec(labels)?.[1];
        if (!event) continue;
        const key = `${event}:${kind}`;
        times[key] = (times[key] ?? 0) + Number(value);
      }
      for (const [, kind, value] of text.matchAll(/^nodejs_eventloop_lag_(p99|max)_seconds (\S+)$/gm)) {
        times[`loop:${kind}`] = Number(value);
      }
    } catch {
      // no metrics: the figure is left out
    }
    return times;
  }

  const ctx = {
    settings,
    runId: randomBytes(3).toString('hex'),
    cpu,
    log,
    /** Forks a load process of the scenario's own (stopped by the scenario, or by the cleanup). */
    async startLoadWorker(script, name, options) {
      const worker = await LoadWorker.start(script, name, options);
      scenarioWorkerPids.add(worker.pid);
      worker.child.once('exit', () => scenarioWorkerPids.delete(worker.pid));
      return worker;
    },
    messageWorkers: () => workers.slice(0, messageWorkerCount),
    connectionWorkers: () => workers.slice(0, settings.connections.workers),
    target: (kind) =>
      kind === 'service'
        ? { kind: 'service', url: service.url, secret: secrets.jwtSecret }
        : { kind: 'bare', url: bare.url },
    serverPid: (kind) => (kind === 'service' ? service.pid : bare.pid),
    /**
     * Starts one more instance of the service on the same PostgreSQL and Redis (same
     * config, another port; log in .local/bench/service-<n>.log), measured as the CPU group
     * `service<n>` (n = 2, 3, …) until stop(), which the scenario calls, last started first.
     * Resolves { target, pid, stop }.
     */
    async startExtraService() {
      const started = await startService(urls, secrets, {
        logFile: extraServiceLog(extras.length + 2),
        profile: false,
      });
      extras.push(started);
      return {
        target: { kind: 'service', url: started.url, secret: secrets.jwtSecret },
        pid: started.pid,
        stop: async () => {
          await stopChild(started.child, { graceMs: 15_000 });
          extras.splice(extras.indexOf(started), 1);
        },
      };
    },
    /** Calls per Redis command so far (INFO commandstats). */
    redisCommandCalls: () => stores.redisCommandCalls(),
    /** The service's V8 heap in use (its /metrics), null for the bare relay. */
    heapUsedBytes: async (kind, { collect = false } = {}) => {
      if (kind !== 'service') return null;
      if (collect) {
        if (!service.profiler?.collectGarbage) return null;
        await service.profiler.collectGarbage();
      }
      const text = await (await fetch(`${service.url}/metrics`)).text();
      const match = /^nodejs_heap_size_used_bytes (\d+(?:\.\d+)?)/m.exec(text);
      return match ? Number(match[1]) : null;
    },
    /**
     * Starts measuring a run: CPU of every process group; for the service also the work it
     * asked of PostgreSQL and Redis, and its CPU profile (--cpu-prof).
     */
    async begin(kind) {
      const counters = kind === 'service' ? { ...(await stores.counters()), ...(await handlerTimes()) } : null;
      const profiler = (kind === 'service' ? service.profiler : kind === 'bare' ? bare?.profiler : null) ?? null;
      if (profiler) await profiler.start();
      return { cpu: cpu.snapshot(), profiler, kind, counters };
    },
    /** Ends it: returns { cpu, store } (store: null for the bare relay); keeps the profile under `name`. */
    async end(measuring, name) {
      const used = cpu.since(measuring.cpu);
      if (measuring.profiler) {
        const profile = await measuring.profiler.stop();
        // The relay's profile of a scenario sits beside the service's: `throughput (bare relay)`.
        const key = measuring.kind === 'bare' ? `${name} (bare relay)` : name;
        const fileName = measuring.kind === 'bare' ? `${name}.bare` : name;
        if (process.env.BENCH_HEAP_PROF) {
          writeFileSync(join(PROFILE_DIR, `${fileName}.heapprofile`), JSON.stringify(profile));
        } else {
          const file = join(PROFILE_DIR, `${fileName}.cpuprofile`);
          writeFileSync(file, JSON.stringify(profile));
          profiles[key] = { file, ...summarizeProfile(profile), bare: measuring.kind === 'bare' };
        }
      }
      let store = null;
      if (measuring.counters) {
        const now = await stores.counters();
        store = Object.fromEntries(Object.keys(now).map((key) => [key, now[key] - measuring.counters[key]]));
        store.pgWriteTransactions -= 1; // the probe's own
        const handlers = await handlerTimes();
        used.serverHandlerMeanMs = Object.fromEntries(
          Object.keys(handlers)
            .filter((key) => key.endsWith(':count'))
            .map((key) => key.slice(0, -':count'.length))
            .map((event) => {
              const count = handlers[`${event}:count`] - (measuring.counters[`${event}:count`] ?? 0);
              const seconds = handlers[`${event}:sum`] - (measuring.counters[`${event}:sum`] ?? 0);
              return [event, count > 0 ? Math.round((seconds / count) * 1e6) / 1e3 : null];
            })
            .filter(([, value]) => value !== null),
        );
        if (handlers['loop:p99'] !== undefined) {
          used.serverLoopDelayMs = {
            p99: Math.round(handlers['loop:p99'] * 1e4) / 10,
            max: Math.round(handlers['loop:max'] * 1e4) / 10,
          };
        }
      }
      return { ...used, store };
    },
    async createConversation(creatorId, body) {
      const token = await new SignJWT({})
        .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
        .setSubject(creatorId)
        .setExpirationTime(Math.floor(Date.now() / 1000) + 3600)
        .sign(jwtKey);
      const response = await fetch(`${service.url}/v1/conversations`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
      const reply = await response.json().catch(() => null);
      if (response.status !== 201 && response.status !== 200) {
        throw new Error(`POST /v1/conversations answered ${response.status}: ${JSON.stringify(reply)}`);
      }
      return reply.data.id;
    },
    /** Waits (at most 15 s) until the servers are idle, so one run does not bleed into the next. */
    /** Waits (bounded) until the servers and the stores are idle. */
    async settle() {
      const deadline = Date.now() + 15_000;
      while (Date.now() < deadline) {
        const start = cpu.snapshot();
        await sleep(300);
        const { cores } = cpu.since(start);
        if (
          cores.service < 0.1 &&
          (cores.service2 ?? 0) < 0.1 &&
          (cores.service3 ?? 0) < 0.1 &&
          (cores.bare ?? 0) < 0.1 &&
          (cores.postgres ?? 0) < 0.1 &&
          (cores.redis ?? 0) < 0.1
        ) {
          return;
        }
      }
    },
  };

  const results = {};
  for (const name of scenarios) {
    const entry = { settings: settings[name] };
    results[name] = entry;
    for (const kind of SERVICE_ONLY.has(name) ? ['service'] : ['bare', 'service']) {
      if (cleaning) return 130; // interrupted: the signal handler is stopping everything
      if (service.child.exitCode !== null || service.child.signalCode !== null) {
        throw new Error(
          `the service exited (${service.child.exitCode ?? service.child.signalCode}):\n${tail(SERVICE_LOG)}`,
        );
      }
      log(`${name} / ${kind === 'bare' ? 'bare relay' : 'service'}…`);
      try {
        const runner = scenarioRunners[name.replace(/-(\w)/g, (_, letter) => letter.toUpperCase())];
        entry[kind] = name === 'drain' ? await scenarioRunners.drain(ctx) : await runner(ctx, kind);
        log(`${name} / ${kind}: ${headline(name, entry[kind])}`);
      } catch (error) {
        if (cleaning) return 130;
        entry[kind] = { error: error.message };
        log(`${name} / ${kind} failed: ${error.message}`);
      }
      await stores.tidy().catch((error) => log(`could not vacuum and checkpoint between scenarios: ${error.message}`));
      await ctx.settle();
    }
  }

  // The 1-minute figure at the end mostly covers the run itself (this machine is shared).
  const loadAtEnd = os.loadavg();
  service.profiler?.close();
  bare?.profiler?.close();
  await stores.close();
  await Promise.allSettled(workers.map((worker) => worker.stop()));
  await stopChild(bare?.child);
  await stopChild(service.child, { graceMs: 15_000 });

  const report = {
    timestamp: startedAt.toISOString(),
    durationSeconds: Math.round((Date.now() - startedAt.getTime()) / 1000),
    quick: options.quick,
    scenarios,
    machine: {
      cpus: os.cpus().length,
      cpuModel: os.cpus()[0]?.model ?? null,
      memoryBytes: os.totalmem(),
      loadAverageAtStart: loadAtStart,
      loadAverageAtEnd: loadAtEnd,
      platform: `${os.type()} ${os.release()} ${os.arch()}`,
      node: process.version,
      openFiles: openFilesLimit(),
    },
    versions: {
      service: JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version,
      gitCommit: git('rev-parse', 'HEAD'),
      gitDirty: (git('status', '--porcelain', '--untracked-files=no') ?? '') !== '',
      build: options['no-build'] ? 'existing dist/' : 'npm run build',
      distDigest: builtDigest,
      ...Object.fromEntries(
        [
          'socket.io',
          'socket.io-client',
          'engine.io',
          'ws',
          '@nestjs/core',
          '@nestjs/platform-socket.io',
          '@socket.io/redis-adapter',
          '@prisma/client',
          '@prisma/adapter-pg',
          'pg',
          'ioredis',
          'jose',
          'libsodium-wrappers',
        ].map((name) => [name, packageVersion(name)]),
      ),
      ...storeSettings,
    },
    settings: {
      loadWorkers: messageWorkerCount,
      transport: 'websocket',
      serviceEnv: { NODE_ENV: 'production', LOG_LEVEL: options['log-level'], limits: 'defaults' },
      cpuProfile: options['cpu-prof'],
      ...settings,
    },
    results,
    profiles,
  };
  writeFileSync(options.out, `${JSON.stringify(report, null, 2)}\n`);

  const out = [];
  out.push('');
  out.push(
    `messaging-service bench — ${report.timestamp}, ${report.machine.cpus} CPUs, ${Math.round(report.machine.memoryBytes / 2 ** 30)} GiB, Node ${process.version}, load average at start ${loadAtStart.map((v) => v.toFixed(2)).join(' ')}, at end ${loadAtEnd.map((v) => v.toFixed(2)).join(' ')}${options.quick ? ', QUICK (reduced counts)' : ''}`,
  );
  const rows = rowsOf(results);
  if (rows.length > 0) {
    out.push('ratio = service ÷ bare relay (same run, same load generator). Targets are reported, not asserted.');
    out.push('');
    out.push(formatTable(rows));
  }
  const failures = Object.entries(results).flatMap(([name, entry]) =>
    ['bare', 'service'].filter((kind) => entry[kind]?.error).map((kind) => `${name} / ${kind}: ${entry[kind].error}`),
  );
  if (failures.length > 0) out.push('', 'FAILED:', ...failures.map((line) => `  ${line}`));
  const soakText = formatSoak(results.soak);
  if (soakText) out.push('', soakText);
  const instancesText = formatInstances(results['two-instances']);
  if (instancesText) out.push('', instancesText);
  const cpuText = formatCpu(results);
  if (cpuText) out.push('', cpuText);
  for (const [name, profile] of Object.entries(profiles)) {
    const title = profile.bare
      ? `CPU profile of the bare relay during ${name.replace(/ \(bare relay\)$/, '')}`
      : `CPU profile of the service during ${name}`;
    out.push('', formatProfile(profile, title), `  (${profile.file})`);
  }
  out.push(
    '',
    `results: ${options.out}; service log: ${SERVICE_LOG}${results['two-instances'] ? ` (the others: ${extraServiceLog('<n>')})` : ''}`,
  );
  process.stdout.write(`${out.join('\n')}\n`);
  return failures.length > 0 ? 1 : 0;
}

function headline(name, result) {
  switch (name) {
    case 'throughput':
      return `${result.perSecond.completed.toLocaleString('en-US')} msg/s completed (errors ${result.errors.count})`;
    case 'latency':
      return `p50 ${result.deliveryMs.p50} ms, p99 ${result.deliveryMs.p99} ms at ${result.achievedPerSecond} msg/s`;
    case 'connections':
      return `${result.opened} open, ${result.connectsPerSecond} connects/s (known devices again: ${result.reconnectsPerSecond}/s), ${result.rssPerConnectionKiB} KB RSS each; CPU ms per connect ${JSON.stringify(result.cpuMsPerConnect)}, per reconnect ${JSON.stringify(result.cpuMsPerReconnect)}`;
    case 'drain':
      return `${result.received}/${result.count} drained in ${result.drainSeconds} s (${result.pages} pages)`;
    case 'two-instances':
      return Object.entries(result.variants)
        .map(
          ([variant, v]) =>
            `${variant}: ${v.throughput.perSecond.completed.toLocaleString('en-US')} msg/s, p99 ${v.latency.deliveryMs.p99} ms, ${v.throughput.cpuMsPerMessage.servicesTotal} ms CPU/msg`,
        )
        .join('; ');
    case 'fanout':
      return `${result.deliveriesPerSecond.toLocaleString('en-US')} deliveries/s (${result.messagesPerSecond} msg/s)`;
    case 'client':
      return `connect p50 ${result.connect.ms.p50} ms, reconnect→synced p50 ${result.reconnect.map((run) => `${run.ms.p50} ms (min delay ${run.backoff.minDelayMs})`).join(', ')}, ${result.sends.perSecond} msg/s one client, ${result.heap.heapPerClientKiB} KB heap per client`;
    case 'soak':
      return `${result.storedPerSecond} msg/s stored for ${result.sendingSeconds} s, ${result.reconnects} reconnects, ${result.missing} missing; growth ${Object.entries(
        result.verdicts,
      )
        .map(
          ([key, v]) =>
            `${key} ${v.secondHalfSlopePerMinute}/min ${v.pass === null ? 'too few points' : v.pass ? 'PASS' : 'MISS'}`,
        )
        .join(', ')}`;
    default:
      return '';
  }
}

const loadAtStart = os.loadavg();
let exitCode;
try {
  exitCode = await main();
} catch (error) {
  // Our own errors say what went wrong; anything else keeps its stack.
  log(`failed: ${error?.constructor === Error ? error.message : (error?.stack ?? error)}`);
  exitCode = 1;
} finally {
  await cleanup();
}
process.exit(exitCode);
