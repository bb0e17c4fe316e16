import { Injectable } from '@nestjs/common';

import { PrismaService } from '../prisma/prisma.service.js';

/** Which conversations a user belongs to (for presence fan-out). */
@Injectable()
export class MembershipRepository {
  constructor(private readonly prisma: PrismaService) {}

  async conversationIdsOf(userId: string): Promise<string[]> {
    const { rows } = await this.prisma.sql.query<{ conversation_id: string }>({
      name: 'memberships.of',
      text: 'SELECT conversation_id FROM conversation_members WHERE user_id = $1',
      values: [userId],
    });
    return rows.map((row) => row.conversation_id);
  }
}
