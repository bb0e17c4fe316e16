import { Injectable } from '@nestjs/common';

import { distinctSorted, type DeviceRef } from '../devices/devices.types.js';
import { PrismaService } from '../prisma/prisma.service.js';

/** A device's position in one conversation: every seq up to `ackedSeq` is delivered. */
export interface DeliveryCursor extends DeviceRef {
  conversationId: string;
  ackedSeq: number;
}

/**
 * Devices' delivery cursors in PostgreSQL: what each device has acked per conversation.
 * The offline queue owns them: they are where its rebuild from PostgreSQL starts.
 */
@Injectable()
export class DeliveryCursorsRepository {
  constructor(private readonly prisma: PrismaService) {}

  /**
   * Gives each device a cursor in each of its user's conversations that lacks one, at the
   * conversation's current last seq: the device receives what is sent from now on.
   * Runs after the device rows are committed, so a message committed in between is either
   * fanned out to the device or already counted in last_seq.
   */
  async startForDevices(devices: readonly DeviceRef[]): Promise<void> {
    const unique = distinctSorted(devices);
    if (unique.length === 0) return;
    await this.prisma.sql.query({
      name: 'cursors.startForDevices',
      text: `INSERT INTO delivery_cursors (user_id, device_id, conversation_id, acked_seq)
             SELECT t.u, t.d, c.id, c.last_seq
             FROM unnest($1::text[], $2::text[]) AS t(u, d)
             JOIN conversation_members m ON m.user_id = t.u
             JOIN conversations c ON c.id = m.conversation_id
             ORDER BY t.u, t.d, c.id
             ON CONFLICT DO NOTHING`,
      values: [unique.map((d) => d.userId), unique.map((d) => d.deviceId)],
    });
  }

  /** Gives every device of these users a cursor in one conversation (they were just added). */
  async startForMembers(conversationId: string, userIds: readonly string[]): Promise<void> {
    if (userIds.length === 0) return;
    await this.prisma.sql.query({
      name: 'cursors.startForMembers',
      text: `INSERT INTO delivery_cursors (user_id, device_id, conversation_id, acked_seq)
             SELECT d.user_id, d.device_id, c.id, c.last_seq
             FROM devices d JOIN conversations c ON c.id = $1::uuid
             WHERE d.user_id = ANY($2::text[])
             ORDER BY d.user_id, d.device_id
             ON CONFLICT DO NOTHING`,
      values: [conversationId, [...userIds]],
    });
  }

  /** Moves cursors forward only (an older ack never moves one back), many in one statement. */
  async advance(cursors: readonly DeliveryCursor[]): Promise<void> {
    if (cursors.length === 0) return;
    await this.prisma.sql.query({
      name: 'cursors.advance',
      text: `UPDATE delivery_cursors dc SET acked_seq = GREATEST(dc.acked_seq, v.seq), updated_at = now()
             FROM unnest($1::text[], $2::text[], $3::uuid[], $4::bigint[]) AS v(user_id, device_id, conversation_id, seq)
             WHERE dc.user_id = v.user_id AND dc.device_id = v.device_id AND dc.conversation_id = v.conversation_id`,
      values: [
        cursors.map((c) => c.userId),
        cursors.map((c) => c.deviceId),
        cursors.map((c) => c.conversationId),
        cursors.map((c) => c.ackedSeq),
      ],
    });
  }
}
