// A patch of `pg` internals for the schema engine's introspection (scripts/migrations-diff.ts):
// adapter-pg throws on PostgreSQL's internal `"char"` type (pg_class.relkind and the like),
// which the engine reads. CharAsTextClient reports those columns as text.
//
// It relies on pg's private surface, pinned by test/integration/migrations.spec.ts
// ("the pg surface CharAsTextClient relies on"): `client.connection` is an EventEmitter that
// emits 'rowDescription' with `fields[].dataTypeID`, and a listener prepended to it runs
// before the client's own, which hands the description to the query.
import pg from 'pg';

export const PG_CHAR_OID = 18;
export const PG_TEXT_OID = 25;

export interface RowDescription {
  fields: { dataTypeID: number }[];
}

/** A `"char"` value is a single character sent as text; telling the adapter "text" is exact. */
function describeCharAsText(message: RowDescription): void {
  message.fields = message.fields.map((field) =>
    field.dataTypeID === PG_CHAR_OID ? { ...field, dataTypeID: PG_TEXT_OID } : field,
  );
}

export class CharAsTextClient extends pg.Client {
  constructor(config?: string | pg.ClientConfig) {
    super(config);
    // Runs before the client's own handler, which hands the description to the query.
    this.connection.prependListener('rowDescription', describeCharAsText);
  }
}
