import { Injectable } from '@nestjs/common';

import { AppError, ErrorCode } from '../common/app-error.js';
import { CacheBus } from '../redis/cache-bus.service.js';
import { TtlCache } from '../common/ttl-cache.js';
import { ConversationsRepository, type ConversationAccess } from './conversations.repository.js';

/** Cached answers live this long at most; invalidations usually end them much sooner. */
const CACHE_TTL_MS = 30_000;

/**
 * The membership check every request naming a conversation goes through, and the
 * member lists fan-out uses. Both are cached in memory (only positive answers), and
 * every change of membership invalidates them on every instance at once (CacheBus), so
 * a removal takes effect immediately.
 */
@Injectable()
export class MembershipService {
  private readonly access = new TtlCache<ConversationAccess>(CACHE_TTL_MS);
  private readonly members = new TtlCache<string[]>(CACHE_TTL_MS, 10_000);

  constructor(
    private readonly conversations: ConversationsRepository,
    private readonly bus: CacheBus,
  ) {
    bus.on('membership', (conversationId) => {
      this.members.delete(conversationId);
      this.access.deletePrefix(`${conversationId}\n`);
    });
  }

  /**
   * The conversation if `userId` is a member; `not_found` or `forbidden` otherwise. Its
   * key material is current; `lastSeq` and `readSeq` may be a little old (use
   * `requireMemberFresh` where they matter).
   */
  async requireMember(conversationId: string, userId: string): Promise<ConversationAccess> {
    return this.cachedMember(conversationId, userId) ?? this.requireMemberFresh(conversationId, userId);
  }

  /** As `requireMember` when the answer is cached (a member), without waiting; else undefined. */
  cachedMember(conversationId: string, userId: string): ConversationAccess | undefined {
    return this.access.get(`${conversationId}\n${userId}`);
  }

  /** As `requireMember`, read from PostgreSQL now. */
  async requireMemberFresh(conversationId: string, userId: string): Promise<ConversationAccess> {
    const version = this.access.version;
    const access = await this.conversations.accessFor(conversationId, userId);
    if (access === 'not_found') throw new AppError(ErrorCode.NotFound, 'no such conversation');
    if (access === 'not_member') throw new AppError(ErrorCode.Forbidden, 'not a member of this conversation');
    this.access.set(`${conversationId}\n${userId}`, access, version);
    return access;
  }

  async memberIds(conversationId: string): Promise<string[]> {
    const cached = this.members.get(conversationId);
    if (cached) return cached;
    const version = this.members.version;
    const ids = await this.conversations.memberIds(conversationId);
    this.members.set(conversationId, ids, version);
    return ids;
  }

  /** Members were added or removed: forget what was cached, here and on every instance. */
  membersChanged(conversationId: string): void {
    this.bus.invalidate('membership', conversationId);
  }
}
