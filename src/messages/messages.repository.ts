import { Injectable } from '@nestjs/common';

import { PrismaService } from '../prisma/prisma.service.js';

/** A stored message row, still sealed. */
export interface StoredMessage {
  id: string;
  conversationId: string;
  seq: number;
  senderId: string;
  senderDeviceId: string;
  clientMsgId: string;
  contentType: string;
  ciphertext: Uint8Array;
  nonce: Uint8Array;
  keyVersion: number;
  createdAt: Date;
}

/** A stored message with what is needed to open it: its conversation's wrapped key. */
export interface SealedMessage extends StoredMessage {
  encryption: 'server' | 'e2e';
  wrappedKey: Uint8Array;
  conversationKeyVersion: number;
}

export interface NewMessage {
  id: string;
  conversationId: string;
  senderId: string;
  senderDeviceId: string;
  clientMsgId: string;
  contentType: string;
}

/** A conversation's data key as stored: read in the same transaction that seals with it. */
export interface StoredKey {
  conversationId: string;
  encryption: 'server' | 'e2e';
  wrappedKey: Uint8Array;
  keyVersion: number;
}

export interface Sealed {
  ciphertext: Uint8Array;
  nonce: Uint8Array;
  keyVersion: number;
}

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
}

interface SealedRow extends MessageRow {
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
});

const toSealed = (row: SealedRow): SealedMessage => ({
  ...toStored(row),
  encryption: row.encryption,
  wrappedKey: row.wrapped_key,
  conversationKeyVersion: row.conversation_key_version,
});

interface NextSeqRow {
  id: string;
  last_seq: string;
  at: Date;
  encryption: 'server' | 'e2e';
  wrapped_key: Uint8Array;
  key_version: number;
}

const keyOfRow = (row: NextSeqRow): StoredKey => ({
  conversationId: row.id,
  encryption: row.encryption,
  wrappedKey: row.wrapped_key,
  keyVersion: row.key_version,
});

/** The column arrays of a multi-row INSERT through unnest, id … key_version in table order. */
function columnsOf(rows: readonly { message: NewMessage; seq: number; sealed: Sealed }[]): unknown[][] {
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

const SEALED_COLUMNS = `m.id, m.conversation_id, m.seq, m.sender_id, m.sender_device_id, m.client_msg_id, m.content_type,
  m.ciphertext, m.nonce, m.key_version, m.created_at, c.encryption, c.wrapped_key, c.key_version AS conversation_key_version`;
const MESSAGE_COLUMNS = `id, conversation_id, seq, sender_id, sender_device_id, client_msg_id, content_type, ciphertext, nonce,
  key_version, created_at`;

/**
 * Message rows in PostgreSQL. This is the hot path, so it sends named SQL straight
 * through the pool (PrismaService.sql) rather than through Prisma's query layer.
 */
@Injectable()
export class MessagesRepository {
  constructor(private readonly prisma: PrismaService) {}

  async findByClientMsgId(senderId: string, clientMsgId: string): Promise<SealedMessage | null> {
    const { rows } = await this.prisma.sql.query<SealedRow>({
      name: 'messages.byClientMsgId',
      text: `SELECT ${SEALED_COLUMNS} FROM messages m JOIN conversations c ON c.id = m.conversation_id
             WHERE m.sender_id = $1 AND m.client_msg_id = $2`,
      values: [senderId, clientMsgId],
    });
    return rows[0] ? toSealed(rows[0]) : null;
  }

  /**
   * Stores one message under the conversation's next seq, in one transaction: the
   * conversation row lock serialises senders, so seqs have no gaps or repeats, and
   * created_at increases with seq. `seal` runs inside it, once the seq is known (the
   * seq is part of the ciphertext's associated data). Returns null when the sender's
   * clientMsgId already exists (the transaction then rolls back: no seq is used).
   */
  async insertNext(message: NewMessage, seal: (seq: number, key: StoredKey) => Sealed): Promise<StoredMessage | null> {
    try {
      return await this.prisma.transaction(async (sql) => {
        const next = await sql.query<NextSeqRow>({
          name: 'messages.nextSeq',
          text: `UPDATE conversations
                 SET last_seq = last_seq + 1,
                     last_activity_at = GREATEST(clock_timestamp(), last_activity_at + interval '1 millisecond')
                 WHERE id = $1 RETURNING id, last_seq, last_activity_at AS at, encryption, wrapped_key, key_version`,
          values: [message.conversationId],
        });
        if (next.rows.length === 0) throw new Error(`conversation ${message.conversationId} vanished while storing`);
        const seq = Number(next.rows[0].last_seq);
        const sealed = seal(seq, keyOfRow(next.rows[0]));
        const inserted = await sql.query<MessageRow>({
          name: 'messages.insertOne',
          text: `INSERT INTO messages (${MESSAGE_COLUMNS})
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                 ON CONFLICT (sender_id, client_msg_id) DO NOTHING
                 RETURNING ${MESSAGE_COLUMNS}`,
          values: [
            message.id,
            message.conversationId,
            seq,
            message.senderId,
            message.senderDeviceId,
            message.clientMsgId,
            message.contentType,
            Buffer.from(sealed.ciphertext),
            Buffer.from(sealed.nonce),
            sealed.keyVersion,
            next.rows[0].at,
          ],
        });
        if (inserted.rows.length === 0) throw new DuplicateClientMsgId();
        return toStored(inserted.rows[0]);
      });
    } catch (error) {
      if (error instanceof DuplicateClientMsgId) return null;
      throw error;
    }
  }

  /**
   * Stores a batch of messages in one transaction (group commit): one round trip locks
   * the conversations in id order and assigns each its next seqs, `seal` runs once per
   * message with its seq, and one multi-row INSERT stores them. Resends are rare, so
   * by default nothing looks for them first: if the INSERT meets an already-stored
   * clientMsgId the transaction rolls back with `ResendInBatch`, and the caller runs the
   * batch again with `lookForResends`, which finds them first (they take no seq and come
   * back in `existing`). A clash then, or a deadlock (a concurrent writer on another
   * instance), aborts with `BatchConflict`; the caller stores its messages one by one.
   */
  async insertBatch(
    batch: readonly NewMessage[],
    seal: (message: NewMessage, seq: number, key: StoredKey) => Sealed,
    lookForResends: boolean,
  ): Promise<BatchResult> {
    try {
      return await this.prisma.transaction(async (sql) => {
        const existing = !lookForResends
          ? []
          : (
              await sql.query<SealedRow>({
                name: 'messages.batchExisting',
                text: `SELECT ${SEALED_COLUMNS}
                   FROM unnest($1::text[], $2::text[]) AS k(sender_id, client_msg_id)
                   JOIN messages m ON m.sender_id = k.sender_id AND m.client_msg_id = k.client_msg_id
                   JOIN conversations c ON c.id = m.conversation_id`,
                values: [batch.map((m) => m.senderId), batch.map((m) => m.clientMsgId)],
              })
            ).rows;
        const taken = new Set(existing.map((row) => `${row.sender_id}\n${row.client_msg_id}`));
        const fresh = batch.filter((m) => !taken.has(`${m.senderId}\n${m.clientMsgId}`));
        if (fresh.length === 0) return { stored: [], existing: existing.map(toSealed), heads: new Map() };

        const counts = new Map<string, number>();
        for (const m of fresh) counts.set(m.conversationId, (counts.get(m.conversationId) ?? 0) + 1);
        const ids = [...counts.keys()].sort();
        const next = await sql.query<NextSeqRow>({
          name: 'messages.batchNextSeq',
          text: `WITH locked AS (
                   SELECT id FROM conversations WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE
                 )
                 UPDATE conversations c
                 SET last_seq = c.last_seq + v.n,
                     last_activity_at = GREATEST(clock_timestamp(), c.last_activity_at + interval '1 millisecond')
                                        + (v.n - 1) * interval '1 millisecond'
                 FROM unnest($1::uuid[], $2::int[]) AS v(id, n), locked
                 WHERE c.id = v.id AND locked.id = v.id
                 RETURNING c.id, c.last_seq, c.last_activity_at AS at, c.encryption, c.wrapped_key, c.key_version`,
          values: [ids, ids.map((id) => counts.get(id) ?? 0)],
        });
        const position = new Map(
          next.rows.map((row) => {
            const n = counts.get(row.id) ?? 1;
            return [row.id, { seq: Number(row.last_seq) - n, at: row.at.getTime() - (n - 1), key: keyOfRow(row) }];
          }),
        );
        const rows = fresh.map((m) => {
          const at = position.get(m.conversationId);
          if (!at) throw new Error(`conversation ${m.conversationId} vanished while storing`);
          at.seq += 1;
          const createdAt = new Date(at.at);
          at.at += 1;
          return { message: m, seq: at.seq, createdAt, sealed: seal(m, at.seq, at.key) };
        });
        const inserted = await sql.query({
          name: 'messages.batchInsert',
          text: `INSERT INTO messages (${MESSAGE_COLUMNS})
                 SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[],
                                      $8::bytea[], $9::bytea[], $10::int[], $11::timestamptz[])
                 ON CONFLICT (sender_id, client_msg_id) DO NOTHING`,
          values: [...columnsOf(rows), rows.map((r) => r.createdAt)],
        });
        if (inserted.rowCount !== rows.length) {
          // A resend (or a concurrent duplicate) took no row: roll back, no seq is used.
          throw lookForResends ? new BatchConflict() : new ResendInBatch();
        }
        return {
          stored: rows.map((r) => ({
            ...r.message,
            seq: r.seq,
            ciphertext: r.sealed.ciphertext,
            nonce: r.sealed.nonce,
            keyVersion: r.sealed.keyVersion,
            createdAt: r.createdAt,
          })),
          existing: existing.map(toSealed),
          heads: new Map(next.rows.map((row) => [row.id, { lastSeq: Number(row.last_seq), key: keyOfRow(row) }])),
        };
      });
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      if (code === '23505' || code === '40P01') throw new BatchConflict();
      throw error;
    }
  }

  /**
   * The one-statement store for conversations whose state this instance knows (its
   * last seq and key, as left by its own previous store): the messages were sealed with
   * seqs predicted from that state, and one atomic statement advances each conversation
   * only if its last seq and key are still exactly as predicted, and inserts the
   * messages of the conversations it advanced. No transaction round trips; anything
   * unexpected (another writer moved a conversation, its key changed) leaves that
   * conversation untouched and reported in `missed`, for the transactional path.
   * A resend (unique violation) fails the whole statement: nothing is stored.
   */
  async insertPredicted(
    rows: readonly { message: NewMessage; seq: number; ordinal: number; sealed: Sealed }[],
    heads: readonly { conversationId: string; expectedLastSeq: number; count: number; key: StoredKey }[],
  ): Promise<{ createdAt: Map<string, Date>; missed: Set<string> }> {
    const { rows: inserted } = await this.prisma.sql.query<{ id: string; conversation_id: string; created_at: Date }>({
      name: 'messages.insertPredicted',
      text: `WITH v AS (
               SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::int[], $4::int[], $5::bytea[])
                 AS v(id, expected, n, key_version, wrapped_key)
             ), upd AS (
               UPDATE conversations c
               SET last_seq = c.last_seq + v.n,
                   last_activity_at = GREATEST(clock_timestamp(), c.last_activity_at + interval '1 millisecond')
                                      + (v.n - 1) * interval '1 millisecond'
               FROM v
               WHERE c.id = v.id AND c.last_seq = v.expected AND c.key_version = v.key_version
                 AND c.wrapped_key = v.wrapped_key
               RETURNING c.id, v.n, c.last_activity_at AS at
             )
             INSERT INTO messages (${MESSAGE_COLUMNS})
             SELECT r.id, r.conversation_id, r.seq, r.sender_id, r.sender_device_id, r.client_msg_id, r.content_type,
                    r.ciphertext, r.nonce, r.key_version, upd.at - (upd.n - r.ordinal) * interval '1 millisecond'
             FROM unnest($6::uuid[], $7::uuid[], $8::bigint[], $9::text[], $10::text[], $11::text[], $12::text[],
                         $13::bytea[], $14::bytea[], $15::int[], $16::int[])
               AS r(id, conversation_id, seq, sender_id, sender_device_id, client_msg_id, content_type,
                    ciphertext, nonce, key_version, ordinal)
             JOIN upd ON upd.id = r.conversation_id
             RETURNING id, conversation_id, created_at`,
      values: [
        heads.map((h) => h.conversationId),
        heads.map((h) => h.expectedLastSeq),
        heads.map((h) => h.count),
        heads.map((h) => h.key.keyVersion),
        heads.map((h) => Buffer.from(h.key.wrappedKey)),
        ...columnsOf(rows),
        rows.map((r) => r.ordinal),
      ],
    });
    const createdAt = new Map(inserted.map((row) => [row.id, row.created_at]));
    const stored = new Set(inserted.map((row) => row.conversation_id));
    return { createdAt, missed: new Set(heads.map((h) => h.conversationId).filter((id) => !stored.has(id))) };
  }

  async findByIds(ids: readonly string[]): Promise<SealedMessage[]> {
    if (ids.length === 0) return [];
    const { rows } = await this.prisma.sql.query<SealedRow>({
      name: 'messages.byIds',
      text: `SELECT ${SEALED_COLUMNS} FROM messages m JOIN conversations c ON c.id = m.conversation_id
             WHERE m.id = ANY($1::uuid[])`,
      values: [ids],
    });
    return rows.map(toSealed);
  }

  /** A page of a conversation in ascending seq, plus whether more lie in the paging direction. */
  async page(
    conversationId: string,
    range: { beforeSeq?: number; afterSeq?: number; limit: number },
  ): Promise<{ messages: SealedMessage[]; hasMore: boolean }> {
    const before = range.beforeSeq ?? Number.MAX_SAFE_INTEGER;
    const after = range.afterSeq ?? 0;
    // With only afterSeq, page forward from it; otherwise page backward from beforeSeq (or the end).
    const forward = range.afterSeq !== undefined && range.beforeSeq === undefined;
    const { rows } = await this.prisma.sql.query<SealedRow>({
      name: forward ? 'messages.pageForward' : 'messages.pageBackward',
      text: `SELECT ${SEALED_COLUMNS} FROM messages m JOIN conversations c ON c.id = m.conversation_id
             WHERE m.conversation_id = $1 AND m.seq > $2 AND m.seq < $3
             ORDER BY m.seq ${forward ? 'ASC' : 'DESC'} LIMIT $4`,
      values: [conversationId, after, before, range.limit + 1],
    });
    const hasMore = rows.length > range.limit;
    const page = rows.slice(0, range.limit).map(toSealed);
    if (!forward) page.reverse();
    return { messages: page, hasMore };
  }
}

class DuplicateClientMsgId extends Error {}

/** The batch held a clientMsgId already stored: run it again with `lookForResends`. */
export class ResendInBatch extends Error {}

/** What a transactional batch stored, found stored, and left each conversation at. */
export interface BatchResult {
  stored: StoredMessage[];
  existing: SealedMessage[];
  heads: Map<string, { lastSeq: number; key: StoredKey }>;
}

/** A batch clashed with a concurrent writer (duplicate clientMsgId, deadlock): store one by one. */
export class BatchConflict extends Error {}
