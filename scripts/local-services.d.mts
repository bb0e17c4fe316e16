// Types for scripts/local-services.mjs, which runs as plain JavaScript (npm start runs it
// before any build step) and is imported by the test global setup and the bench.

export declare const ROOT: string;

export interface LocalServicesOptions {
  /** Data folder (PostgreSQL in pg/, Redis in redis/, logs, pid files). Default: <root>/.local/dev. */
  localDir?: string;
  /** Default 55432. */
  pgPort?: number;
  /** Default 56379. */
  redisPort?: number;
  /** Redis logical databases. Default 16. */
  redisDatabases?: number;
  /**
   * `single` (default): one redis-server on `redisPort`. `cluster`: a Redis Cluster of three
   * masters with one replica each on `redisClusterPorts` (data in <localDir>/redis-cluster/),
   * and `redisUrl` lists the six nodes, comma-separated (REDIS_MODE=cluster's REDIS_URL).
   */
  redisMode?: 'single' | 'cluster';
  /** Six distinct ports up to 55535 (each node's cluster bus takes port + 10000). Default 47001-47006. */
  redisClusterPorts?: readonly number[];
  /** How long to wait for a service to answer. Default 30. */
  waitSeconds?: number;
  /** Progress lines (default: stderr, prefixed [local-services]). */
  log?: (line: string) => void;
}

export declare const DEFAULTS: Readonly<Required<Omit<LocalServicesOptions, 'log'>>>;

export interface LocalServiceUrls {
  /** postgresql://postgres@127.0.0.1:PORT/messaging */
  databaseUrl: string;
  /** postgresql://postgres@127.0.0.1:PORT/postgres (superuser, trust authentication) */
  adminUrl: string;
  /** redis://127.0.0.1:PORT (no database index); in cluster mode the nodes' URLs, comma-separated. */
  redisUrl: string;
}

export interface LocalServices extends LocalServiceUrls {
  pgPort: number;
  redisPort: number;
  localDir: string;
  /** The postmaster (its backends are its children), null if it could not be read. */
  postmasterPid: number | null;
  /** null in cluster mode (six processes; their pid files are in redis-cluster/<port>/). */
  redisPid: number | null;
}

export interface LocalServicesStatus {
  postgres: { running: boolean; answering: boolean; pid: number | null; port: number | null; dataDir: string };
  redis: { running: boolean; answering: boolean; pid: number | null; port: number; dataDir: string };
  /** Both answer. */
  running: boolean;
}

/**
 * Starts the PostgreSQL and Redis of `options.localDir` (installing what is missing with
 * apt), reusing them when they already run there on these ports, and creates the
 * `messaging` database. Two launchers on one folder take turns (a pid lock in the folder).
 *
 * @example
 * const services = await startLocalServices({ localDir: '.local/bench', pgPort: 55491, redisPort: 56491 });
 * process.env.DATABASE_URL = services.databaseUrl;
 */
export declare function startLocalServices(options?: LocalServicesOptions): Promise<LocalServices>;

/** Stops them (data kept); nothing to do when they do not run. */
export declare function stopLocalServices(options?: LocalServicesOptions): Promise<void>;

export declare function localServicesStatus(options?: LocalServicesOptions): Promise<LocalServicesStatus>;

/** The URLs of these settings; starts nothing. */
export declare function localServiceUrls(options?: LocalServicesOptions): LocalServiceUrls;

/** Installs redis-server and PostgreSQL's server with apt (scripts/apt-install.sh) when missing. */
export declare function installLocalServices(options?: {
  log?: (line: string) => void;
}): Promise<{ pgBin: string; redisServer: string }>;

/** Alive and not a zombie. */
export declare function processAlive(pid: number): boolean;

/** The pid on the first line of a pid file, or null. */
export declare function pidFromFile(file: string): number | null;

export type PidLock = { acquired: true; release: () => void } | { acquired: false; holder: number };

/**
 * Takes a lock file holding this process's pid; a file whose holder is gone is stale and
 * taken over. `waitMs`: how long to wait for a live holder (default 0: answer at once).
 */
export declare function acquirePidLock(file: string, options?: { waitMs?: number }): Promise<PidLock>;

/** A TCP port on 127.0.0.1 that nothing listened on a moment ago. */
export declare function freePort(): Promise<number>;

/** `count` distinct free ports. */
export declare function freePorts(count: number): Promise<number[]>;

/** `count` distinct free ports whose cluster bus ports (port + 10000) are free too. */
export declare function freeClusterPorts(count: number): Promise<number[]>;

/**
 * Starts (or reuses) the Redis Cluster of `options.localDir` (three masters, one replica
 * each, on `options.redisClusterPorts`) without PostgreSQL, under the folder's lock.
 * stopLocalServices stops it (with the rest of the folder's services).
 *
 * @example
 * const { redisUrl } = await startLocalRedisCluster({ localDir: '.local/test', redisClusterPorts: await freeClusterPorts(6) });
 */
export declare function startLocalRedisCluster(
  options?: LocalServicesOptions,
): Promise<{ redisUrl: string; ports: number[]; dir: string }>;

/**
 * Starts again the node on `port` (one of `options.redisClusterPorts`) of the Redis Cluster
 * of `options.localDir`, after it stopped or was killed (killRedisOf its folder,
 * <localDir>/redis-cluster/<port>): it rejoins from its nodes.conf, as a replica if its
 * replica took its slots meanwhile. Resolves once it answers PING (not once the cluster is ok).
 *
 * @example
 * killRedisOf(join(localDir, 'redis-cluster', '47001'));
 * await startLocalRedisClusterNode(47001, { localDir, redisClusterPorts: ports });
 */
export declare function startLocalRedisClusterNode(port: number, options?: LocalServicesOptions): Promise<void>;

/** A redis-server child of this process (startRedisProcess). */
export interface RedisProcess {
  /** redis://127.0.0.1:PORT */
  url: string;
  port: number;
  dir: string;
  pid: number | undefined;
  /** Settles when the process has exited. */
  exited: Promise<void>;
  running(): boolean;
  /** SIGTERM (it flushes its data), SIGKILL after 15 s; resolves once it exited. Idempotent. */
  stop(): Promise<void>;
  /** SIGKILL at once (synchronous: for an exit hook). */
  kill(): void;
}

/**
 * A redis-server that is a child of this process (not daemonized) on `port`, its data in
 * `dir` (append-only file: data survives a stop and a start on the same folder); resolves
 * once it answers PING.
 *
 * @example
 * const redis = await startRedisProcess({ port: await freePort(), dir: mkdtempSync(join(tmpdir(), 'redis-')) });
 * await redis.stop();
 */
export declare function startRedisProcess(options: {
  port: number;
  dir: string;
  waitSeconds?: number;
}): Promise<RedisProcess>;

/** Kills the redis-server whose pid file is `dir`/redis.pid, if one runs; returns its pid or null. */
export declare function killRedisOf(dir: string): number | null;
