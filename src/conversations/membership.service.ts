import { Injectable } from '@nestjs/common';

import { AppError, ErrorCode } from '../common/app-error.js';
import { ConversationsRepository, type ConversationAccess } from './conversations.repository.js';

/**
 * The membership check every request naming a conversation goes through. Read from
 * PostgreSQL each time, so a removal takes effect at once on every instance.
 */
@Injectable()
export class MembershipService {
  constructor(private readonly conversations: ConversationsRepository) {}

  /** The conversation if `userId` is a member; `not_found` or `forbidden` otherwise. */
  async requireMember(conversationId: string, userId: string): Promise<ConversationAccess> {
    const access = await this.conversations.accessFor(conversationId, userId);
    if (access === 'not_found') throw new AppError(ErrorCode.NotFound, 'no such conversation');
    if (access === 'not_member') throw new AppError(ErrorCode.Forbidden, 'not a member of this conversation');
    return access;
  }

  memberIds(conversationId: string): Promise<string[]> {
    return this.conversations.memberIds(conversationId);
  }
}
