import { Injectable } from '@nestjs/common';

import { PrismaService } from '../prisma/prisma.service.js';

/** A conversation's wrapped data key, as stored on its row. */
export interface ConversationKeyRow {
  id: string;
  wrappedKey: Uint8Array<ArrayBuffer>;
  keyVersion: number;
}

/** Reads and replaces conversations' wrapped data keys, for master key rotation. */
@Injectable()
export class ConversationKeysRepository {
  constructor(private readonly prisma: PrismaService) {}

  /**
   * One page of conversations whose key is wrapped by a master key version other than
   * `version`, ordered by id and starting after `afterId` (keyset paging: rows updated
   * meanwhile cannot shift the pages).
   */
  async findNotAtVersion(version: number, afterId: string | null, limit: number): Promise<ConversationKeyRow[]> {
    return this.prisma.conversation.findMany({
      where: { keyVersion: { not: version }, ...(afterId === null ? {} : { id: { gt: afterId } }) },
      select: { id: true, wrappedKey: true, keyVersion: true },
      orderBy: { id: 'asc' },
      take: limit,
    });
  }

  /** How many conversations have their key wrapped by master key `version`. */
  async countAtVersion(version: number): Promise<number> {
    return this.prisma.conversation.count({ where: { keyVersion: version } });
  }

  /**
   * Replaces one conversation's wrapped key, only if it is still wrapped by
   * `expectedKeyVersion`. Returns false when the row changed meanwhile (another rotation
   * run got there first) or is gone.
   */
  async replaceWrappedKey(
    id: string,
    expectedKeyVersion: number,
    next: { wrappedKey: Uint8Array<ArrayBuffer>; keyVersion: number },
  ): Promise<boolean> {
    const { count } = await this.prisma.conversation.updateMany({
      where: { id, keyVersion: expectedKeyVersion },
      data: { wrappedKey: next.wrappedKey, keyVersion: next.keyVersion },
    });
    return count === 1;
  }
}
