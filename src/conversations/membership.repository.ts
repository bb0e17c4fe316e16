import { Injectable } from '@nestjs/common';

import { PrismaService } from '../prisma/prisma.service.js';

/** Which conversations a user belongs to (for presence fan-out). */
@Injectable()
export class MembershipRepository {
  constructor(private readonly prisma: PrismaService) {}

  async conversationIdsOf(userId: string): Promise<string[]> {
    const rows = await this.prisma.conversationMember.findMany({ where: { userId }, select: { conversationId: true } });
    return rows.map((row) => row.conversationId);
  }
}
