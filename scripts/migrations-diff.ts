// Writes new migrations: the SQL that takes a database built by prisma/migrations to what
// prisma/schema.prisma describes. The Prisma CLI's `migrate dev` needs a native schema engine
// that this machine cannot download, so this runs Prisma's own schema engine compiled to
// WebAssembly (@prisma/schema-engine-wasm) over a driver adapter, with work-arounds for
// adapter-pg below. A development tool: `npm run migrate:new` (scripts/migrate.mjs) and the
// drift test use it; the service only applies migrations (src/prisma/migrator.ts), so neither
// the engine nor the Prisma CLI is in the production image (both are devDependencies).
import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

import type {
  ConnectionInfo,
  SqlDriverAdapter,
  SqlMigrationAwareDriverAdapterFactory,
} from '@prisma/driver-adapter-utils';
import type { MigrationList, SchemaEngine } from '@prisma/schema-engine-wasm';
import pg from 'pg';

import { defaultMigrationsDir, projectRoot, readMigrations } from '../src/prisma/migrator.js';
import { CharAsTextClient } from './pg-char-as-text.js';

export interface DiffMigrationsOptions {
  /** Any database on the server: a temporary shadow database is created through it. */
  shadowDatabaseUrl: string;
  schemaPath?: string;
  migrationsDir?: string;
}

export function defaultSchemaPath(): string {
  return join(projectRoot(), 'prisma', 'schema.prisma');
}

type SchemaEngineWasm = typeof import('@prisma/schema-engine-wasm/schema_engine_bg');

let schemaEngineWasm: Promise<SchemaEngineWasm> | undefined;

// The global exists in Node, but this project's lib (es2023, no DOM) does not describe it.
declare const WebAssembly: {
  instantiate(
    bytes: Uint8Array,
    imports: Record<string, Record<string, unknown>>,
  ): Promise<{ instance: { exports: { __wbindgen_start(): void } } }>;
};

/**
 * The package's entry point imports the .wasm file as an ES module, which Node 20 cannot do;
 * instantiate it ourselves with its wasm-bindgen glue, once per process (the glue keeps the
 * instance in module state).
 */
function loadSchemaEngineWasm(): Promise<SchemaEngineWasm> {
  schemaEngineWasm ??= (async () => {
    const glue = await import('@prisma/schema-engine-wasm/schema_engine_bg');
    const entry = createRequire(import.meta.url).resolve('@prisma/schema-engine-wasm');
    const bytes = readFileSync(join(dirname(entry), 'schema_engine_bg.wasm'));
    const { instance } = await WebAssembly.instantiate(bytes, { './schema_engine_bg.js': { ...glue } });
    glue.__wbg_set_wasm(instance.exports);
    instance.exports.__wbindgen_start();
    return glue;
  })();
  return schemaEngineWasm;
}

/**
 * SQL that takes a database built by the migrations to what schema.prisma describes, or ''
 * when they agree. Migrations are replayed in a temporary shadow database on the server
 * of `shadowDatabaseUrl`, dropped afterwards.
 */
export async function diffMigrationsToSchema(options: DiffMigrationsOptions): Promise<string> {
  const migrationsDir = options.migrationsDir ?? defaultMigrationsDir();
  const schemaPath = options.schemaPath ?? defaultSchemaPath();
  const wasm = await loadSchemaEngineWasm();
  const { bindMigrationAwareSqlAdapterFactory } = await import('@prisma/driver-adapter-utils');
  const adapters = await ShadowDatabaseAdapters.create(options.shadowDatabaseUrl);
  try {
    const engine = await wasm.SchemaEngine.new(
      { datamodels: undefined },
      () => {}, // the engine's own tracing: not useful to callers
      bindMigrationAwareSqlAdapterFactory(adapters),
    );
    try {
      return await runDiff(engine, migrationList(migrationsDir), schemaPath);
    } finally {
      engine.free();
    }
  } finally {
    await adapters.closeAll();
  }
}

async function runDiff(engine: SchemaEngine, migrations: MigrationList, schemaPath: string): Promise<string> {
  const result = await engine.diff({
    from: { tag: 'migrations', ...migrations },
    to: { tag: 'schemaDatamodel', files: [{ path: schemaPath, content: readFileSync(schemaPath, 'utf8') }] },
    script: true,
    exitCode: true, // 2 when there is something to migrate, 0 when they agree
    filters: { externalTables: [], externalEnums: [] },
  });
  return result.exitCode === 0 ? '' : (result.stdout ?? '');
}

function migrationList(migrationsDir: string): MigrationList {
  const lockfile = join(migrationsDir, 'migration_lock.toml');
  return {
    baseDir: migrationsDir,
    // Without a lockfile the engine cannot tell the provider; a new folder gets ours.
    lockfile: {
      path: 'migration_lock.toml',
      content: existsSync(lockfile) ? readFileSync(lockfile, 'utf8') : 'provider = "postgresql"\n',
    },
    shadowDbInitScript: '',
    migrationDirectories: readMigrations(migrationsDir).map((migration) => ({
      path: migration.name,
      migrationFile: { path: 'migration.sql', content: { tag: 'ok', value: migration.script } },
    })),
  };
}

// ---------------------------------------------------------------------------------------
// Driver adapter for the schema engine, working around three adapter-pg problems:
// - its connectToShadowDb() spreads `database` next to `connectionString`, and pg lets the
//   connection string win: the "shadow" database is the main one, and migrations get
//   replayed there. We create the shadow database and its URL ourselves.
// - it drops the shadow database before closing the pool still connected to it. We close first.
// - it throws on PostgreSQL's internal `"char"` type (pg_class.relkind and the like), which the
//   engine's introspection reads; CharAsTextClient (scripts/pg-char-as-text.ts) reports those
//   columns as text.
// Its executeScript() also splits on ';', breaking $$-quoted bodies; we send scripts whole.

type PrismaPgClass = typeof import('@prisma/adapter-pg').PrismaPg;
type DriverAdapterErrorClass = typeof import('@prisma/driver-adapter-utils').DriverAdapterError;

class ShadowDatabaseAdapters implements SqlMigrationAwareDriverAdapterFactory {
  readonly provider = 'postgres';
  readonly adapterName = '@prisma/adapter-pg';
  private readonly closers: (() => Promise<void>)[] = [];

  private constructor(
    private readonly serverUrl: string,
    private readonly PrismaPg: PrismaPgClass,
    private readonly DriverAdapterError: DriverAdapterErrorClass,
  ) {}

  static async create(serverUrl: string): Promise<ShadowDatabaseAdapters> {
    const { PrismaPg } = await import('@prisma/adapter-pg');
    const { DriverAdapterError } = await import('@prisma/driver-adapter-utils');
    return new ShadowDatabaseAdapters(serverUrl, PrismaPg, DriverAdapterError);
  }

  /** The engine's "main" database: only read (diffing migrations to a schema writes nothing there). */
  connect(): Promise<SqlDriverAdapter> {
    return this.open(this.serverUrl, async () => {});
  }

  async connectToShadowDb(): Promise<SqlDriverAdapter> {
    const name = `prisma_migrate_shadow_db_${randomUUID().replaceAll('-', '')}`;
    await runOnServer(this.serverUrl, `CREATE DATABASE "${name}"`);
    const url = new URL(this.serverUrl);
    url.pathname = `/${name}`;
    return this.open(url.toString(), () => runOnServer(this.serverUrl, `DROP DATABASE IF EXISTS "${name}"`));
  }

  /** Closes whatever the engine left open, shadow databases included (e.g. after an error). */
  async closeAll(): Promise<void> {
    for (const close of this.closers) await close();
  }

  private async open(url: string, afterClose: () => Promise<void>): Promise<SqlDriverAdapter> {
    const pool = new pg.Pool({ connectionString: url, Client: CharAsTextClient });
    const adapter = await new this.PrismaPg(pool).connect();
    const close = once(async () => {
      await adapter.dispose();
      await pool.end();
      await afterClose();
    });
    this.closers.push(close);
    return {
      provider: adapter.provider,
      adapterName: adapter.adapterName,
      queryRaw: (query) => adapter.queryRaw(query),
      executeRaw: (query) => adapter.executeRaw(query),
      executeScript: (script) => this.executeScript(pool, script),
      startTransaction: (isolationLevel) => adapter.startTransaction(isolationLevel),
      getConnectionInfo: (): ConnectionInfo => adapter.getConnectionInfo?.() ?? { supportsRelationJoins: true },
      dispose: close,
    };
  }

  /** Whole script in one simple query, as Prisma's native engine does; errors in the adapter's shape. */
  private async executeScript(pool: pg.Pool, script: string): Promise<void> {
    try {
      await pool.query(script);
    } catch (error) {
      if (!(error instanceof pg.DatabaseError)) throw error;
      throw new this.DriverAdapterError({
        kind: 'postgres',
        code: error.code ?? 'N/A',
        severity: error.severity ?? 'N/A',
        message: error.message,
        detail: error.detail,
        column: error.column,
        hint: error.hint,
      });
    }
  }
}

async function runOnServer(serverUrl: string, sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: serverUrl });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

function once(action: () => Promise<void>): () => Promise<void> {
  let done: Promise<void> | undefined;
  return () => (done ??= action());
}
