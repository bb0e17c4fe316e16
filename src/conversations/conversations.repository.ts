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

/** What every view of a conversation carries. */
interface ConversationFields {
  id: string;
  kind: ConversationKind;
  title: string | null;
  encryption: EncryptionMode;
  lastSeq: number;
  createdAt: Date;
  lastActivityAt: Date;
}

export interface ConversationRecord extends ConversationFields {
  members: { userId: string; role: MemberRole; readSeq: number; joinedAt: Date }[];
}

/** A conversation in a member's list: no member list, the member's own read mark. */
export interface ConversationSummary extends ConversationFields {
  readSeq: number;
}

/** A position in a member's list, newest activity first: the last item of the page before. */
export interface ListPosition {
  lastActivityAt: Date;
  id: string;
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
    const { rows } = await this.prisma.sql.query<{
      id: string;
      kind: ConversationKind;
      encryption: EncryptionMode;
      wrapped_key: Uint8Array;
      key_version: number;
      last_seq: string;
      read_seq: string | null;
    }>({
      name: 'conversations.accessFor',
      text: `SELECT c.id, c.kind, c.encryption, c.wrapped_key, c.key_version, c.last_seq, m.read_seq
             FROM conversations c
             LEFT JOIN conversation_members m ON m.conversation_id = c.id AND m.user_id = $2
             WHERE c.id = $1`,
      values: [conversationId, userId],
    });
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
    const { rows } = await this.prisma.sql.query<{ user_id: string }>({
      name: 'conversations.memberIds',
      text: 'SELECT user_id FROM conversation_members WHERE conversation_id = $1',
      values: [conversationId],
    });
    return rows.map((row) => row.user_id);
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

  /**
   * A page of `userId`'s conversations, newest activity first (keyset pagination on
   * last_activity_at desc, id desc, served by the conversations index), after `after`.
   */
  async listForUser(userId: string, after: ListPosition | null, limit: number): Promise<ConversationSummary[]> {
    const rows = await this.prisma.$queryRaw<
      {
        id: string;
        kind: ConversationKind;
        title: string | null;
        encryption: EncryptionMode;
        last_seq: bigint;
        created_at: Date;
        last_activity_at: Date;
        read_seq: bigint;
      }[]
    >`
      SELECT c.id, c.kind, c.title, c.encryption, c.last_seq, c.created_at, c.last_activity_at, m.read_seq
      FROM conversation_members m JOIN conversations c ON c.id = m.conversation_id
      WHERE m.user_id = ${userId}
        AND (${after === null} OR (c.last_activity_at, c.id) < (${after?.lastActivityAt ?? new Date(0)}::timestamptz, ${after?.id ?? '00000000-0000-0000-0000-000000000000'}::uuid))
      ORDER BY c.last_activity_at DESC, c.id DESC
      LIMIT ${limit}::int`;
    return rows.map((row) => ({
      id: row.id,
      kind: row.kind,
      title: row.title,
      encryption: row.encryption,
      lastSeq: Number(row.last_seq),
      createdAt: row.created_at,
      lastActivityAt: row.last_activity_at,
      readSeq: Number(row.read_seq),
    }));
  }

  /** The conversation's kind and the roles of those of `userIds` who are members; null if it does not exist. */
  async membershipOf(
    conversationId: string,
    userIds: readonly string[],
  ): Promise<{ kind: ConversationKind; roles: Map<string, MemberRole> } | null> {
    const rows = await this.prisma.$queryRaw<
      { kind: ConversationKind; user_id: string | null; role: MemberRole | null }[]
    >`
      SELECT c.kind, m.user_id, m.role
      FROM conversations c
      LEFT JOIN conversation_members m ON m.conversation_id = c.id AND m.user_id = ANY(${userIds as string[]}::text[])
      WHERE c.id = ${conversationId}::uuid`;
    if (rows.length === 0) return null;
    const roles = new Map<string, MemberRole>();
    for (const row of rows) if (row.user_id !== null && row.role !== null) roles.set(row.user_id, row.role);
    return { kind: rows[0].kind, roles };
  }

  /**
   * Adds members, all or none, each joining at the conversation's current last seq.
   * Returns the ids that were members already (a concurrent add included); when there
   * are any, nothing was added.
   */
  async addMembers(conversationId: string, userIds: readonly string[]): Promise<{ alreadyMembers: string[] }> {
    try {
      await this.prisma.$transaction(async (tx) => {
        const inserted = await tx.$queryRaw<{ user_id: string }[]>`
          INSERT INTO conversation_members (conversation_id, user_id, role, joined_seq)
          SELECT c.id, u.user_id, 'member', c.last_seq
          FROM conversations c, unnest(${userIds as string[]}::text[]) AS u(user_id)
          WHERE c.id = ${conversationId}::uuid
          ON CONFLICT DO NOTHING
          RETURNING user_id`;
        if (inserted.length < userIds.length) {
          const added = new Set(inserted.map((row) => row.user_id));
          throw new MembersAlreadyPresent(userIds.filter((id) => !added.has(id)));
        }
      });
      return { alreadyMembers: [] };
    } catch (error) {
      if (error instanceof MembersAlreadyPresent) return { alreadyMembers: error.userIds };
      throw error;
    }
  }

  /**
   * Removes a member and its devices' delivery cursors in the conversation, in one
   * transaction. When the owner leaves, the longest-standing member becomes owner.
   * Returns false when `userId` was not a member.
   */
  async removeMember(conversationId: string, userId: string): Promise<boolean> {
    return this.prisma.$transaction(async (tx) => {
      const removed = await tx.$queryRaw<{ role: MemberRole }[]>`
        DELETE FROM conversation_members WHERE conversation_id = ${conversationId}::uuid AND user_id = ${userId}
        RETURNING role`;
      if (removed.length === 0) return false;
      await tx.$executeRaw`
        DELETE FROM delivery_cursors WHERE conversation_id = ${conversationId}::uuid AND user_id = ${userId}`;
      if (removed[0].role === 'owner') {
        await tx.$executeRaw`
          UPDATE conversation_members SET role = 'owner'
          WHERE conversation_id = ${conversationId}::uuid AND user_id = (
            SELECT user_id FROM conversation_members WHERE conversation_id = ${conversationId}::uuid
            ORDER BY joined_at, user_id LIMIT 1)
            AND NOT EXISTS (
              SELECT 1 FROM conversation_members WHERE conversation_id = ${conversationId}::uuid AND role = 'owner')`;
      }
      return true;
    });
  }
}

/** Rolls back an add that found members already present. */
class MembersAlreadyPresent extends Error {
  constructor(readonly userIds: string[]) {
    super('members already present');
  }
}
