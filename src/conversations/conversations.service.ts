import { randomUUID } from 'node:crypto';

import { Injectable } from '@nestjs/common';

import { AppError, ErrorCode } from '../common/app-error.js';
import { UUID } from '../common/ids.js';
import { OfflineQueueService } from '../offline-queue/offline-queue.service.js';
import { CryptoService } from '../crypto/crypto.service.js';
import {
  ConversationsRepository,
  type ConversationRecord,
  type ConversationSummary,
  type ListPosition,
} from './conversations.repository.js';

export interface CreateConversationInput {
  kind: 'direct' | 'group';
  memberIds: string[];
  title?: string;
  encryption?: 'server' | 'e2e';
}

/** A page of a member's conversations; `nextCursor` is null on the last page. */
export interface ConversationPage {
  conversations: ConversationSummary[];
  nextCursor: string | null;
}

/** Creating and reading conversations; shared by REST and tests. */
@Injectable()
export class ConversationsService {
  constructor(
    private readonly conversations: ConversationsRepository,
    private readonly queue: OfflineQueueService,
    private readonly crypto: CryptoService,
  ) {}

  /**
   * Creates a conversation with a fresh wrapped data key. `creatorId` (a user caller) is
   * always a member and its owner. A direct conversation has exactly two members and is
   * unique per pair: creating it again returns the existing one (`created: false`).
   */
  async create(
    creatorId: string | null,
    input: CreateConversationInput,
  ): Promise<{ conversation: ConversationRecord; created: boolean }> {
    const memberIds = [...new Set([...(creatorId ? [creatorId] : []), ...input.memberIds])];
    let directKey: string | null = null;
    if (input.kind === 'direct') {
      if (memberIds.length !== 2) {
        throw AppError.badRequest('a direct conversation has exactly two members', {
          problems: [{ path: 'memberIds', message: 'a direct conversation has exactly two members' }],
        });
      }
      directKey = [...memberIds].sort().join('\n');
      const existing = await this.conversations.findByDirectKey(directKey);
      if (existing) return { conversation: await this.get(existing), created: false };
    } else if (memberIds.length === 0) {
      throw AppError.badRequest('a conversation needs at least one member', {
        problems: [{ path: 'memberIds', message: 'must list at least one member' }],
      });
    }
    const id = randomUUID();
    const key = this.crypto.createDataKey(id);
    try {
      await this.conversations.create({
        id,
        kind: input.kind,
        title: input.title ?? null,
        encryption: input.encryption ?? 'server',
        directKey,
        wrappedKey: key.wrappedKey,
        keyVersion: key.keyVersion,
        members: memberIds.map((userId) => ({
          userId,
          role: userId === (creatorId ?? memberIds[0]) ? 'owner' : 'member',
        })),
      });
    } catch (error) {
      // Two creators raced for the same direct pair: the unique key let one win.
      if (directKey && /direct_key|Unique constraint/i.test(String(error))) {
        const existing = await this.conversations.findByDirectKey(directKey);
        if (existing) return { conversation: await this.get(existing), created: false };
      }
      throw error;
    }
    await this.queue.startCursorsForMembers(id, memberIds);
    return { conversation: await this.get(id), created: true };
  }

  async get(conversationId: string): Promise<ConversationRecord> {
    const conversation = await this.conversations.findWithMembers(conversationId);
    if (!conversation) throw new AppError(ErrorCode.NotFound, 'no such conversation');
    return conversation;
  }

  /**
   * The conversation with its members, as `userId` may see it: a member only (else
   * `forbidden`). A null `userId` (a service acting for no user) sees any conversation.
   */
  async getFor(userId: string | null, conversationId: string): Promise<ConversationRecord> {
    const conversation = await this.get(conversationId);
    if (userId !== null && !conversation.members.some((member) => member.userId === userId)) {
      throw AppError.forbidden('not a member of this conversation');
    }
    return conversation;
  }

  /**
   * `userId`'s conversations, newest activity first, `limit` at a time. The cursor is
   * opaque to clients: the last item's position (last activity, id), base64url-encoded.
   */
  async listFor(userId: string, page: { cursor?: string; limit: number }): Promise<ConversationPage> {
    const after = page.cursor === undefined ? null : decodeCursor(page.cursor);
    const rows = await this.conversations.listForUser(userId, after, page.limit + 1);
    const conversations = rows.slice(0, page.limit);
    const last = conversations[conversations.length - 1];
    return {
      conversations,
      nextCursor:
        rows.length > page.limit && last ? encodeCursor({ lastActivityAt: last.lastActivityAt, id: last.id }) : null,
    };
  }
}

function encodeCursor(position: ListPosition): string {
  return Buffer.from(JSON.stringify([position.lastActivityAt.getTime(), position.id])).toString('base64url');
}

/** The largest time a JavaScript Date holds; past it a cursor's time is no date at all. */
const MAX_DATE_MS = 8.64e15;

function decodeCursor(cursor: string): ListPosition {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    value = undefined;
  }
  if (
    Array.isArray(value) &&
    value.length === 2 &&
    Number.isSafeInteger(value[0]) &&
    Math.abs(value[0] as number) <= MAX_DATE_MS &&
    typeof value[1] === 'string' &&
    UUID.test(value[1])
  ) {
    return { lastActivityAt: new Date(value[0] as number), id: value[1] };
  }
  throw AppError.badRequest('cursor is not valid: pass the nextCursor of the previous page', {
    problems: [{ path: 'cursor', message: 'not a cursor this service issued' }],
  });
}
