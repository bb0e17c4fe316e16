import { Injectable } from '@nestjs/common';

import { RealtimeService } from '../realtime/realtime.service.js';
import { ConversationsRepository } from './conversations.repository.js';
import { MembershipService } from './membership.service.js';

/** Members' read marks, for the REST and socket edges. */
@Injectable()
export class ReadMarksService {
  constructor(
    private readonly membership: MembershipService,
    private readonly conversations: ConversationsRepository,
    private readonly realtime: RealtimeService,
  ) {}

  /**
   * Moves `userId`'s read mark forward to `seq` (at most the conversation's last seq; a
   * lower seq leaves it unchanged) and, when it moved, relays a `read` receipt to the
   * conversation's joined sockets.
   */
  async markRead(userId: string, conversationId: string, seq: number): Promise<{ readSeq: number }> {
    const access = await this.membership.requireMemberFresh(conversationId, userId);
    const readSeq = await this.conversations.advanceReadSeq(conversationId, userId, seq);
    if (readSeq > access.readSeq) {
      this.realtime.emitReceiptToConversation({ conversationId, userId, status: 'read', seq: readSeq });
    }
    return { readSeq };
  }
}
