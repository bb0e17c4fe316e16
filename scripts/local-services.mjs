// The one launcher of the project-local PostgreSQL and Redis: `npm start`
// (scripts/start.mjs), the test global setup (test/support/global-setup.ts) and the bench
// (bench/run.mjs) all start, find and stop them through this module; its types are in
// local-services.d.mts beside it. Plain JavaScript for Node 20 (start.mjs runs before any
// build step). As a command (`npm run services -- start|stop|status|env|install`):
//
//   node scripts/local-services.mjs start|stop|status|env|install
//
// Settings of the command (environment variables):
//   LOCAL_DIR        data folder        (default: <project root>/.local/dev)
//   PG_PORT          PostgreSQL port    (default: 55432)
//   REDIS_PORT       Redis port         (default: 56379)
//   REDIS_DATABASES  Redis logical dbs  (default: 16)
//   REDIS_MODE       single or cluster  (default: single). cluster: instead of the one Redis,
//                    a Redis Cluster of 3 masters with 1 replica each (data in redis-cluster/),
//                    and REDIS_URL lists the 6 nodes, comma-separated
//   REDIS_CLUSTER_PORTS  its 6 ports   (default: 47001,...,47006; each also uses port+10000)
//   WAIT_SECONDS     how long to wait for a service to answer (default: 30)
//
// start   installs what is missing (scripts/apt-install.sh), starts both (or reuses them
//         when already running), creates the `messaging` database and prints two lines:
//           DATABASE_URL=postgresql://postgres@127.0.0.1:$PG_PORT/messaging
//           REDIS_URL=redis://127.0.0.1:$REDIS_PORT
// stop    stops both (data is kept).
// status  says what runs (exit 0 when both run, 3 otherwise).
// env     prints the two URL lines only.
// install installs what is missing without starting anything (what CI runs first).
//
// Both services listen on 127.0.0.1 only; PostgreSQL trusts every local connection
// (development data only). Progress messages go to stderr. PostgreSQL refuses to run as
// root: as root, its server runs as the `postgres` user.
import { spawn } from 'node:child_process';
import {
  accessSync,
  chmodSync,
  chownSync,
  closeSync,
  constants,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  realpathSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { connect, createServer } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { Redis } from 'ioredis';
import pg from 'pg';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const DEFAULTS = Object.freeze({
  localDir: join(ROOT, '.local', 'dev'),
  pgPort: 55432,
  redisPort: 56379,
  redisDatabases: 16,
  redisMode: 'single',
  redisClusterPorts: Object.freeze([47001, 47002, 47003, 47004, 47005, 47006]),
  waitSeconds: 30,
});
/** Replicas per master of the local Redis Cluster: 3 masters and 3 replicas take 6 ports. */
const REDIS_CLUSTER_REPLICAS = 1;

const PG_USER = 'postgres';
const DATABASE = 'messaging';
const APT_INSTALL = join(ROOT, 'scripts', 'apt-install.sh');
const sleep = (ms) => new Promise((done) => setTimeout(done, ms));
const defaultLog = (line) => process.stderr.write(`[local-services] ${line}\n`);

// ------------------------------------------------------------------ processes and locks

/** Alive and not a zombie (a dead process its parent never reaped still answers kill 0). */
export function processAlive(pid) {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
  } catch (error) {
    if (error.code !== 'EPERM') return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return process.platform !== 'linux';
  }
}

/** The pid on the first line of a pid file, or null. */
export function pidFromFile(file) {
  try {
    const pid = Number(readFileSync(file, 'utf8').split('\n')[0].trim());
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

function commandOf(pid) {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '';
  }
}

function cwdOf(pid) {
  try {
    return readlinkSync(`/proc/${pid}/cwd`);
  } catch {
    return '';
  }
}

/** Lock files this process holds (another caller in this process waits for them, too). */
const locksHeldHere = new Set();

/**
 * Takes the lock `file` (the holder's pid inside), removing it when its holder is gone.
 * With `waitMs`, waits that long for a live holder to let go. Returns a handle whose
 * `release()` removes the file (idempotent), or `{ acquired: false, holder }`.
 */
export async function acquirePidLock(file, { waitMs = 0 } = {}) {
  file = resolve(file);
  mkdirSync(dirname(file), { recursive: true });
  const deadline = Date.now() + waitMs;
  for (;;) {
    try {
      const fd = openSync(file, 'wx');
      writeSync(fd, `${process.pid}\n`);
      closeSync(fd);
      locksHeldHere.add(file);
      let held = true;
      return {
        acquired: true,
        release() {
          if (held && pidFromFile(file) === process.pid) rmSync(file, { force: true });
          if (held) locksHeldHere.delete(file);
          held = false;
        },
      };
    } catch (error) {
      if (error.code !== 'EEXIST') throw error;
    }
    const holder = pidFromFile(file);
    const ours = holder === process.pid && locksHeldHere.has(file);
    if (holder === null || (holder === process.pid && !ours) || (!ours && !processAlive(holder))) {
      // A holder that died, a file half written, or our pid left by an earlier process: stale.
      rmSync(file, { force: true });
      continue;
    }
    if (Date.now() >= deadline) return { acquired: false, holder };
    await sleep(200);
  }
}

/** Binds 127.0.0.1:`port` (0: any) exclusively, then frees it; resolves the port, or undefined if taken. */
function probePort(port) {
  return new Promise((done, fail) => {
    const server = createServer();
    server.unref();
    server.once('error', (error) => {
      if (port !== 0 && (error.code === 'EADDRINUSE' || error.code === 'EACCES')) done(undefined);
      else fail(error);
    });
    server.listen({ port, host: '127.0.0.1', exclusive: true }, () => {
      const { port: bound } = server.address();
      server.close(() => done(bound));
    });
  });
}

/**
 * A TCP port on 127.0.0.1 nothing listened on a moment ago. Prefers a random port below the
 * kernel's ephemeral range, so that outgoing connections (which take their local ports from
 * that range) cannot grab it before the server binds; else one the kernel picks.
 */
export async function freePort() {
  let high = 0;
  try {
    high = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]) - 1;
  } catch {
    // not Linux: let the kernel pick
  }
  const low = 20_000;
  if (Number.isInteger(high) && high - low >= 1_000) {
    for (let attempt = 0; attempt < 20; attempt += 1) {
      const port = await probePort(low + Math.floor(Math.random() * (Math.min(high, 65_535) - low + 1)));
      if (port !== undefined) return port;
    }
  }
  const port = await probePort(0);
  if (port === undefined) throw new Error('no free TCP port on 127.0.0.1');
  return port;
}

/**
 * `count` distinct ports for Redis Cluster nodes: each free with its cluster bus port
 * (port + 10000), both below the kernel's ephemeral range when it leaves room.
 */
export async function freeClusterPorts(count) {
  let high = 55_535;
  try {
    const ephemeralLow = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    if (ephemeralLow - 10_001 - 20_000 >= 1_000) high = Math.min(high, ephemeralLow - 10_001);
  } catch {
    // not Linux: the whole range
  }
  const ports = new Set();
  for (let attempt = 0; ports.size < count; attempt += 1) {
    if (attempt > count * 50) throw new Error(`could not find ${count} free ports for Redis Cluster nodes`);
    const port = 20_000 + Math.floor(Math.random() * (high - 20_000 + 1));
    if (ports.has(port) || ports.has(port + 10_000) || ports.has(port - 10_000)) continue;
    if ((await probePort(port)) !== undefined && (await probePort(port + 10_000)) !== undefined) ports.add(port);
  }
  return [...ports];
}

/** `count` distinct free ports. */
export async function freePorts(count) {
  const ports = new Set();
  for (let attempt = 0; ports.size < count; attempt += 1) {
    if (attempt > count * 10) throw new Error(`could not find ${count} distinct free ports`);
    ports.add(await freePort());
  }
  return [...ports];
}

function tcpPortOpen(port) {
  return new Promise((done) => {
    const socket = connect({ host: '127.0.0.1', port });
    const finish = (open) => {
      socket.destroy();
      done(open);
    };
    socket.setTimeout(1_000, () => finish(false));
    socket.once('connect', () => finish(true));
    socket.once('error', () => finish(false));
  });
}

/** Runs a program to its end; resolves { code, stdout, stderr } (never rejects on exit codes). */
function run(command, args, { cwd = ROOT, stdout = 'pipe', env = process.env } = {}) {
  return new Promise((done, fail) => {
    const child = spawn(command, args, { cwd, env, stdio: ['ignore', stdout, 'pipe'] });
    let out = '';
    let err = '';
    child.stdout?.on('data', (chunk) => (out += chunk));
    child.stderr.on('data', (chunk) => (err += chunk));
    child.once('error', fail);
    child.once('close', (code, signal) => done({ code: code ?? (signal ? 1 : 0), stdout: out, stderr: err }));
  });
}

const isRoot = () => process.getuid?.() === 0;

/** A PostgreSQL server program: as root, run as the postgres user, from / (no access to the caller's folder needed). */
function runAsPg(command, args, options = {}) {
  if (!isRoot()) return run(command, args, options);
  return run('runuser', ['-u', PG_USER, '--', command, ...args], { ...options, cwd: '/' });
}

async function waitUntil(check, seconds) {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    if (await check()) return true;
    if (Date.now() >= deadline) return false;
    await sleep(200);
  }
}

function tail(file, lines = 20) {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

// --------------------------------------------------------------------------- settings

function settle(options = {}) {
  const settings = { ...DEFAULTS, ...Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) };
  settings.localDir = resolve(settings.localDir);
  for (const name of ['pgPort', 'redisPort', 'redisDatabases', 'waitSeconds']) {
    if (!Number.isInteger(settings[name]) || settings[name] < 0) {
      throw new Error(`${name} must be a whole number (got ${String(settings[name])})`);
    }
  }
  for (const name of ['pgPort', 'redisPort']) {
    if (settings[name] < 1 || settings[name] > 65535) throw new Error(`${name} out of range: ${settings[name]}`);
  }
  if (settings.pgPort === settings.redisPort) throw new Error('the PostgreSQL and Redis ports must differ');
  if (!['single', 'cluster'].includes(settings.redisMode)) {
    throw new Error(`redisMode must be single or cluster (got ${String(settings.redisMode)})`);
  }
  const clusterPorts = settings.redisClusterPorts;
  const nodes = 3 * (1 + REDIS_CLUSTER_REPLICAS);
  if (
    !Array.isArray(clusterPorts) ||
    clusterPorts.length !== nodes ||
    new Set(clusterPorts).size !== nodes ||
    !clusterPorts.every((port) => Number.isInteger(port) && port >= 1 && port <= 55535)
  ) {
    throw new Error(`redisClusterPorts must be ${nodes} distinct ports up to 55535 (the cluster bus adds 10000)`);
  }
  const dir = settings.localDir;
  return {
    ...settings,
    log: settings.log ?? defaultLog,
    pgData: join(dir, 'pg'),
    pgSocketDir: join(dir, 'run'),
    pgLog: join(dir, 'postgres.log'),
    redisDir: join(dir, 'redis'),
    redisPidFile: join(dir, 'redis.pid'),
    redisLog: join(dir, 'redis.log'),
    redisClusterDir: join(dir, 'redis-cluster'),
    lockFile: join(dir, '.lock'),
  };
}

/** The URLs of the services of these settings (nothing is started). */
export function localServiceUrls(options = {}) {
  const s = settle(options);
  return {
    databaseUrl: `postgresql://postgres@127.0.0.1:${s.pgPort}/${DATABASE}`,
    adminUrl: `postgresql://postgres@127.0.0.1:${s.pgPort}/postgres`,
    redisUrl:
      s.redisMode === 'cluster'
        ? s.redisClusterPorts.map((port) => `redis://127.0.0.1:${port}`).join(',')
        : `redis://127.0.0.1:${s.redisPort}`,
  };
}

// ----------------------------------------------------------------------- installation

/** The newest /usr/lib/postgresql/<version>/bin holding initdb and pg_ctl, or null. */
function findPgBin() {
  let versions;
  try {
    versions = readdirSync('/usr/lib/postgresql');
  } catch {
    return null;
  }
  const usable = versions
    .map((version) => join('/usr/lib/postgresql', version, 'bin'))
    .filter((bin) =>
      ['initdb', 'pg_ctl', 'postgres'].every((program) => {
        try {
          accessSync(join(bin, program), constants.X_OK);
          return true;
        } catch {
          return false;
        }
      }),
    )
    .sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
  return usable.at(-1) ?? null;
}

async function commandExists(name) {
  return (await run('sh', ['-c', `command -v ${name}`])).code === 0;
}

async function aptInstall(packages, log) {
  log(`installing ${packages.join(' ')} (scripts/apt-install.sh)`);
  const result = await run('bash', [APT_INSTALL, ...packages], { stdout: 'ignore' });
  if (result.stderr) process.stderr.write(result.stderr);
  return result.code === 0;
}

/** Installs redis-server and PostgreSQL's server with apt when missing; returns where they are. */
export async function installLocalServices({ log = defaultLog } = {}) {
  if (!(await commandExists('redis-server'))) {
    log('redis-server not found');
    if (!(await aptInstall(['redis-server'], log)) || !(await commandExists('redis-server'))) {
      throw new Error('redis-server is missing and could not be installed (apt-get install redis-server)');
    }
  }
  let pgBin = findPgBin();
  if (pgBin === null) {
    log('PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin');
    if (!(await aptInstall(['postgresql-15'], log))) await aptInstall(['postgresql'], log);
    pgBin = findPgBin();
    if (pgBin === null) throw new Error('PostgreSQL installed but no binaries under /usr/lib/postgresql/*/bin');
  }
  return { pgBin, redisServer: (await run('sh', ['-c', 'command -v redis-server'])).stdout.trim() };
}

// ------------------------------------------------------------------------- PostgreSQL

/** The postmaster of this data folder when it runs (pid file, live, a postgres, in the folder). */
function pgRunning(s) {
  const file = join(s.pgData, 'postmaster.pid');
  const pid = pidFromFile(file);
  if (pid === null || !processAlive(pid) || !commandOf(pid).startsWith('postgres')) return null;
  let real;
  try {
    real = realpathSync(s.pgData);
  } catch {
    return null;
  }
  if (cwdOf(pid) !== real) return null;
  const port = Number(readFileSync(file, 'utf8').split('\n')[3]?.trim());
  return { pid, port };
}

/** PostgreSQL processes whose working folder is the data folder: ours, or orphans of a killed server. */
function pgProcessesOfDataDir(s) {
  let real;
  try {
    real = realpathSync(s.pgData);
  } catch {
    return [];
  }
  const pids = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (commandOf(pid).startsWith('postgres') && cwdOf(pid) === real) pids.push(pid);
  }
  return pids;
}

/** After a crash (kill -9 of the postmaster) its children may hold the shared memory a moment. */
async function clearStalePg(s) {
  let pids = pgProcessesOfDataDir(s);
  if (pids.length > 0) {
    s.log(`waiting for leftover PostgreSQL processes of a crashed server to exit: ${pids.join(' ')}`);
    await waitUntil(() => pgProcessesOfDataDir(s).length === 0, 5);
    pids = pgProcessesOfDataDir(s);
    for (const signal of ['SIGQUIT', 'SIGKILL']) {
      if (pids.length === 0) break;
      s.log(`sending ${signal} to leftover PostgreSQL processes: ${pids.join(' ')}`);
      for (const pid of pids) {
        try {
          process.kill(pid, signal);
        } catch {
          // gone meanwhile
        }
      }
      await waitUntil(() => pgProcessesOfDataDir(s).length === 0, 5);
      pids = pgProcessesOfDataDir(s);
    }
  }
  const pidFile = join(s.pgData, 'postmaster.pid');
  if (existsSync(pidFile)) {
    s.log(`removing stale ${pidFile} (pid ${pidFromFile(pidFile) ?? '?'} is not running)`);
    rmSync(pidFile, { force: true });
  }
  // The socket folder is ours alone: a crashed server leaves its socket and lock there
  // (PostgreSQL would take the lock's pid, if reused or a zombie, for a live server).
  if (existsSync(s.pgSocketDir)) {
    for (const entry of readdirSync(s.pgSocketDir)) {
      if (entry.startsWith('.s.PGSQL.')) rmSync(join(s.pgSocketDir, entry), { force: true });
    }
  }
}

async function postgresUid() {
  const result = await run('id', ['-u', PG_USER]);
  return result.code === 0 ? Number(result.stdout.trim()) : null;
}

/** As root: the postgres user exists and may reach the data folder. Returns its uid (null: not root). */
async function preparePgUser(s) {
  if (!isRoot()) return null;
  let uid = await postgresUid();
  if (uid === null) {
    s.log(`creating system user ${PG_USER}`);
    const made = await run('useradd', [
      '--system',
      '--no-create-home',
      '--home-dir',
      '/nonexistent',
      '--shell',
      '/usr/sbin/nologin',
      PG_USER,
    ]);
    if (made.code !== 0) throw new Error(`useradd ${PG_USER} failed: ${made.stderr}`);
    uid = await postgresUid();
  }
  // Every ancestor of the folder must grant search (x) permission to the postgres user.
  const reachable = async (dir) => (await runAsPg('test', ['-x', dir])).code === 0;
  if (!(await reachable(s.localDir))) {
    let dir = '';
    for (const part of s.localDir.split('/').filter(Boolean)) {
      dir = `${dir}/${part}`;
      if (!(await reachable(dir))) {
        s.log(`granting search permission (o+x) on ${dir} so that the ${PG_USER} user can reach ${s.localDir}`);
        chmodSync(dir, statSync(dir).mode | 0o001);
      }
    }
    if (!(await reachable(s.localDir))) throw new Error(`the ${PG_USER} user cannot reach ${s.localDir}`);
  }
  return uid;
}

function giveToPg(uid, ...paths) {
  if (uid === null) return;
  for (const path of paths) chownSync(path, uid, statSync(path).gid);
}

async function initPg(s, pgBin, uid) {
  if (existsSync(join(s.pgData, 'PG_VERSION'))) return;
  if (existsSync(s.pgData) && readdirSync(s.pgData).length > 0) {
    throw new Error(`${s.pgData} exists but is not a PostgreSQL data folder (remove it to start afresh)`);
  }
  const locales = (await run('locale', ['-a']).catch(() => ({ stdout: '' }))).stdout;
  const locale = /^c\.utf-?8$/im.test(locales) ? 'C.UTF-8' : 'C';
  mkdirSync(s.pgData, { recursive: true, mode: 0o700 });
  chmodSync(s.pgData, 0o700);
  giveToPg(uid, s.pgData);
  s.log(`initdb ${s.pgData}`);
  const initLog = join(s.localDir, 'initdb.log');
  const result = await runAsPg(join(pgBin, 'initdb'), [
    '-D',
    s.pgData,
    '-U',
    'postgres',
    '--auth=trust',
    '--encoding=UTF8',
    `--locale=${locale}`,
  ]);
  writeFileSync(initLog, result.stdout + result.stderr);
  if (result.code !== 0) throw new Error(`initdb failed (log: ${initLog}):\n${result.stdout}${result.stderr}`);
  // Trust, but only over the loopback interface and the private socket folder.
  writeFileSync(
    join(s.pgData, 'pg_hba.conf'),
    [
      '# Written by scripts/local-services.mjs: local development only.',
      '# TYPE  DATABASE  USER  ADDRESS        METHOD',
      'local   all       all                  trust',
      'host    all       all   127.0.0.1/32   trust',
      '',
    ].join('\n'),
  );
  const conf = join(s.pgData, 'postgresql.conf');
  writeFileSync(
    conf,
    `${readFileSync(conf, 'utf8')}\n# Settings written by scripts/local-services.mjs at every start.\ninclude_if_exists = 'local-services.conf'\n`,
  );
  giveToPg(uid, join(s.pgData, 'pg_hba.conf'), conf);
}

function writePgSettings(s, uid) {
  mkdirSync(s.pgSocketDir, { recursive: true });
  giveToPg(uid, s.pgSocketDir);
  // A unix socket path is limited to 107 bytes; TCP is used by everything here anyway.
  let sockets = s.pgSocketDir;
  if (Buffer.byteLength(sockets) + 16 > 107) {
    s.log(`${sockets} is too long for a unix socket: TCP only`);
    sockets = '';
  }
  const file = join(s.pgData, 'local-services.conf');
  writeFileSync(
    file,
    [
      '# Written by scripts/local-services.mjs at every start: do not edit.',
      `port = ${s.pgPort}`,
      "listen_addresses = '127.0.0.1'",
      `unix_socket_directories = '${sockets.replaceAll("'", "''")}'`,
      'max_connections = 200',
      '',
    ].join('\n'),
  );
  if (!existsSync(s.pgLog)) writeFileSync(s.pgLog, '');
  giveToPg(uid, file, s.pgLog);
  if (uid !== null && statSync(s.pgData).uid !== uid) {
    s.log(`giving ${s.pgData} to the ${PG_USER} user`);
    chownTree(uid, s.pgData);
  }
}

function chownTree(uid, dir) {
  chownSync(dir, uid, statSync(dir).gid);
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) chownTree(uid, path);
    else chownSync(path, uid, statSync(path).gid);
  }
}

async function pgAnswers(adminUrl) {
  const client = new pg.Client({ connectionString: adminUrl, connectionTimeoutMillis: 2_000 });
  client.on('error', () => undefined);
  try {
    await client.connect();
    await client.query('SELECT 1');
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => undefined);
  }
}

async function startPg(s, pgBin) {
  const uid = await preparePgUser(s);
  const { adminUrl } = localServiceUrls(s);
  const running = pgRunning(s);
  if (running !== null) {
    if (running.port !== s.pgPort) {
      throw new Error(
        `PostgreSQL of ${s.pgData} already runs (pid ${running.pid}) on port ${running.port}, not ${s.pgPort}: stop it first (with the same data folder)`,
      );
    }
    s.log(`PostgreSQL already running (pid ${running.pid}, port ${s.pgPort})`);
  } else {
    await initPg(s, pgBin, uid);
    await clearStalePg(s);
    if (await tcpPortOpen(s.pgPort)) throw new Error(`port ${s.pgPort} (PostgreSQL) is used by another program`);
    writePgSettings(s, uid);
    s.log(`starting PostgreSQL on 127.0.0.1:${s.pgPort} (data ${s.pgData}, log ${s.pgLog})`);
    const started = await runAsPg(join(pgBin, 'pg_ctl'), [
      '-D',
      s.pgData,
      '-l',
      s.pgLog,
      '-w',
      '-t',
      String(s.waitSeconds),
      'start',
    ]);
    if (started.code !== 0) throw new Error(`PostgreSQL did not start (log: ${s.pgLog}):\n${tail(s.pgLog)}`);
  }
  if (!(await waitUntil(() => pgAnswers(adminUrl), s.waitSeconds))) {
    throw new Error(
      `PostgreSQL does not answer on 127.0.0.1:${s.pgPort} after ${s.waitSeconds}s (log: ${s.pgLog}):\n${tail(s.pgLog)}`,
    );
  }
  const client = new pg.Client({ connectionString: adminUrl, connectionTimeoutMillis: 5_000 });
  client.on('error', () => undefined);
  await client.connect();
  try {
    const exists = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [DATABASE]);
    if (exists.rowCount === 0) {
      s.log(`creating database ${DATABASE}`);
      await client.query(`CREATE DATABASE ${DATABASE}`);
    }
  } finally {
    await client.end().catch(() => undefined);
  }
  return pgRunning(s)?.pid ?? null;
}

async function stopPg(s, pgBin) {
  const running = pgRunning(s);
  if (running === null) {
    await clearStalePg(s);
    s.log('PostgreSQL not running');
    return;
  }
  s.log(`stopping PostgreSQL (pid ${running.pid})`);
  const stopped = await runAsPg(join(pgBin, 'pg_ctl'), ['-D', s.pgData, '-m', 'fast', '-w', '-t', '60', 'stop']);
  if (stopped.code !== 0) throw new Error(`pg_ctl stop failed (log: ${s.pgLog}): ${stopped.stderr}`);
}

// ------------------------------------------------------------------------------ Redis

/** Runs `action` on a connection to the Redis on `port`; undefined when nothing answers. */
async function withRedis(port, action) {
  const redis = new Redis({
    host: '127.0.0.1',
    port,
    lazyConnect: true,
    connectTimeout: 2_000,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    retryStrategy: () => null,
  });
  redis.on('error', () => undefined);
  try {
    await redis.connect();
    return await action(redis);
  } catch {
    return undefined;
  } finally {
    redis.disconnect();
  }
}

const redisAnswers = async (port) => (await withRedis(port, (redis) => redis.ping())) === 'PONG';

/** True when the Redis answering on the port keeps its data in our folder. */
async function redisIsOurs(s) {
  const reply = await withRedis(s.redisPort, (redis) => redis.config('GET', 'dir'));
  const dir = Array.isArray(reply) ? reply[1] : undefined;
  return typeof dir === 'string' && resolve(dir) === resolve(s.redisDir);
}

/** The pid of the redis-server of our pid file when it runs, else null. */
function redisPidOf(s) {
  const pid = pidFromFile(s.redisPidFile);
  return pid !== null && processAlive(pid) && commandOf(pid).startsWith('redis-server') ? pid : null;
}

async function startRedis(s) {
  if (await redisAnswers(s.redisPort)) {
    if (!(await redisIsOurs(s))) {
      throw new Error(`port ${s.redisPort} (Redis) is used by another Redis (not keeping its data in ${s.redisDir})`);
    }
    s.log(`Redis already running (port ${s.redisPort})`);
    return redisPidOf(s);
  }
  const pid = redisPidOf(s);
  if (pid !== null) {
    // Ours, but not (yet) answering: on another port, or still loading its data.
    let cmdline = '';
    try {
      cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ').trim();
    } catch {
      // gone meanwhile
    }
    if (!` ${cmdline} `.includes(`:${s.redisPort} `) && !` ${cmdline} `.includes(`--port ${s.redisPort} `)) {
      throw new Error(
        `Redis of ${s.localDir} already runs (pid ${pid}: ${cmdline}) on another port than ${s.redisPort}: stop it first (with the same data folder)`,
      );
    }
    s.log(`Redis of ${s.localDir} runs (pid ${pid}): waiting for it on port ${s.redisPort}`);
    if (!(await waitUntil(() => redisAnswers(s.redisPort), s.waitSeconds))) {
      throw new Error(`Redis of ${s.localDir} runs (pid ${pid}) but does not answer on port ${s.redisPort}`);
    }
    return pid;
  }
  rmSync(s.redisPidFile, { force: true });
  if (await tcpPortOpen(s.redisPort)) throw new Error(`port ${s.redisPort} (Redis) is used by another program`);
  mkdirSync(s.redisDir, { recursive: true });
  s.log(`starting Redis on 127.0.0.1:${s.redisPort} (data ${s.redisDir}, log ${s.redisLog})`);
  // prettier-ignore
  const started = await run('redis-server', [
    '--bind', '127.0.0.1', '--port', String(s.redisPort), '--appendonly', 'yes', '--dir', s.redisDir,
    '--databases', String(s.redisDatabases), '--daemonize', 'yes', '--pidfile', s.redisPidFile,
    '--logfile', s.redisLog,
  ]);
  if (started.code !== 0) throw new Error(`redis-server failed to start (log: ${s.redisLog}): ${started.stderr}`);
  if (!(await waitUntil(() => redisAnswers(s.redisPort), s.waitSeconds))) {
    throw new Error(
      `Redis does not answer on 127.0.0.1:${s.redisPort} after ${s.waitSeconds}s (log: ${s.redisLog}):\n${tail(s.redisLog)}`,
    );
  }
  return redisPidOf(s);
}

async function stopRedis(s) {
  const pid = redisPidOf(s);
  if ((await redisAnswers(s.redisPort)) && (await redisIsOurs(s))) {
    s.log(`stopping Redis (port ${s.redisPort})`);
    // Plain SHUTDOWN: flushes the append-only file before exiting (the connection drops: no reply).
    await withRedis(s.redisPort, (redis) => redis.shutdown().catch(() => undefined));
  } else if (pid !== null) {
    s.log(`stopping Redis (pid ${pid})`);
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      // gone meanwhile
    }
  } else {
    rmSync(s.redisPidFile, { force: true });
    s.log('Redis not running');
    return;
  }
  const gone = await waitUntil(
    async () => !(pid !== null && processAlive(pid)) && !((await redisAnswers(s.redisPort)) && (await redisIsOurs(s))),
    60,
  );
  if (!gone) throw new Error('Redis did not stop within 60s');
  rmSync(s.redisPidFile, { force: true });
}

// ---------------------------------------------------------------------- Redis Cluster

/** The folder of one cluster node (its data, nodes.conf, pid file and log). */
const clusterNodeDir = (s, port) => join(s.redisClusterDir, String(port));

/** CLUSTER INFO of the node on `port` as an object, or undefined when nothing answers. */
async function clusterInfo(port) {
  const text = await withRedis(port, (redis) => redis.cluster('INFO'));
  if (typeof text !== 'string') return undefined;
  return Object.fromEntries(
    text
      .split('\r\n')
      .filter((line) => line.includes(':'))
      .map((line) => line.split(':', 2)),
  );
}

/** True when the Redis on `port` is a cluster node keeping its data in our folder for that port. */
async function clusterNodeIsOurs(s, port) {
  const reply = await withRedis(port, (redis) => redis.config('GET', 'dir'));
  const dir = Array.isArray(reply) ? reply[1] : undefined;
  return typeof dir === 'string' && resolve(dir) === resolve(clusterNodeDir(s, port));
}

async function startClusterNode(s, port) {
  const dir = clusterNodeDir(s, port);
  const pidFile = join(dir, 'redis.pid');
  const logFile = join(dir, 'redis.log');
  if (await redisAnswers(port)) {
    if (!(await clusterNodeIsOurs(s, port))) {
      throw new Error(`port ${port} (Redis Cluster node) is used by another Redis (not keeping its data in ${dir})`);
    }
    return;
  }
  const pid = pidFromFile(pidFile);
  if (pid !== null && processAlive(pid) && commandOf(pid).startsWith('redis-server')) {
    // Ours but not answering yet (loading its data).
    if (!(await waitUntil(() => redisAnswers(port), s.waitSeconds))) {
      throw new Error(`Redis Cluster node of ${dir} runs (pid ${pid}) but does not answer on port ${port}`);
    }
    return;
  }
  rmSync(pidFile, { force: true });
  if (await tcpPortOpen(port)) throw new Error(`port ${port} (Redis Cluster node) is used by another program`);
  mkdirSync(dir, { recursive: true });
  // The cluster bus listens on port + 10000: the ports must stay below 55536.
  // prettier-ignore
  const started = await run('redis-server', [
    '--bind', '127.0.0.1', '--port', String(port), '--cluster-enabled', 'yes',
    '--cluster-config-file', join(dir, 'nodes.conf'), '--cluster-node-timeout', '5000',
    '--appendonly', 'yes', '--dir', dir, '--daemonize', 'yes', '--pidfile', pidFile, '--logfile', logFile,
  ]);
  if (started.code !== 0) throw new Error(`redis-server failed to start (log: ${logFile}): ${started.stderr}`);
  if (!(await waitUntil(() => redisAnswers(port), s.waitSeconds))) {
    throw new Error(`Redis Cluster node does not answer on 127.0.0.1:${port} (log: ${logFile}):\n${tail(logFile)}`);
  }
}

const clusterFormed = async (ports) =>
  (await Promise.all(ports.map(clusterInfo))).every(
    (info) => info?.cluster_state === 'ok' && Number(info.cluster_known_nodes) === ports.length,
  );

/**
 * A Redis Cluster of three masters with one replica each, on `s.redisClusterPorts`, data
 * in `<localDir>/redis-cluster/<port>/`. Nodes already running there are reused; nodes of a
 * cluster created before find each other again from their nodes.conf; fresh nodes are
 * joined with `redis-cli --cluster create`.
 */
async function startRedisCluster(s) {
  const ports = s.redisClusterPorts;
  s.log(`starting a Redis Cluster on 127.0.0.1:${ports.join(',')} (data ${s.redisClusterDir})`);
  await Promise.all(ports.map((port) => startClusterNode(s, port)));
  if (await clusterFormed(ports)) return;
  const infos = await Promise.all(ports.map(clusterInfo));
  const blank = infos.every((info) => Number(info?.cluster_known_nodes) === 1 && info?.cluster_slots_assigned === '0');
  if (blank) {
    const created = await run('redis-cli', [
      '--cluster',
      'create',
      ...ports.map((port) => `127.0.0.1:${port}`),
      '--cluster-replicas',
      String(REDIS_CLUSTER_REPLICAS),
      '--cluster-yes',
    ]);
    if (created.code !== 0) throw new Error(`redis-cli --cluster create failed:\n${created.stdout}${created.stderr}`);
  }
  if (!(await waitUntil(() => clusterFormed(ports), s.waitSeconds))) {
    throw new Error(
      `the Redis Cluster on ports ${ports.join(',')} is not ok after ${s.waitSeconds}s; stop it and remove ${s.redisClusterDir} to start afresh`,
    );
  }
}

/** Stops the cluster nodes of `<localDir>/redis-cluster/` that run (data kept). */
async function stopRedisCluster(s) {
  if (!existsSync(s.redisClusterDir)) return;
  const pids = [];
  for (const entry of readdirSync(s.redisClusterDir)) {
    const pid = pidFromFile(join(s.redisClusterDir, entry, 'redis.pid'));
    if (pid === null || !processAlive(pid) || !commandOf(pid).startsWith('redis-server')) continue;
    pids.push(pid);
    try {
      process.kill(pid, 'SIGTERM'); // flushes its append-only file first
    } catch {
      // gone meanwhile
    }
  }
  if (pids.length === 0) return;
  s.log(`stopping the Redis Cluster (${pids.length} nodes)`);
  if (!(await waitUntil(() => pids.every((pid) => !processAlive(pid)), 60))) {
    throw new Error('the Redis Cluster did not stop within 60s');
  }
}

/**
 * A redis-server that is a child of this process (not daemonized) on `port`, its data in
 * `dir` (append-only file, no snapshots: data survives a restart on the same folder);
 * resolves once it answers PING. For tests that stop and restart a Redis of their own.
 */
export async function startRedisProcess({ port, dir, waitSeconds = 15 }) {
  mkdirSync(dir, { recursive: true });
  const logFile = join(dir, 'redis.log');
  // Written by the server itself: what a cleanup reads to find leftovers (pid file + comm).
  const pidFile = join(dir, 'redis.pid');
  // prettier-ignore
  const child = spawn('redis-server', [
    '--bind', '127.0.0.1', '--port', String(port), '--dir', dir, '--appendonly', 'yes', '--save', '',
    '--logfile', logFile, '--pidfile', pidFile,
  ], { stdio: 'ignore' });
  let spawnError;
  const exited = new Promise((done) => {
    child.once('exit', () => done());
    child.once('error', (error) => {
      spawnError = error;
      done();
    });
  });
  const running = () => spawnError === undefined && child.exitCode === null && child.signalCode === null;
  const handle = {
    url: `redis://127.0.0.1:${port}`,
    port,
    dir,
    pid: child.pid,
    exited,
    running,
    kill: () => child.kill('SIGKILL'),
    async stop() {
      if (!running()) return;
      child.kill('SIGTERM'); // it flushes its append-only file first
      if (!(await Promise.race([exited.then(() => true), sleep(15_000).then(() => false)]))) {
        child.kill('SIGKILL');
        await Promise.race([exited, sleep(5_000)]);
      }
    },
  };
  const deadline = Date.now() + waitSeconds * 1000;
  for (;;) {
    if (spawnError !== undefined) throw new Error(`cannot run redis-server: ${spawnError.message}`);
    if (!running()) {
      throw new Error(
        `redis-server on port ${port} exited (${child.exitCode ?? child.signalCode}):\n${tail(logFile, 10)}`,
      );
    }
    if (await redisAnswers(port)) return handle;
    if (Date.now() >= deadline) {
      child.kill('SIGKILL');
      throw new Error(`redis-server on port ${port} did not answer within ${waitSeconds} s (log: ${logFile})`);
    }
    await sleep(50);
  }
}

/** Kills the redis-server whose pid file is `dir`/redis.pid, if one runs; returns its pid. */
export function killRedisOf(dir) {
  const pid = pidFromFile(join(dir, 'redis.pid'));
  if (pid === null || !processAlive(pid) || !commandOf(pid).startsWith('redis-server')) return null;
  process.kill(pid, 'SIGKILL');
  return pid;
}

// ----------------------------------------------------------------------------- the API

async function withDirLock(s, action) {
  const lock = await acquirePidLock(s.lockFile, { waitMs: 120_000 });
  if (!lock.acquired) throw new Error(`another launcher (pid ${lock.holder}) holds ${s.lockFile}`);
  try {
    return await action();
  } finally {
    lock.release();
  }
}

/**
 * Starts (or reuses) the Redis Cluster of `options.localDir` on `options.redisClusterPorts`
 * alone, without PostgreSQL; returns its seed URLs (REDIS_URL in cluster mode).
 */
export async function startLocalRedisCluster(options = {}) {
  const s = settle({ ...options, redisMode: 'cluster' });
  await installLocalServices({ log: s.log });
  mkdirSync(s.localDir, { recursive: true });
  return withDirLock(s, async () => {
    const started = Date.now();
    await startRedisCluster(s);
    s.log(`Redis Cluster ready in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    return { redisUrl: localServiceUrls(s).redisUrl, ports: [...s.redisClusterPorts], dir: s.redisClusterDir };
  });
}

/**
 * Starts again one node (on `port`) of the Redis Cluster of `options.localDir`, after it
 * was stopped or killed: it finds the cluster again from its nodes.conf (a master that
 * lost its slots to its replica meanwhile comes back as that replica's replica). Nothing
 * to do when it runs.
 */
export async function startLocalRedisClusterNode(port, options = {}) {
  const s = settle({ ...options, redisMode: 'cluster' });
  if (!s.redisClusterPorts.includes(port)) {
    throw new Error(`port ${port} is not one of the cluster's (${s.redisClusterPorts.join(',')})`);
  }
  await withDirLock(s, () => startClusterNode(s, port));
}

/**
 * Starts the PostgreSQL and Redis of `options.localDir` (installing what is missing),
 * reusing them when they already run on these ports, and creates the `messaging` database.
 */
export async function startLocalServices(options = {}) {
  const s = settle(options);
  const { pgBin } = await installLocalServices({ log: s.log });
  mkdirSync(s.localDir, { recursive: true });
  return withDirLock(s, async () => {
    const postmasterPid = await startPg(s, pgBin);
    let redisPid = null;
    if (s.redisMode === 'cluster') {
      const started = Date.now();
      await startRedisCluster(s);
      s.log(`Redis Cluster ready in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    } else {
      redisPid = await startRedis(s);
    }
    s.log('ready');
    return {
      ...localServiceUrls(s),
      pgPort: s.pgPort,
      redisPort: s.redisPort,
      localDir: s.localDir,
      postmasterPid,
      redisPid,
    };
  });
}

/**
 * Stops the PostgreSQL and Redis of `options.localDir` (data kept). PostgreSQL is found by
 * its data folder whatever its port; Redis by its pid file, or by `redisPort` if it answers there.
 */
export async function stopLocalServices(options = {}) {
  const s = settle(options);
  if (!existsSync(s.localDir)) {
    s.log(`nothing to stop (${s.localDir} does not exist)`);
    return;
  }
  await withDirLock(s, async () => {
    const pgBin = findPgBin();
    if (pgBin !== null) await stopPg(s, pgBin);
    else s.log('PostgreSQL not installed');
    await stopRedis(s);
    await stopRedisCluster(s);
  });
}

/** What runs in `options.localDir`. */
export async function localServicesStatus(options = {}) {
  const s = settle(options);
  const pgProcess = pgRunning(s);
  const postgres =
    pgProcess === null
      ? { running: false, answering: false, pid: null, port: null, dataDir: s.pgData }
      : {
          running: true,
          answering: await pgAnswers(`postgresql://postgres@127.0.0.1:${pgProcess.port}/postgres`),
          pid: pgProcess.pid,
          port: pgProcess.port,
          dataDir: s.pgData,
        };
  if (s.redisMode === 'cluster') {
    const answering = await clusterFormed(s.redisClusterPorts);
    const redis = {
      running: answering,
      answering,
      pid: null,
      port: s.redisClusterPorts[0],
      dataDir: s.redisClusterDir,
    };
    return { postgres, redis, running: postgres.answering && redis.answering };
  }
  const redisPid = redisPidOf(s);
  const answering = (await redisAnswers(s.redisPort)) && (await redisIsOurs(s));
  const redis = {
    running: answering || redisPid !== null,
    answering,
    pid: redisPid,
    port: s.redisPort,
    dataDir: s.redisDir,
  };
  return { postgres, redis, running: postgres.answering && redis.answering };
}

// ---------------------------------------------------------------------------- command

function optionsFromEnv(env) {
  const number = (name) => {
    const value = env[name];
    if (value === undefined || value === '') return undefined;
    if (!/^\d+$/.test(value)) throw new Error(`${name} must be a number (got '${value}')`);
    return Number(value);
  };
  return {
    localDir: env.LOCAL_DIR || undefined,
    pgPort: number('PG_PORT'),
    redisPort: number('REDIS_PORT'),
    redisMode: env.REDIS_MODE || undefined,
    redisClusterPorts: env.REDIS_CLUSTER_PORTS
      ? env.REDIS_CLUSTER_PORTS.split(',').map((port) => {
          if (!/^\d+$/.test(port.trim())) throw new Error(`REDIS_CLUSTER_PORTS must list ports (got '${port}')`);
          return Number(port);
        })
      : undefined,
    redisDatabases: number('REDIS_DATABASES'),
    waitSeconds: number('WAIT_SECONDS'),
  };
}

function printUrls(urls) {
  process.stdout.write(`DATABASE_URL=${urls.databaseUrl}\nREDIS_URL=${urls.redisUrl}\n`);
}

async function main(args) {
  const options = optionsFromEnv(process.env);
  switch (args.length === 1 ? args[0] : '') {
    case 'start':
      printUrls(await startLocalServices(options));
      return 0;
    case 'stop':
      await stopLocalServices(options);
      return 0;
    case 'env':
      printUrls(localServiceUrls(options));
      return 0;
    case 'install': {
      const found = await installLocalServices();
      defaultLog(`PostgreSQL binaries: ${found.pgBin}; redis-server: ${found.redisServer}`);
      return 0;
    }
    case 'status': {
      const { postgres, redis, running } = await localServicesStatus(options);
      process.stdout.write(
        `${
          postgres.running
            ? `postgresql: running, ${postgres.answering ? 'accepting connections' : 'not answering'} (pid ${postgres.pid}, 127.0.0.1:${postgres.port}, data ${postgres.dataDir})`
            : `postgresql: stopped (data ${postgres.dataDir})`
        }\n${
          redis.answering
            ? `redis: running (pid ${redis.pid ?? '?'}, 127.0.0.1:${redis.port}, data ${redis.dataDir})`
            : redis.running
              ? `redis: running but not answering on port ${redis.port} (pid ${redis.pid}, data ${redis.dataDir})`
              : `redis: stopped (data ${redis.dataDir})`
        }\n`,
      );
      return running ? 0 : 3;
    }
    default:
      process.stderr.write('usage: node scripts/local-services.mjs start|stop|status|env|install\n');
      return 2;
  }
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    process.exitCode = await main(process.argv.slice(2));
  } catch (error) {
    defaultLog(`error: ${error instanceof Error ? error.message : String(error)}`);
    process.exitCode = 1;
  }
}
