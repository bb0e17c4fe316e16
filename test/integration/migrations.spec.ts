// The offline migration runner (src/prisma/migrator.ts) against a real PostgreSQL: it must
// leave `_prisma_migrations` exactly as `prisma migrate deploy` would, serialise concurrent
// runs, refuse edited or failed history, and the committed migrations must match schema.prisma
// (checked with the diff tool of `npm run migrate:new`, scripts/migrations-diff.ts, whose patch
// of pg internals, scripts/pg-char-as-text.ts, has its pg surface pinned here too).
import { createHash, randomBytes } from 'node:crypto';
import {
  appendFileSync,
  cpSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { EventEmitter } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';

import { defaultSchemaPath, diffMigrationsToSchema } from '../../scripts/migrations-diff.js';
import { CharAsTextClient, PG_CHAR_OID, PG_TEXT_OID, type RowDescription } from '../../scripts/pg-char-as-text.js';
import { applyMigrations, defaultMigrationsDir } from '../../src/prisma/migrator.js';

const ADMIN_URL = process.env.TEST_PG_ADMIN_URL ?? '';
const MIGRATIONS_DIR = defaultMigrationsDir();
const MIGRATION_NAMES = readdirSync(MIGRATIONS_DIR, { withFileTypes: true })
  .filter((entry) => entry.isDirectory())
  .map((entry) => entry.name)
  .sort();
const APP_TABLES = ['conversation_members', 'conversations', 'delivery_cursors', 'devices', 'messages'];

/** Prisma's columns for its history table (name, type), in its order. */
const PRISMA_MIGRATIONS_COLUMNS = [
  ['id', 'character varying'],
  ['checksum', 'character varying'],
  ['finished_at', 'timestamp with time zone'],
  ['migration_name', 'character varying'],
  ['logs', 'text'],
  ['rolled_back_at', 'timestamp with time zone'],
  ['started_at', 'timestamp with time zone'],
  ['applied_steps_count', 'integer'],
];

interface HistoryRow {
  id: string;
  checksum: string;
  finished_at: Date | null;
  migration_name: string;
  logs: string | null;
  rolled_back_at: Date | null;
  started_at: Date;
  applied_steps_count: number;
}

const createdDatabases: string[] = [];
const tempDirs: string[] = [];

async function withClient<T>(url: string, action: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await action(client);
  } finally {
    await client.end();
  }
}

function urlFor(database: string): string {
  const url = new URL(ADMIN_URL);
  url.pathname = `/${database}`;
  return url.toString();
}

/** An empty database of our own; the `test_` prefix lets the suite's teardown sweep leftovers. */
async function freshDatabase(): Promise<string> {
  const name = `test_migrations_${randomBytes(6).toString('hex')}`;
  await withClient(ADMIN_URL, (client) => client.query(`CREATE DATABASE "${name}"`));
  createdDatabases.push(name);
  return urlFor(name);
}

async function history(url: string): Promise<HistoryRow[]> {
  return withClient(url, async (client) => {
    const result = await client.query<HistoryRow>(
      'SELECT * FROM _prisma_migrations ORDER BY migration_name, started_at',
    );
    return result.rows;
  });
}

async function tablesIn(url: string): Promise<string[]> {
  return withClient(url, async (client) => {
    const result = await client.query<{ table_name: string }>(
      "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name",
    );
    return result.rows.map((row) => row.table_name);
  });
}

/** Computed here, independently of the code under test: sha256 of the file's bytes. */
function fileChecksum(migrationsDir: string, name: string): string {
  return createHash('sha256')
    .update(readFileSync(join(migrationsDir, name, 'migration.sql')))
    .digest('hex');
}

function copyOfMigrations(): string {
  const dir = mkdtempSync(join(tmpdir(), 'migrations-spec-'));
  tempDirs.push(dir);
  cpSync(MIGRATIONS_DIR, dir, { recursive: true });
  return dir;
}

/** What is left once comments and blank lines are removed. */
function statementsIn(sql: string): string {
  return sql
    .split('\n')
    .filter((line) => !line.trim().startsWith('--'))
    .join('\n')
    .trim();
}

afterAll(async () => {
  // FORCE: a failed assertion may have left a connection open.
  for (const name of createdDatabases) {
    await withClient(ADMIN_URL, (client) => client.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`));
  }
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

describe('migrations', () => {
  it('has a PostgreSQL server and at least one migration', () => {
    expect(ADMIN_URL, 'TEST_PG_ADMIN_URL is set by test/support/global-setup.ts').toMatch(/^postgres(ql)?:\/\//);
    expect(MIGRATION_NAMES.length).toBeGreaterThan(0);
    for (const name of MIGRATION_NAMES) expect(name).toMatch(/^\d{14}_[a-z0-9_]+$/);
  });

  it('applies every migration to an empty database and records it as Prisma does', async () => {
    const url = await freshDatabase();
    const lines: string[] = [];

    const result = await applyMigrations(url, { log: (line) => lines.push(line) });

    expect(result.applied).toEqual(MIGRATION_NAMES);
    expect(await tablesIn(url)).toEqual(['_prisma_migrations', ...APP_TABLES].sort());
    for (const name of MIGRATION_NAMES) expect(lines.join('\n')).toContain(name);

    const columns = await withClient(url, async (client) => {
      const found = await client.query<{ column_name: string; data_type: string }>(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = '_prisma_migrations' ORDER BY ordinal_position",
      );
      return found.rows.map((row) => [row.column_name, row.data_type]);
    });
    expect(columns).toEqual(PRISMA_MIGRATIONS_COLUMNS);

    const rows = await history(url);
    expect(rows.map((row) => row.migration_name)).toEqual(MIGRATION_NAMES);
    for (const row of rows) {
      expect(row.checksum).toBe(fileChecksum(MIGRATIONS_DIR, row.migration_name));
      expect(row.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      expect(row.applied_steps_count).toBe(1);
      expect(row.logs).toBeNull();
      expect(row.rolled_back_at).toBeNull();
      expect(row.finished_at).toBeInstanceOf(Date);
      expect(row.finished_at!.getTime()).toBeGreaterThanOrEqual(row.started_at.getTime());
    }
  });

  it('does nothing when applied a second time', async () => {
    const url = await freshDatabase();
    await applyMigrations(url);
    const before = await history(url);

    const again = await applyMigrations(url);

    expect(again.applied).toEqual([]);
    expect(await history(url)).toEqual(before);
  });

  it('applies each migration once when five processes start at the same time', async () => {
    const url = await freshDatabase();

    const results = await Promise.all(Array.from({ length: 5 }, () => applyMigrations(url)));

    expect(results.flatMap((result) => result.applied).sort()).toEqual(MIGRATION_NAMES);
    const rows = await history(url);
    expect(rows.map((row) => row.migration_name)).toEqual(MIGRATION_NAMES);
    expect(rows.every((row) => row.finished_at !== null && row.applied_steps_count === 1)).toBe(true);
  });

  it('refuses a migration file that changed after it was applied', async () => {
    const migrationsDir = copyOfMigrations();
    const url = await freshDatabase();
    await applyMigrations(url, { migrationsDir });
    const before = await history(url);
    const edited = MIGRATION_NAMES[0];
    appendFileSync(join(migrationsDir, edited, 'migration.sql'), '\n-- an afterthought\n');

    const run = applyMigrations(url, { migrationsDir });

    await expect(run).rejects.toThrow(/checksum mismatch/);
    await expect(applyMigrations(url, { migrationsDir })).rejects.toThrow(edited);
    expect(await history(url)).toEqual(before);
  });

  it('rolls back a failing migration, records it as failed, and refuses until it is resolved', async () => {
    const migrationsDir = copyOfMigrations();
    const url = await freshDatabase();
    await applyMigrations(url, { migrationsDir });
    const broken = '99990101000000_broken';
    mkdirSync(join(migrationsDir, broken));
    writeFileSync(
      join(migrationsDir, broken, 'migration.sql'),
      'CREATE TABLE "half_done" ("id" INTEGER);\nSELECT 1 / 0;\n',
    );

    await expect(applyMigrations(url, { migrationsDir })).rejects.toThrow(
      /99990101000000_broken failed.*division by zero/,
    );

    expect(await tablesIn(url)).not.toContain('half_done');
    const failed = (await history(url)).find((row) => row.migration_name === broken);
    expect(failed).toMatchObject({ finished_at: null, rolled_back_at: null, applied_steps_count: 0 });
    expect(failed?.checksum).toBe(fileChecksum(migrationsDir, broken));
    expect(failed?.logs).toContain('division by zero');
    await expect(applyMigrations(url, { migrationsDir })).rejects.toThrow(
      /failed migrations[\s\S]*99990101000000_broken/,
    );
  });

  it('has no drift: the migrations produce exactly what schema.prisma describes', async () => {
    // A database of our own as the "server" URL, to check the diff writes nothing into it
    // (adapter-pg's own shadow database would have been this very database).
    const serverUrl = await freshDatabase();

    const sql = await diffMigrationsToSchema({ shadowDatabaseUrl: serverUrl });

    expect(statementsIn(sql)).toBe('');
    expect(await tablesIn(serverUrl)).toEqual([]);
    const shadows = await withClient(ADMIN_URL, async (client) => {
      const found = await client.query(
        "SELECT datname FROM pg_database WHERE datname LIKE 'prisma_migrate_shadow_db_%'",
      );
      return found.rowCount;
    });
    expect(shadows, 'shadow databases are dropped').toBe(0);
  });

  it("keeps each send's conversation update a HOT one: no index on its moving columns, room on each page", async () => {
    const url = await freshDatabase();
    await applyMigrations(url);
    const { indexes, options } = await withClient(url, async (client) => {
      const found = await client.query<{ indexdef: string }>(
        "SELECT indexdef FROM pg_indexes WHERE tablename = 'conversations'",
      );
      const table = await client.query<{ reloptions: string[] | null }>(
        "SELECT reloptions FROM pg_class WHERE relname = 'conversations'",
      );
      return { indexes: found.rows.map((row) => row.indexdef), options: table.rows[0].reloptions ?? [] };
    });
    expect(indexes.length).toBeGreaterThan(0);
    for (const definition of indexes) expect(definition).not.toMatch(/last_seq|last_activity_at/);
    expect(options).toContain('fillfactor=50');

    // And it works: a send's update of its conversation (as MessageStoreRepository does it)
    // is a HOT update; the counters are this transaction's own, so nothing lags.
    const updates = await withClient(url, async (client) => {
      await client.query('BEGIN');
      await client.query(
        "INSERT INTO conversations (id, kind, wrapped_key, key_version) VALUES (gen_random_uuid(), 'group', '\\x00', 1)",
      );
      for (let i = 0; i < 30; i++) {
        await client.query(
          "UPDATE conversations SET last_seq = last_seq + 1, last_activity_at = clock_timestamp() + interval '1 millisecond'",
        );
      }
      const stats = await client.query<{ updated: string; hot: string }>(
        `SELECT pg_stat_get_xact_tuples_updated(c.oid) AS updated, pg_stat_get_xact_tuples_hot_updated(c.oid) AS hot
         FROM pg_class c WHERE c.relname = 'conversations'`,
      );
      await client.query('ROLLBACK');
      return stats.rows[0];
    });
    expect(Number(updates.updated)).toBe(30);
    expect(Number(updates.hot)).toBe(30);
  });

  it('reports the SQL for a schema change that no migration covers', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'schema-spec-'));
    tempDirs.push(dir);
    const schemaPath = join(dir, 'schema.prisma');
    const schema = readFileSync(defaultSchemaPath(), 'utf8');
    writeFileSync(schemaPath, schema.replace('model Device {', 'model Device {\n  nickname String?'));

    const sql = await diffMigrationsToSchema({ shadowDatabaseUrl: ADMIN_URL, schemaPath });

    expect(statementsIn(sql)).toMatch(/^ALTER TABLE "devices" ADD COLUMN\s+"nickname" TEXT;$/);
  });
});

// scripts/pg-char-as-text.ts patches pg internals so that adapter-pg can read the `"char"`
// columns the schema engine introspects. A pg upgrade that changes what it relies on fails here.
describe('the pg surface CharAsTextClient relies on', () => {
  /** `"char"` and int4 columns, over the simple and the extended query protocol. */
  const CHAR_QUERY = `SELECT 'r'::"char" AS kind, 1::int4 AS one`;
  const INT4_OID = 23;

  async function connected<T>(client: pg.Client, action: (client: pg.Client) => Promise<T>): Promise<T> {
    await client.connect();
    try {
      return await action(client);
    } finally {
      await client.end();
    }
  }

  it('gives every client a `connection` event emitter before it connects', () => {
    const client = new pg.Client({ connectionString: ADMIN_URL });

    expect(client.connection).toBeInstanceOf(EventEmitter);
    expect(client.connection.listenerCount('rowDescription')).toBe(0);
  });

  it("emits 'rowDescription' on the connection with each field's dataTypeID, 18 for \"char\"", async () => {
    const seen: number[][] = [];
    const client = new pg.Client({ connectionString: ADMIN_URL });
    client.connection.on('rowDescription', (message: RowDescription) => {
      seen.push(message.fields.map((field) => field.dataTypeID));
    });

    const [simple, extended] = await connected(client, async () => [
      await client.query(CHAR_QUERY),
      await client.query(`${CHAR_QUERY} WHERE $1::int4 = 1`, [1]),
    ]);

    expect(seen).toEqual([
      [PG_CHAR_OID, INT4_OID],
      [PG_CHAR_OID, INT4_OID],
    ]);
    expect(simple.fields.map((field) => field.dataTypeID)).toEqual([PG_CHAR_OID, INT4_OID]);
    expect(extended.fields.map((field) => field.dataTypeID)).toEqual([PG_CHAR_OID, INT4_OID]);
  });

  it('runs the prepended listener before the client hands the description to the query', async () => {
    const client = new CharAsTextClient({ connectionString: ADMIN_URL });
    expect(client.connection.listenerCount('rowDescription')).toBe(1);

    const [simple, extended] = await connected(client, async () => {
      // pg adds its own listeners at connect: ours must still come first.
      expect(client.connection.listenerCount('rowDescription')).toBe(2);
      return [await client.query(CHAR_QUERY), await client.query(`${CHAR_QUERY} WHERE $1::int4 = 1`, [1])];
    });

    for (const result of [simple, extended]) {
      expect(result.fields.map((field) => field.dataTypeID)).toEqual([PG_TEXT_OID, INT4_OID]);
      expect(result.rows).toEqual([{ kind: 'r', one: 1 }]);
    }
  });

  it('lets adapter-pg read "char" columns, which it refuses without the patch', async () => {
    const { PrismaPg } = await import('@prisma/adapter-pg');
    const query = { sql: CHAR_QUERY, args: [], argTypes: [] };
    const read = async (Client: typeof pg.Client) => {
      const pool = new pg.Pool({ connectionString: ADMIN_URL, Client });
      const adapter = await new PrismaPg(pool).connect();
      try {
        return await adapter.queryRaw(query);
      } finally {
        await adapter.dispose();
        await pool.end();
      }
    };

    // When adapter-pg learns the type, this fails: the patch can then go.
    await expect(read(pg.Client)).rejects.toThrow(/UnsupportedNativeDataType|Unsupported column type/);
    const patched = await read(CharAsTextClient);
    expect(patched.columnNames).toEqual(['kind', 'one']);
    expect(patched.rows).toEqual([['r', 1]]);
  });
});
