import { Injectable } from '@nestjs/common';

import { PrismaService, type Sql } from '../prisma/prisma.service.js';
import type { ConversationKey, NewMessage, Sealed, StoredMessage, StoredPage } from './message-store.types.js';

interface MessageRow {
  id: string;
  conversation_id: string;
  seq: string | bigint;
  sender_id: string;
  sender_device_id: string;
  client_msg_id: string;
  content_type: string;
  ciphertext: Uint8Array;
  nonce: Uint8Array;
  key_version: number;
  created_at: Date;
  encryption: 'server' | 'e2e';
  wrapped_key: Uint8Array;
  conversation_key_version: number;
}

const toStored = (row: MessageRow): StoredMessage => ({
  id: row.id,
  conversationId: row.conversation_id,
  seq: Number(row.seq),
  senderId: row.sender_id,
  senderDeviceId: row.sender_device_id,
  clientMsgId: row.client_msg_id,
  contentType: row.content_type,
  ciphertext: row.ciphertext,
  nonce: row.nonce,
  keyVersion: row.key_version,
  createdAt: row.created_at,
  key: {
    conversationId: row.conversation_id,
    encryption: row.encryption,
    wrappedKey: row.wrapped_key,
    keyVersion: row.conversation_key_version,
  },
});

interface HeadRow {
  id: string;
  last_seq: string;
  at: Date;
  /** The activity time before this batch: when the previous message was committed. */
  previous_at: Date;
  encryption: 'server' | 'e2e';
  wrapped_key: Uint8Array;
  key_version: number;
}

const keyOfHead = (row: HeadRow): ConversationKey => ({
  conversationId: row.id,
  encryption: row.encryption,
  wrappedKey: row.wrapped_key,
  keyVersion: row.key_version,
});

/** What the predicted insert returns for each row it stored. */
interface InsertedRow {
  id: string;
  conversation_id: string;
  created_at: Date;
}

/** A message with the seq it goes under and its content sealed for that seq. */
export interface SealedRow {
  message: NewMessage;
  seq: number;
  sealed: Sealed;
}

/** Where a conversation was left: its last seq and the key its messages are sealed with. */
export interface Head {
  lastSeq: number;
  key: ConversationKey;
  /** When its last message was committed (ms). */
  at: number;
}

/**
 * What a transactional batch came to. `clash`: it met a stored clientMsgId it had not
 * looked for, or a concurrent writer (a duplicate committed meanwhile, a deadlock); it
 * was rolled back and used no seq.
 */
export type BatchResult =
  | {
      kind: 'stored';
      stored: (StoredMessage & { previousAt: number })[];
      existing: StoredMessage[];
      heads: Map<string, Head>;
    }
  | { kind: 'clash' };

/** Inside a transaction: roll back, then answer `clash`. */
class Clash extends Error {}

const MESSAGE_COLUMNS = `id, conversation_id, seq, sender_id, sender_device_id, client_msg_id, content_type, ciphertext, nonce,
  key_version, created_at`;
const STORED_COLUMNS = `m.id, m.conversation_id, m.seq, m.sender_id, m.sender_device_id, m.client_msg_id, m.content_type,
  m.ciphertext, m.nonce, m.key_version, m.created_at, c.encryption, c.wrapped_key, c.key_version AS conversation_key_version`;
/** The column arrays of rows, in MESSAGE_COLUMNS order up to key_version, typed for unnest. */
const ROW_ARRAYS = `$1::uuid[], $2::uuid[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[],
  $8::bytea[], $9::bytea[], $10::int[]`;

function rowArrays(rows: readonly SealedRow[]): unknown[][] {
  return [
    rows.map((r) => r.message.id),
    rows.map((r) => r.message.conversationId),
    rows.map((r) => r.seq),
    rows.map((r) => r.message.senderId),
    rows.map((r) => r.message.senderDeviceId),
    rows.map((r) => r.message.clientMsgId),
    rows.map((r) => r.message.contentType),
    rows.map((r) => Buffer.from(r.sealed.ciphertext)),
    rows.map((r) => Buffer.from(r.sealed.nonce)),
    rows.map((r) => r.sealed.keyVersion),
  ];
}

/**
 * The next `n` seqs of each conversation: its last seq moves by n and its activity time
 * by at least n ms, so that created_at (the activity time, minus 1 ms per later message
 * of the batch) increases with seq. `filter` narrows which conversations move.
 */
const ADVANCE = (source: string, filter: string) => `UPDATE conversations c
  SET last_seq = c.last_seq + v.n,
      last_activity_at = GREATEST(clock_timestamp(), c.last_activity_at + interval '1 millisecond')
                         + (v.n - 1) * interval '1 millisecond'
  FROM ${source}
  WHERE c.id = v.id ${filter}`;

/**
 * Message rows in PostgreSQL: one insert statement family (every store is a batch; a
 * single message is a batch of one), the reads that open them, and pages. This is the
 * hot path, so it sends named SQL straight through the pool (PrismaService.sql) rather
 * than through Prisma's query layer.
 */
@Injectable()
export class MessageStoreRepository {
  constructor(private readonly prisma: PrismaService) {}

  /**
   * Stores a batch in one transaction (group commit): one round trip locks the
   * conversations in id order and assigns each its next seqs, `seal` runs once per
   * message with its seq and the key read under the lock, and one multi-row INSERT
   * stores them. With `lookForResends`, the sender's already-stored clientMsgIds are
   * found first (they take no seq and come back in `existing`); without, meeting one
   * is a `clash`, as is a concurrent writer's duplicate or a deadlock. Each stored
   * message comes with `previousAt`: when its conversation's previous message was
   * committed (see SeqMerge, which orders live messages across instances by it).
   */
  async insertBatch(
    batch: readonly NewMessage[],
    seal: (message: NewMessage, seq: number, key: ConversationKey) => Sealed,
    lookForResends: boolean,
  ): Promise<BatchResult> {
    try {
      return await this.prisma.transaction(async (sql) => {
        const existing = lookForResends ? await this.findResends(sql, batch) : [];
        const taken = new Set(existing.map((m) => `${m.senderId}\n${m.clientMsgId}`));
        const fresh = batch.filter((m) => !taken.has(`${m.senderId}\n${m.clientMsgId}`));
        if (fresh.length === 0) return { kind: 'stored', stored: [], existing, heads: new Map() } as const;

        const counts = new Map<string, number>();
        for (const m of fresh) counts.set(m.conversationId, (counts.get(m.conversationId) ?? 0) + 1);
        const ids = [...counts.keys()].sort();
        const { rows: heads } = await sql.query<HeadRow>({
          name: 'messages.batchNextSeq',
          text: `WITH locked AS (
                   SELECT id, last_activity_at FROM conversations WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE
                 )
                 ${ADVANCE('unnest($1::uuid[], $2::int[]) AS v(id, n), locked', 'AND locked.id = v.id')}
                 RETURNING c.id, c.last_seq, c.last_activity_at AS at, locked.last_activity_at AS previous_at,
                           c.encryption, c.wrapped_key, c.key_version`,
          values: [ids, ids.map((id) => counts.get(id) ?? 0)],
        });
        const position = new Map(
          heads.map((row) => {
            const n = counts.get(row.id) ?? 1;
            return [
              row.id,
              {
                seq: Number(row.last_seq) - n,
                at: row.at.getTime() - (n - 1),
                previousAt: row.previous_at.getTime(),
                key: keyOfHead(row),
              },
            ];
          }),
        );
        const rows = fresh.map((message) => {
          const at = position.get(message.conversationId);
          if (!at) throw new Error(`conversation ${message.conversationId} vanished while storing`);
          at.seq += 1;
          const createdAt = new Date(at.at);
          const { previousAt } = at;
          at.previousAt = at.at;
          at.at += 1;
          return { message, seq: at.seq, createdAt, previousAt, key: at.key, sealed: seal(message, at.seq, at.key) };
        });
        const inserted = await sql.query({
          name: 'messages.batchInsert',
          text: `INSERT INTO messages (${MESSAGE_COLUMNS})
                 SELECT * FROM unnest(${ROW_ARRAYS}, $11::timestamptz[])
                 ON CONFLICT (sender_id, client_msg_id) DO NOTHING`,
          values: [...rowArrays(rows), rows.map((r) => r.createdAt)],
        });
        // A resend (or a concurrent duplicate) took no row: roll back, no seq is used.
        if (inserted.rowCount !== rows.length) throw new Clash();
        return {
          kind: 'stored',
          stored: rows.map((r) => ({
            ...r.message,
            seq: r.seq,
            ...r.sealed,
            createdAt: r.createdAt,
            key: r.key,
            previousAt: r.previousAt,
          })),
          existing,
          heads: new Map(
            heads.map((row) => [row.id, { lastSeq: Number(row.last_seq), key: keyOfHead(row), at: row.at.getTime() }]),
          ),
        } as const;
      });
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      if (error instanceof Clash || code === '23505' || code === '40P01') return { kind: 'clash' };
      throw error;
    }
  }

  /**
   * The one-statement store for conversations whose head this instance knows (as left
   * by its own previous store): the rows were sealed with seqs predicted from it, and one
   * atomic statement advances each conversation only if its last seq and key are still
   * exactly as predicted, and inserts the rows of the conversations it advanced. No
   * transaction round trips; a conversation another writer moved (or whose key changed)
   * is left untouched and reported in `missed`. A resend (unique violation) fails the
   * whole statement: nothing is stored.
   */
  async insertPredicted(
    rows: readonly (SealedRow & { ordinal: number })[],
    heads: readonly { conversationId: string; expected: Head; count: number }[],
  ): Promise<{ createdAt: Map<string, Date>; missed: Set<string> }> {
    const inserted =
      rows.length === 1
        ? await this.insertPredictedOne(rows[0], heads[0])
        : await this.insertPredictedMany(rows, heads);
    const createdAt = new Map(inserted.map((row) => [row.id, row.created_at]));
    const stored = new Set(inserted.map((row) => row.conversation_id));
    return { createdAt, missed: new Set(heads.map((h) => h.conversationId).filter((id) => !stored.has(id))) };
  }

  /**
   * insertPredicted for one message, the usual batch below saturation: scalar
   * parameters instead of sixteen arrays, so neither pg nor PostgreSQL builds and parses
   * array literals, and the sealed bytes go as binary parameters rather than hex text.
   * Measured (docs/performance.md, #20): PostgreSQL's CPU at 1,000 msg/s 0.30 cores
   * against 0.33 with the array statement.
   */
  private async insertPredictedOne(row: SealedRow, head: { expected: Head }): Promise<InsertedRow[]> {
    const { expected } = head;
    const { rows: inserted } = await this.prisma.sql.query<InsertedRow>({
      name: 'messages.insertPredictedOne',
      text: `WITH upd AS (
               ${ADVANCE('(VALUES ($2::uuid, 1)) AS v(id, n)', 'AND c.last_seq = $11 AND c.key_version = $12 AND c.wrapped_key = $13')}
               RETURNING c.last_activity_at AS at
             )
             INSERT INTO messages (${MESSAGE_COLUMNS})
             SELECT $1::uuid, $2::uuid, $3::bigint, $4::text, $5::text, $6::text, $7::text, $8::bytea, $9::bytea, $10::int, upd.at
             FROM upd
             RETURNING id, conversation_id, created_at`,
      values: [
        row.message.id,
        row.message.conversationId,
        row.seq,
        row.message.senderId,
        row.message.senderDeviceId,
        row.message.clientMsgId,
        row.message.contentType,
        Buffer.from(row.sealed.ciphertext),
        Buffer.from(row.sealed.nonce),
        row.sealed.keyVersion,
        expected.lastSeq,
        expected.key.keyVersion,
        Buffer.from(expected.key.wrappedKey),
      ],
    });
    return inserted;
  }

  private async insertPredictedMany(
    rows: readonly (SealedRow & { ordinal: number })[],
    heads: readonly { conversationId: string; expected: Head; count: number }[],
  ): Promise<InsertedRow[]> {
    const { rows: inserted } = await this.prisma.sql.query<InsertedRow>({
      name: 'messages.insertPredicted',
      text: `WITH v AS (
               SELECT * FROM unnest($12::uuid[], $13::bigint[], $14::int[], $15::int[], $16::bytea[])
                 AS v(id, expected, n, key_version, wrapped_key)
             ), upd AS (
               ${ADVANCE('v', 'AND c.last_seq = v.expected AND c.key_version = v.key_version AND c.wrapped_key = v.wrapped_key')}
               RETURNING c.id, v.n, c.last_activity_at AS at
             )
             INSERT INTO messages (${MESSAGE_COLUMNS})
             SELECT r.id, r.conversation_id, r.seq, r.sender_id, r.sender_device_id, r.client_msg_id, r.content_type,
                    r.ciphertext, r.nonce, r.key_version, upd.at - (upd.n - r.ordinal) * interval '1 millisecond'
             FROM unnest(${ROW_ARRAYS}, $11::int[])
               AS r(id, conversation_id, seq, sender_id, sender_device_id, client_msg_id, content_type,
                    ciphertext, nonce, key_version, ordinal)
             JOIN upd ON upd.id = r.conversation_id
             RETURNING id, conversation_id, created_at`,
      values: [
        ...rowArrays(rows),
        rows.map((r) => r.ordinal),
        heads.map((h) => h.conversationId),
        heads.map((h) => h.expected.lastSeq),
        heads.map((h) => h.count),
        heads.map((h) => h.expected.key.keyVersion),
        heads.map((h) => Buffer.from(h.expected.key.wrappedKey)),
      ],
    });
    return inserted;
  }

  async findByClientMsgId(senderId: string, clientMsgId: string): Promise<StoredMessage | null> {
    const [found] = await this.findResends(this.prisma.sql, [{ senderId, clientMsgId }]);
    return found ?? null;
  }

  async findByIds(ids: readonly string[]): Promise<StoredMessage[]> {
    if (ids.length === 0) return [];
    const { rows } = await this.prisma.sql.query<MessageRow>({
      name: 'messages.byIds',
      text: `SELECT ${STORED_COLUMNS} FROM messages m JOIN conversations c ON c.id = m.conversation_id
             WHERE m.id = ANY($1::uuid[])`,
      values: [ids],
    });
    return rows.map(toStored);
  }

  /** A page of a conversation in ascending seq, plus whether more lie in the paging direction. */
  async page(
    conversationId: string,
    range: { beforeSeq?: number; afterSeq?: number; limit: number },
  ): Promise<StoredPage> {
    const before = range.beforeSeq ?? Number.MAX_SAFE_INTEGER;
    const after = range.afterSeq ?? 0;
    // With only afterSeq, page forward from it; otherwise page backward from beforeSeq (or the end).
    const forward = range.afterSeq !== undefined && range.beforeSeq === undefined;
    const { rows } = await this.prisma.sql.query<MessageRow>({
      name: forward ? 'messages.pageForward' : 'messages.pageBackward',
      text: `SELECT ${STORED_COLUMNS} FROM messages m JOIN conversations c ON c.id = m.conversation_id
             WHERE m.conversation_id = $1 AND m.seq > $2 AND m.seq < $3
             ORDER BY m.seq ${forward ? 'ASC' : 'DESC'} LIMIT $4`,
      values: [conversationId, after, before, range.limit + 1],
    });
    const hasMore = rows.length > range.limit;
    const page = rows.slice(0, range.limit).map(toStored);
    if (!forward) page.reverse();
    return { messages: page, hasMore };
  }

  /** The stored messages of these senders' clientMsgIds. */
  private async findResends(
    sql: Sql,
    keys: readonly { senderId: string; clientMsgId: string }[],
  ): Promise<StoredMessage[]> {
    const { rows } = await sql.query<MessageRow>({
      name: 'messages.byClientMsgIds',
      text: `SELECT ${STORED_COLUMNS}
             FROM unnest($1::text[], $2::text[]) AS k(sender_id, client_msg_id)
             JOIN messages m ON m.sender_id = k.sender_id AND m.client_msg_id = k.client_msg_id
             JOIN conversations c ON c.id = m.conversation_id`,
      values: [keys.map((k) => k.senderId), keys.map((k) => k.clientMsgId)],
    });
    return rows.map(toStored);
  }
}
