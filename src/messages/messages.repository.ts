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

export interface Sealed {
  ciphertext: Uint8Array;
  nonce: Uint8Array;
  keyVersion: number;
}

interface MessageRow {
  id: string;
  conversation_id: string;
  seq: bigint;
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

@Injectable()
export class MessagesRepository {
  constructor(private readonly prisma: PrismaService) {}

  async findByClientMsgId(senderId: string, clientMsgId: string): Promise<SealedMessage | null> {
    const rows = await this.prisma.$queryRaw<SealedRow[]>`
      SELECT m.*, c.encryption, c.wrapped_key, c.key_version AS conversation_key_version
      FROM messages m JOIN conversations c ON c.id = m.conversation_id
      WHERE m.sender_id = ${senderId} AND m.client_msg_id = ${clientMsgId}`;
    return rows[0] ? toSealed(rows[0]) : null;
  }

  /**
   * Stores a message under the conversation's next seq, in one transaction: the
   * conversation row lock serialises senders, so seqs have no gaps or repeats, and
   * created_at increases with seq. `seal` runs inside it, once the seq is known (the
   * seq is part of the ciphertext's associated data). Returns null when the sender's
   * clientMsgId already exists (the transaction then rolls back: no seq is used).
   */
  async insertNext(message: NewMessage, seal: (seq: number) => Sealed): Promise<StoredMessage | null> {
    try {
      return await this.prisma.$transaction(async (tx) => {
        const next = await tx.$queryRaw<{ last_seq: bigint; at: Date }[]>`
          UPDATE conversations
          SET last_seq = last_seq + 1,
              last_activity_at = GREATEST(clock_timestamp(), last_activity_at + interval '1 millisecond')
          WHERE id = ${message.conversationId}::uuid
          RETURNING last_seq, last_activity_at AS at`;
        const seq = Number(next[0].last_seq);
        const sealed = seal(seq);
        const rows = await tx.$queryRaw<MessageRow[]>`
          INSERT INTO messages (id, conversation_id, seq, sender_id, sender_device_id, client_msg_id, content_type,
                                ciphertext, nonce, key_version, created_at)
          VALUES (${message.id}::uuid, ${message.conversationId}::uuid, ${seq}::bigint, ${message.senderId}, ${message.senderDeviceId},
                  ${message.clientMsgId}, ${message.contentType}, ${Buffer.from(sealed.ciphertext)}, ${Buffer.from(sealed.nonce)},
                  ${sealed.keyVersion}, ${next[0].at})
          ON CONFLICT (sender_id, client_msg_id) DO NOTHING
          RETURNING *`;
        if (rows.length === 0) throw new DuplicateClientMsgId();
        return toStored(rows[0]);
      });
    } catch (error) {
      if (error instanceof DuplicateClientMsgId) return null;
      throw error;
    }
  }

  /**
   * Stores a batch of messages in one transaction (group commit): one round trip finds
   * clientMsgIds already stored, one assigns each conversation its next seqs (rows locked
   * in id order), `seal` runs once per message with its seq, one multi-row INSERT stores
   * them. Already-stored clientMsgIds take no seq and come back in `existing`. A unique
   * violation (a concurrent duplicate on another instance) aborts the whole batch with
   * `BatchConflict`, and the caller stores its messages one by one instead.
   */
  async insertBatch(
    batch: readonly NewMessage[],
    seal: (message: NewMessage, seq: number) => Sealed,
  ): Promise<{ stored: StoredMessage[]; existing: SealedMessage[] }> {
    try {
      return await this.prisma.$transaction(async (tx) => {
        const existing = await tx.$queryRaw<SealedRow[]>`
          SELECT m.*, c.encryption, c.wrapped_key, c.key_version AS conversation_key_version
          FROM messages m JOIN conversations c ON c.id = m.conversation_id
          JOIN unnest(${batch.map((m) => m.senderId)}::text[], ${batch.map((m) => m.clientMsgId)}::text[]) AS k(sender_id, client_msg_id)
            ON m.sender_id = k.sender_id AND m.client_msg_id = k.client_msg_id`;
        const taken = new Set(existing.map((row) => `${row.sender_id}\n${row.client_msg_id}`));
        const fresh = batch.filter((m) => !taken.has(`${m.senderId}\n${m.clientMsgId}`));
        if (fresh.length === 0) return { stored: [], existing: existing.map(toSealed) };

        const counts = new Map<string, number>();
        for (const m of fresh) counts.set(m.conversationId, (counts.get(m.conversationId) ?? 0) + 1);
        const ids = [...counts.keys()].sort();
        const next = await tx.$queryRaw<{ id: string; last_seq: bigint; at: Date }[]>`
          WITH locked AS (
            SELECT id FROM conversations WHERE id = ANY(${ids}::uuid[]) ORDER BY id FOR UPDATE
          )
          UPDATE conversations c
          SET last_seq = c.last_seq + v.n,
              last_activity_at = GREATEST(clock_timestamp(), c.last_activity_at + interval '1 millisecond')
                                 + (v.n - 1) * interval '1 millisecond'
          FROM unnest(${ids}::uuid[], ${ids.map((id) => counts.get(id) ?? 0)}::int[]) AS v(id, n), locked
          WHERE c.id = v.id AND locked.id = v.id
          RETURNING c.id, c.last_seq, c.last_activity_at AS at`;
        const cursor = new Map(
          next.map((row) => [
            row.id,
            {
              seq: Number(row.last_seq) - (counts.get(row.id) ?? 0),
              at: row.at.getTime() - ((counts.get(row.id) ?? 1) - 1),
            },
          ]),
        );
        const rows = fresh.map((m) => {
          const position = cursor.get(m.conversationId);
          if (!position) throw new Error(`conversation ${m.conversationId} vanished while storing`);
          position.seq += 1;
          const createdAt = new Date(position.at);
          position.at += 1;
          return { message: m, seq: position.seq, createdAt, sealed: seal(m, position.seq) };
        });
        await tx.$executeRaw`
          INSERT INTO messages (id, conversation_id, seq, sender_id, sender_device_id, client_msg_id, content_type,
                                ciphertext, nonce, key_version, created_at)
          SELECT * FROM unnest(
            ${rows.map((r) => r.message.id)}::uuid[], ${rows.map((r) => r.message.conversationId)}::uuid[],
            ${rows.map((r) => r.seq)}::bigint[], ${rows.map((r) => r.message.senderId)}::text[],
            ${rows.map((r) => r.message.senderDeviceId)}::text[], ${rows.map((r) => r.message.clientMsgId)}::text[],
            ${rows.map((r) => r.message.contentType)}::text[], ${rows.map((r) => Buffer.from(r.sealed.ciphertext))}::bytea[],
            ${rows.map((r) => Buffer.from(r.sealed.nonce))}::bytea[], ${rows.map((r) => r.sealed.keyVersion)}::int[],
            ${rows.map((r) => r.createdAt)}::timestamptz[])`;
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
        };
      });
    } catch (error) {
      if (/unique constraint|23505|deadlock|40P01/i.test(String((error as { message?: unknown }).message ?? error))) {
        throw new BatchConflict();
      }
      throw error;
    }
  }

  async findByIds(ids: readonly string[]): Promise<SealedMessage[]> {
    if (ids.length === 0) return [];
    const rows = await this.prisma.$queryRaw<SealedRow[]>`
      SELECT m.*, c.encryption, c.wrapped_key, c.key_version AS conversation_key_version
      FROM messages m JOIN conversations c ON c.id = m.conversation_id
      WHERE m.id = ANY(${ids as string[]}::uuid[])`;
    return rows.map(toSealed);
  }

  /** A page of a conversation in ascending seq, plus whether more lie in the paging direction. */
  async page(
    conversationId: string,
    range: { beforeSeq?: number; afterSeq?: number; limit: number },
  ): Promise<{ messages: StoredMessage[]; hasMore: boolean }> {
    const before = range.beforeSeq ?? Number.MAX_SAFE_INTEGER;
    const after = range.afterSeq ?? 0;
    // With only afterSeq, page forward from it; otherwise page backward from beforeSeq (or the end).
    const forward = range.afterSeq !== undefined && range.beforeSeq === undefined;
    const rows = forward
      ? await this.prisma.$queryRaw<MessageRow[]>`
          SELECT * FROM messages WHERE conversation_id = ${conversationId}::uuid AND seq > ${after}::bigint AND seq < ${before}::bigint
          ORDER BY seq ASC LIMIT ${range.limit + 1}::int`
      : await this.prisma.$queryRaw<MessageRow[]>`
          SELECT * FROM messages WHERE conversation_id = ${conversationId}::uuid AND seq > ${after}::bigint AND seq < ${before}::bigint
          ORDER BY seq DESC LIMIT ${range.limit + 1}::int`;
    const hasMore = rows.length > range.limit;
    const page = rows.slice(0, range.limit).map(toStored);
    if (!forward) page.reverse();
    return { messages: page, hasMore };
  }
}

class DuplicateClientMsgId extends Error {}

/** A batch clashed with a concurrent writer (duplicate clientMsgId, deadlock): store one by one. */
export class BatchConflict extends Error {}
