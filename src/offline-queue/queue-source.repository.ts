import { Injectable } from '@nestjs/common';

import type { DeviceRef } from '../devices/devices.types.js';
import { PrismaService } from '../prisma/prisma.service.js';
import type { ConversationState, PendingEntry } from './offline-queue.types.js';

/** A device's queue as Redis reported it, to be checked against PostgreSQL. */
export interface QueueAudit {
  device: DeviceRef;
  conversations: readonly ConversationState[];
}

/**
 * What PostgreSQL, the source of truth, says a device's offline queue should hold: the
 * messages past its delivery cursor in each conversation, not sent by that device.
 */
@Injectable()
export class QueueSourceRepository {
  constructor(private readonly prisma: PrismaService) {}

  /**
   * The device's pending messages, oldest first, in every conversation or only in
   * `conversationIds`.
   */
  async pendingFor(device: DeviceRef, limit: number, conversationIds?: readonly string[]): Promise<PendingEntry[]> {
    const { rows } = await this.prisma.sql.query<{
      id: string;
      conversation_id: string;
      seq: string;
      sender_id: string;
      created_at: Date;
    }>({
      name: 'queue.pendingFor',
      text: `SELECT m.id, m.conversation_id, m.seq, m.sender_id, m.created_at
             FROM delivery_cursors dc
             JOIN messages m ON m.conversation_id = dc.conversation_id AND m.seq > dc.acked_seq
             WHERE dc.user_id = $1 AND dc.device_id = $2
               AND ($4::uuid[] IS NULL OR dc.conversation_id = ANY($4::uuid[]))
               AND NOT (m.sender_id = $1 AND m.sender_device_id = $2)
             ORDER BY m.created_at, m.conversation_id, m.seq
             LIMIT $3`,
      values: [device.userId, device.deviceId, limit, conversationIds ?? null],
    });
    return rows.map((row) => ({
      messageId: row.id,
      conversationId: row.conversation_id,
      seq: Number(row.seq),
      senderId: row.sender_id,
      score: row.created_at.getTime(),
    }));
  }

  /**
   * For each device, the conversations whose queue lacks messages PostgreSQL holds for
   * it, in one statement for all of them. Per conversation, with Redis's cursor and
   * highest queued seq (0 for a conversation Redis does not know): every pending message
   * above the cursor (or PostgreSQL's, if that is ahead) and up to the highest seq must be
   * queued or acked ahead, and none may lie above the highest seq. A message committed
   * but not yet queued also counts as missing: the repair adds it a moment early, which
   * the queue's idempotent add makes harmless.
   */
  async conversationsMissingEntries(audits: readonly QueueAudit[]): Promise<string[][]> {
    if (audits.length === 0) return [];
    const known = audits.flatMap((audit, index) => audit.conversations.map((state) => ({ index, ...state })));
    const { rows } = await this.prisma.sql.query<{ n: number; conversation_id: string }>({
      name: 'queue.audit',
      text: `WITH d AS (
               SELECT * FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS d(user_id, device_id, n)
             ), r AS (
               SELECT * FROM unnest($3::int[], $4::text[], $5::bigint[], $6::bigint[], $7::bigint[])
                 AS r(n, conversation_id, cursor, hi, expected)
             )
             SELECT d.n::int AS n, dc.conversation_id
             FROM d
             JOIN delivery_cursors dc ON dc.user_id = d.user_id AND dc.device_id = d.device_id
             LEFT JOIN r ON r.n = d.n AND r.conversation_id = dc.conversation_id::text
             WHERE (
                 SELECT count(*) FROM messages m
                 WHERE m.conversation_id = dc.conversation_id
                   AND m.seq > GREATEST(dc.acked_seq, COALESCE(r.cursor, 0)) AND m.seq <= COALESCE(r.hi, 0)
                   AND NOT (m.sender_id = dc.user_id AND m.sender_device_id = dc.device_id)
               ) > COALESCE(r.expected, 0)
               OR EXISTS (
                 SELECT 1 FROM messages m
                 WHERE m.conversation_id = dc.conversation_id
                   AND m.seq > GREATEST(dc.acked_seq, COALESCE(r.hi, 0))
                   AND NOT (m.sender_id = dc.user_id AND m.sender_device_id = dc.device_id)
               )`,
      values: [
        audits.map((audit) => audit.device.userId),
        audits.map((audit) => audit.device.deviceId),
        known.map((state) => state.index + 1),
        known.map((state) => state.conversationId),
        known.map((state) => state.cursor),
        known.map((state) => state.highestSeq),
        known.map((state) => state.queued + state.ackedAhead),
      ],
    });
    const missing = audits.map((): string[] => []);
    for (const row of rows) missing[row.n - 1].push(row.conversation_id);
    return missing;
  }
}
