import { Injectable, type OnApplicationShutdown, type OnModuleInit } from '@nestjs/common';
import { PrismaPg } from '@prisma/adapter-pg';
import pg from 'pg';

import { AppConfig } from '../config/app-config.js';
import { PrismaClient } from '../generated/prisma/client.js';

/** What a query can run on: the pool, or one transaction's client. */
export interface Sql {
  query<R extends pg.QueryResultRow = pg.QueryResultRow>(query: pg.QueryConfig): Promise<pg.QueryResult<R>>;
}

/**
 * The Prisma client over a `pg` pool (driver adapter), plus that same pool for the hot
 * path: repositories on the message path send their SQL straight through `sql` (named,
 * so PostgreSQL parses each statement once per connection), skipping Prisma's per-query
 * work. Connects at boot; closes at shutdown in onApplicationShutdown, which Nest runs
 * after the drain and the servers closed, so no request in flight loses its database.
 */
@Injectable()
export class PrismaService extends PrismaClient implements OnModuleInit, OnApplicationShutdown {
  readonly sql: pg.Pool;

  constructor(config: AppConfig) {
    const pool = new pg.Pool({ connectionString: config.databaseUrl, max: 20, connectionTimeoutMillis: 5_000 });
    super({ adapter: new PrismaPg(pool) });
    this.sql = pool;
    // An idle client whose server went away must not crash the process; the next query reconnects.
    pool.on('error', () => undefined);
  }

  /** Runs `work` in one transaction on one connection; rolls back if it throws. */
  async transaction<T>(work: (sql: Sql) => Promise<T>): Promise<T> {
    const client = await this.sql.connect();
    try {
      await client.query('BEGIN');
      const result = await work(client);
      await client.query('COMMIT');
      return result;
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw error;
    } finally {
      client.release();
    }
  }

  async onModuleInit(): Promise<void> {
    await this.$connect();
  }

  async onApplicationShutdown(): Promise<void> {
    await this.$disconnect();
    await this.sql.end().catch(() => undefined);
  }
}
