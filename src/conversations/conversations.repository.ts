import { Injectable } from '@nestjs/common';

import type { ConversationKind, EncryptionMode, MemberRole } from '../generated/prisma/enums.js';
import { PrismaService } from '../prisma/prisma.service.js';

/** What a member's request on a conversation needs to know about it. */
export interface ConversationAccess {
  id: string;
  kind: ConversationKind;
  encryption: EncryptionMode;
  wrappedKey: Uint8Array;
  keyVersion: number;
  lastSeq: number;
  readSeq: number;
}

export interface ConversationRecord {
  id: string;
  kind: ConversationKind;
  title: string | null;
  encryption: EncryptionMode;
  lastSeq: number;
  createdAt: Date;
  lastActivityAt: Date;
  members: { userId: string; role: MemberRole; readSeq: number; joinedAt: Date }[];
}

export interface NewConversation {
  id: string;
  kind: ConversationKind;
  title: string | null;
  encryption: EncryptionMode;
  directKey: string | null;
  wrappedKey: Uint8Array;
  keyVersion: number;
  members: { userId: string; role: MemberRole }[];
}

@Injectable()
export class ConversationsRepository {
  constructor(private readonly prisma: PrismaService) {}

  /** The conversation as seen by `userId`, or why not: it does not exist, or they are not a member. */
  async accessFor(conversationId: string, userId: string): Promise<ConversationAccess | 'not_found' | 'not_member'> {
    const rows = await this.prisma.$queryRaw<
      {
        id: string;
        kind: ConversationKind;
        encryption: EncryptionMode;
        wrapped_key: Uint8Array;
        key_version: number;
        last_seq: bigint;
        read_seq: bigint | null;
      }[]
    >`
      SELECT c.id, c.kind, c.encryption, c.wrapped_key, c.key_version, c.last_seq, m.read_seq
      FROM conversations c
      LEFT JOIN conversation_members m ON m.conversation_id = c.id AND m.user_id = ${userId}
      WHERE c.id = ${conversationId}::uuid`;
    const row = rows[0];
    if (!row) return 'not_found';
    if (row.read_seq === null) return 'not_member';
    return {
      id: row.id,
      kind: row.kind,
      encryption: row.encryption,
      wrappedKey: row.wrapped_key,
      keyVersion: row.key_version,
      lastSeq: Number(row.last_seq),
      readSeq: Number(row.read_seq),
    };
  }

  async memberIds(conversationId: string): Promise<string[]> {
    const rows = await this.prisma.conversationMember.findMany({ where: { conversationId }, select: { userId: true } });
    return rows.map((row) => row.userId);
  }

  async create(conversation: NewConversation): Promise<void> {
    await this.prisma.conversation.create({
      data: {
        id: conversation.id,
        kind: conversation.kind,
        title: conversation.title,
        encryption: conversation.encryption,
        directKey: conversation.directKey,
        wrappedKey: Buffer.from(conversation.wrappedKey),
        keyVersion: conversation.keyVersion,
        members: { create: conversation.members },
      },
    });
  }

  async findByDirectKey(directKey: string): Promise<string | null> {
    const row = await this.prisma.conversation.findUnique({ where: { directKey }, select: { id: true } });
    return row?.id ?? null;
  }

  async findWithMembers(conversationId: string): Promise<ConversationRecord | null> {
    const row = await this.prisma.conversation.findUnique({
      where: { id: conversationId },
      include: { members: { orderBy: { joinedAt: 'asc' } } },
    });
    if (!row) return null;
    return {
      id: row.id,
      kind: row.kind,
      title: row.title,
      encryption: row.encryption,
      lastSeq: Number(row.lastSeq),
      createdAt: row.createdAt,
      lastActivityAt: row.lastActivityAt,
      members: row.members.map((m) => ({
        userId: m.userId,
        role: m.role,
        readSeq: Number(m.readSeq),
        joinedAt: m.joinedAt,
      })),
    };
  }

  /** Moves a member's read mark forward only; returns the mark after the update. */
  async advanceReadSeq(conversationId: string, userId: string, seq: number): Promise<number> {
    const rows = await this.prisma.$queryRaw<{ read_seq: bigint }[]>`
      UPDATE conversation_members SET read_seq = GREATEST(read_seq, LEAST(${seq}::bigint, c.last_seq))
      FROM conversations c
      WHERE c.id = conversation_members.conversation_id
        AND conversation_members.conversation_id = ${conversationId}::uuid AND conversation_members.user_id = ${userId}
      RETURNING conversation_members.read_seq`;
    return Number(rows[0]?.read_seq ?? 0);
  }
}
