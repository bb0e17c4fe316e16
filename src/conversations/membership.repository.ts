import { Injectable } from '@nestjs/common';

import { PrismaService } from '../prisma/prisma.service.js';

/** Which conversations users belong to (for presence fan-out). */
@Injectable()
export class MembershipRepository {
  constructor(private readonly prisma: PrismaService) {}

  /** For each user, in order, the ids of the conversations it belongs to. */
  async conversationIdsOf(userIds: readonly string[]): Promise<string[][]> {
    const { rows } = await this.prisma.sql.query<{ user_id: string; conversation_id: string }>({
      name: 'memberships.of',
      text: 'SELECT user_id, conversation_id FROM conversation_members WHERE user_id = ANY($1::text[])',
      values: [[...new Set(userIds)]],
    });
    const byUser = new Map<string, string[]>();
    for (const row of rows) {
      const ids = byUser.get(row.user_id) ?? [];
      ids.push(row.conversation_id);
      byUser.set(row.user_id, ids);
    }
    return userIds.map((userId) => byUser.get(userId) ?? []);
  }
}
