import { Injectable } from '@nestjs/common';

import { PrismaService } from '../prisma/prisma.service.js';

export interface DeviceRef {
  userId: string;
  deviceId: string;
}

/** Devices and their per-conversation delivery cursors in PostgreSQL. */
@Injectable()
export class DevicesRepository {
  constructor(private readonly prisma: PrismaService) {}

  /** Records a device (first connection) or its latest sighting. */
  async touch(userId: string, deviceId: string): Promise<void> {
    await this.prisma.$executeRaw`
      INSERT INTO devices (user_id, device_id) VALUES (${userId}, ${deviceId})
      ON CONFLICT (user_id, device_id) DO UPDATE SET last_seen_at = now()`;
  }

  /**
   * Gives the device a cursor in each of its user's conversations that lacks one, at the
   * conversation's current last seq: the device receives what is sent from now on.
   * Runs after the device row is committed, so a message committed in between is either
   * fanned out to this device or already counted in last_seq.
   */
  async ensureCursors(userId: string, deviceId: string): Promise<void> {
    await this.prisma.$executeRaw`
      INSERT INTO delivery_cursors (user_id, device_id, conversation_id, acked_seq)
      SELECT ${userId}, ${deviceId}, c.id, c.last_seq
      FROM conversation_members m JOIN conversations c ON c.id = m.conversation_id
      WHERE m.user_id = ${userId}
      ON CONFLICT DO NOTHING`;
  }

  /** Gives every device of `userId` a cursor in one conversation (the user was just added). */
  async ensureCursorsForMember(conversationId: string, userId: string): Promise<void> {
    await this.prisma.$executeRaw`
      INSERT INTO delivery_cursors (user_id, device_id, conversation_id, acked_seq)
      SELECT d.user_id, d.device_id, c.id, c.last_seq
      FROM devices d JOIN conversations c ON c.id = ${conversationId}::uuid
      WHERE d.user_id = ${userId}
      ON CONFLICT DO NOTHING`;
  }

  async devicesOf(userIds: readonly string[]): Promise<DeviceRef[]> {
    if (userIds.length === 0) return [];
    const rows = await this.prisma.$queryRaw<{ user_id: string; device_id: string }[]>`
      SELECT user_id, device_id FROM devices WHERE user_id = ANY(${userIds as string[]}::text[])`;
    return rows.map((row) => ({ userId: row.user_id, deviceId: row.device_id }));
  }

  /** Moves cursors forward only (an older ack never moves one back). */
  async advanceCursors(
    userId: string,
    deviceId: string,
    cursors: readonly { conversationId: string; ackedSeq: number }[],
  ): Promise<void> {
    if (cursors.length === 0) return;
    await this.prisma.$executeRaw`
      UPDATE delivery_cursors dc SET acked_seq = GREATEST(dc.acked_seq, v.seq), updated_at = now()
      FROM unnest(${cursors.map((c) => c.conversationId)}::uuid[], ${cursors.map((c) => c.ackedSeq)}::bigint[]) AS v(conversation_id, seq)
      WHERE dc.user_id = ${userId} AND dc.device_id = ${deviceId} AND dc.conversation_id = v.conversation_id`;
  }

  /**
   * What the device's offline queue should hold, from the source of truth: messages past
   * its cursor in each conversation, not sent by this device itself, oldest first.
   */
  async pendingFor(userId: string, deviceId: string, limit: number): Promise<PendingEntry[]> {
    const rows = await this.prisma.$queryRaw<
      { id: string; conversation_id: string; seq: bigint; sender_id: string; created_at: Date }[]
    >`
      SELECT m.id, m.conversation_id, m.seq, m.sender_id, m.created_at
      FROM delivery_cursors dc
      JOIN messages m ON m.conversation_id = dc.conversation_id AND m.seq > dc.acked_seq
      WHERE dc.user_id = ${userId} AND dc.device_id = ${deviceId}
        AND NOT (m.sender_id = ${userId} AND m.sender_device_id = ${deviceId})
      ORDER BY m.created_at, m.conversation_id, m.seq
      LIMIT ${limit}`;
    return rows.map((row) => ({
      messageId: row.id,
      conversationId: row.conversation_id,
      seq: Number(row.seq),
      senderId: row.sender_id,
      score: row.created_at.getTime(),
    }));
  }
}

/** One message waiting in a device's offline queue. */
export interface PendingEntry {
  messageId: string;
  conversationId: string;
  seq: number;
  senderId: string;
  /** Queue order: the message's created_at in ms, increasing with seq in a conversation. */
  score: number;
}
