// Offline migrations in Prisma's own format, applied at boot (MIGRATE_ON_START) and by
// `npm run migrate`. The Prisma CLI's `migrate` commands need a native schema engine that
// this machine cannot download, so applyMigrations() is a small runner over `pg` that
// writes `_prisma_migrations` exactly as `prisma migrate deploy` does (users with internet
// can keep using that). Writing new migrations is a development tool and lives outside the
// service: scripts/migrations-diff.ts (`npm run migrate:new`).
import { createHash, randomUUID } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';

export interface ApplyMigrationsOptions {
  migrationsDir?: string;
  log?: (line: string) => void;
}

export interface LocalMigration {
  /** Folder name, e.g. `20260101000000_init`: Prisma's migration_name. */
  name: string;
  script: string;
  checksum: string;
}

interface MigrationRow {
  id: string;
  checksum: string;
  finished_at: Date | null;
  migration_name: string;
  logs: string | null;
  rolled_back_at: Date | null;
  started_at: Date;
}

/** The key Prisma's schema engine locks, so our runner and `prisma migrate deploy` exclude each other. */
const PRISMA_MIGRATE_LOCK_KEY = 72707369;

/** Prisma's own DDL for its history table (schema engine, PostgreSQL flavour). */
const CREATE_MIGRATIONS_TABLE = `
CREATE TABLE IF NOT EXISTS _prisma_migrations (
    id                      VARCHAR(36) PRIMARY KEY NOT NULL,
    checksum                VARCHAR(64) NOT NULL,
    finished_at             TIMESTAMPTZ,
    migration_name          VARCHAR(255) NOT NULL,
    logs                    TEXT,
    rolled_back_at          TIMESTAMPTZ,
    started_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    applied_steps_count     INTEGER NOT NULL DEFAULT 0
)`;

// ---------------------------------------------------------------------------------------
// Migration files

/** The folder holding package.json, found from this file in src/prisma or dist/prisma. */
export function projectRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const parent = dirname(dir);
    if (parent === dir) throw new Error(`No package.json above ${fileURLToPath(import.meta.url)}`);
    dir = parent;
  }
  return dir;
}

export function defaultMigrationsDir(): string {
  return join(projectRoot(), 'prisma', 'migrations');
}

/** Prisma's checksum: sha256 of the file's bytes, lowercase hex. */
function migrationChecksum(script: string): string {
  return createHash('sha256').update(script, 'utf8').digest('hex');
}

/** Like Prisma, accept a file whose line endings git converted since it was applied. */
function checksumMatches(script: string, checksum: string): boolean {
  const variants = [script, script.replaceAll('\r\n', '\n'), script.replaceAll('\n', '\r\n')];
  return variants.some((variant) => migrationChecksum(variant) === checksum);
}

/** Migration folders in the order Prisma applies them (by name, i.e. by timestamp). */
export function readMigrations(migrationsDir: string): LocalMigration[] {
  if (!existsSync(migrationsDir)) return [];
  assertPostgresLockfile(migrationsDir);
  return readdirSync(migrationsDir, { withFileTypes: true })
    .filter((entry) => entry.isDirectory())
    .map((entry) => entry.name)
    .sort()
    .map((name) => {
      const file = join(migrationsDir, name, 'migration.sql');
      if (!existsSync(file)) throw new Error(`Migration folder ${name} has no migration.sql (${file})`);
      const script = readFileSync(file, 'utf8');
      return { name, script, checksum: migrationChecksum(script) };
    });
}

/** Prisma refuses a migrations folder written for another database; so do we. */
function assertPostgresLockfile(migrationsDir: string): void {
  const lockfile = join(migrationsDir, 'migration_lock.toml');
  if (!existsSync(lockfile)) return;
  const provider = /^\s*provider\s*=\s*"([^"]*)"/m.exec(readFileSync(lockfile, 'utf8'))?.[1];
  if (provider !== undefined && provider !== 'postgresql') {
    throw new Error(`${lockfile} says provider "${provider}"; these migrations are not for PostgreSQL`);
  }
}

// ---------------------------------------------------------------------------------------
// Deploy

/**
 * Applies pending migrations, each in its own transaction, holding Prisma's advisory lock
 * on one dedicated connection so that concurrent starts (ours or `prisma migrate deploy`)
 * run one after another; the later ones then find nothing to do.
 */
export async function applyMigrations(
  databaseUrl: string,
  options: ApplyMigrationsOptions = {},
): Promise<{ applied: string[] }> {
  const log = options.log ?? (() => {});
  const migrations = readMigrations(options.migrationsDir ?? defaultMigrationsDir());
  const client = new pg.Client({ connectionString: databaseUrl });
  // Without a listener, a connection dropped by the server would crash the process.
  client.on('error', (error) => log(`migration connection error: ${error.message}`));
  await client.connect();
  try {
    await acquireMigrateLock(client, log);
    await useSchemaFromUrl(client, databaseUrl);
    return { applied: await applyPending(client, migrations, log) };
  } finally {
    // Ending the session also releases the advisory lock.
    await client.end();
  }
}

/** Prisma honours `?schema=` in the URL (default public); keep the history table in the same place. */
async function useSchemaFromUrl(client: pg.Client, databaseUrl: string): Promise<void> {
  // Key=value or socket-path connection strings carry no such parameter.
  const schema = URL.canParse(databaseUrl) ? new URL(databaseUrl).searchParams.get('schema') : null;
  if (!schema) return;
  const quoted = client.escapeIdentifier(schema);
  await client.query(`CREATE SCHEMA IF NOT EXISTS ${quoted}`);
  await client.query(`SET search_path TO ${quoted}`);
}

async function acquireMigrateLock(client: pg.Client, log: (line: string) => void): Promise<void> {
  const tried = await client.query<{ locked: boolean }>('SELECT pg_try_advisory_lock($1) AS locked', [
    PRISMA_MIGRATE_LOCK_KEY,
  ]);
  if (tried.rows[0]?.locked) return;
  log('another process is migrating this database; waiting for it to finish');
  await client.query('SELECT pg_advisory_lock($1)', [PRISMA_MIGRATE_LOCK_KEY]);
}

async function applyPending(
  client: pg.Client,
  migrations: LocalMigration[],
  log: (line: string) => void,
): Promise<string[]> {
  await client.query(CREATE_MIGRATIONS_TABLE);
  const history = (await client.query<MigrationRow>('SELECT * FROM _prisma_migrations ORDER BY started_at')).rows;
  assertNoFailedMigrations(history);
  assertUnchanged(migrations, history);
  warnAboutUnknown(migrations, history, log);

  const applied = new Set(history.filter(isApplied).map((row) => row.migration_name));
  const pending = migrations.filter((migration) => !applied.has(migration.name));
  if (pending.length === 0) log('no pending migrations');
  for (const migration of pending) {
    log(`applying ${migration.name}`);
    await applyOne(client, migration);
  }
  return pending.map((migration) => migration.name);
}

function isApplied(row: MigrationRow): boolean {
  return row.finished_at !== null && row.rolled_back_at === null;
}

function isFailed(row: MigrationRow): boolean {
  return row.finished_at === null && row.rolled_back_at === null;
}

/** Same rule as `prisma migrate deploy` (P3009): a failed migration must be resolved by a person. */
function assertNoFailedMigrations(history: MigrationRow[]): void {
  const failed = history.filter(isFailed);
  if (failed.length === 0) return;
  const details = failed.map(
    (row) =>
      `- ${row.migration_name} (started ${row.started_at.toISOString()})` +
      (row.logs?.trim() ? `: ${row.logs.trim()}` : ''),
  );
  throw new Error(
    [
      'Refusing to migrate: _prisma_migrations records failed migrations:',
      ...details,
      'Check the database, then mark each one rolled back (`npx prisma migrate resolve --rolled-back <name>`, or',
      "UPDATE _prisma_migrations SET rolled_back_at = now() WHERE migration_name = '<name>' AND finished_at IS NULL)",
      'and run the migrations again.',
    ].join('\n'),
  );
}

/** An applied migration whose file changed means the code and the database disagree: stop. */
function assertUnchanged(migrations: LocalMigration[], history: MigrationRow[]): void {
  const byName = new Map(migrations.map((migration) => [migration.name, migration]));
  const changed = history
    .filter(isApplied)
    .filter((row) => {
      const local = byName.get(row.migration_name);
      return local !== undefined && !checksumMatches(local.script, row.checksum);
    })
    .map(
      (row) =>
        `- ${row.migration_name}: applied with checksum ${row.checksum}, file now ${byName.get(row.migration_name)?.checksum}`,
    );
  if (changed.length === 0) return;
  throw new Error(
    [
      'Refusing to migrate: migration files were modified after they were applied (checksum mismatch):',
      ...changed,
      'Restore the original migration.sql and put the change in a new migration.',
    ].join('\n'),
  );
}

/** A database ahead of this code (e.g. after a rollback of the app) is not an error, but say so. */
function warnAboutUnknown(migrations: LocalMigration[], history: MigrationRow[], log: (line: string) => void): void {
  const local = new Set(migrations.map((migration) => migration.name));
  for (const row of history.filter(isApplied)) {
    if (!local.has(row.migration_name))
      log(`warning: ${row.migration_name} is applied but not in the migrations folder`);
  }
}

/**
 * The history row and the script share one transaction, so a migration is either fully
 * applied and recorded or not at all. The script goes over the simple query protocol (no
 * parameters), which runs a multi-statement file as-is, as Prisma does.
 */
async function applyOne(client: pg.Client, migration: LocalMigration): Promise<void> {
  const id = randomUUID();
  const startedAt = new Date();
  await client.query('BEGIN');
  try {
    await client.query(
      'INSERT INTO _prisma_migrations (id, checksum, migration_name, started_at) VALUES ($1, $2, $3, $4)',
      [id, migration.checksum, migration.name, startedAt],
    );
    await client.query(migration.script);
    await client.query(
      'UPDATE _prisma_migrations SET applied_steps_count = applied_steps_count + 1, finished_at = $2 WHERE id = $1',
      [id, new Date()],
    );
    await client.query('COMMIT');
  } catch (error) {
    await rollbackAndRecordFailure(client, migration, id, startedAt, error);
  }
}

/** Leaves the same trace Prisma leaves (a row with logs and no finished_at), then throws. */
async function rollbackAndRecordFailure(
  client: pg.Client,
  migration: LocalMigration,
  id: string,
  startedAt: Date,
  error: unknown,
): Promise<never> {
  const reason = error instanceof Error ? error.message : String(error);
  let recorded = true;
  try {
    await client.query('ROLLBACK');
    await client.query(
      'INSERT INTO _prisma_migrations (id, checksum, migration_name, started_at, logs) VALUES ($1, $2, $3, $4, $5)',
      [id, migration.checksum, migration.name, startedAt, reason],
    );
  } catch {
    recorded = false; // e.g. the connection is gone; the original error matters more.
  }
  throw new Error(
    `Migration ${migration.name} failed and was rolled back: ${reason}` +
      (recorded ? '\nIt is recorded as failed in _prisma_migrations; later runs refuse until it is resolved.' : ''),
    { cause: error },
  );
}
