import { Injectable, Logger } from '@nestjs/common';

import { AppError, ErrorCode } from '../common/app-error.js';
import { DevicesRepository } from '../devices/devices.repository.js';
import { OfflineQueueService } from '../offline-queue/offline-queue.service.js';
import { RealtimeService } from '../realtime/realtime.service.js';
import { MembershipService } from './membership.service.js';
import { ConversationsRepository, type ConversationRecord } from './conversations.repository.js';

/** Who changes a conversation's members: a user (a member), or a service acting for no user. */
export type MemberActor = { kind: 'user'; userId: string } | { kind: 'service' };

/**
 * Adding and removing conversation members, for the REST and socket edges. Membership is
 * read from PostgreSQL on every request (MembershipService), so a removal refuses the
 * removed user's further requests at once on every node; this service also stops what
 * would otherwise still reach them: queued messages, room streams.
 */
@Injectable()
export class MembersService {
  private readonly logger = new Logger(MembersService.name);

  constructor(
    private readonly conversations: ConversationsRepository,
    private readonly devices: DevicesRepository,
    private readonly queue: OfflineQueueService,
    private readonly realtime: RealtimeService,
    private readonly membership: MembershipService,
  ) {}

  /**
   * Adds members to a group conversation; any member (or a service) may. They receive
   * its messages from now on: their devices get delivery cursors at the current seq.
   * A direct conversation cannot gain members, and an id already present is `conflict`
   * (nothing is added then).
   */
  async add(actor: MemberActor, conversationId: string, userIds: readonly string[]): Promise<ConversationRecord> {
    const ids = [...new Set(userIds)];
    const membership = await this.conversations.membershipOf(conversationId, [
      ...ids,
      ...(actor.kind === 'user' ? [actor.userId] : []),
    ]);
    if (!membership) throw AppError.notFound('no such conversation');
    if (actor.kind === 'user' && !membership.roles.has(actor.userId)) {
      throw AppError.forbidden('not a member of this conversation');
    }
    if (membership.kind === 'direct') {
      throw new AppError(ErrorCode.Conflict, 'a direct conversation cannot gain members');
    }
    let alreadyMembers = ids.filter((id) => membership.roles.has(id));
    if (alreadyMembers.length === 0) ({ alreadyMembers } = await this.conversations.addMembers(conversationId, ids));
    if (alreadyMembers.length > 0) {
      throw new AppError(ErrorCode.Conflict, 'already a member', { userIds: alreadyMembers });
    }
    this.membership.membersChanged(conversationId);
    await this.queue.startCursorsForMembers(conversationId, ids);
    const conversation = await this.current(conversationId);
    const everyone = conversation.members.map((member) => member.userId);
    for (const userId of ids) this.realtime.emitMembership(everyone, { conversationId, userId, change: 'added' });
    return conversation;
  }

  /**
   * Removes a member: oneself (leaving), or anyone by the owner or a service. The member
   * row and the user's delivery cursors go in one transaction; then the conversation's
   * entries leave each of the user's device queues, and the user's sockets leave its
   * room. Direct conversations keep their two members (`conflict`).
   */
  async remove(actor: MemberActor, conversationId: string, userId: string): Promise<void> {
    const membership = await this.conversations.membershipOf(conversationId, [
      userId,
      ...(actor.kind === 'user' ? [actor.userId] : []),
    ]);
    if (!membership) throw AppError.notFound('no such conversation');
    if (actor.kind === 'user') {
      const role = membership.roles.get(actor.userId);
      if (!role) throw AppError.forbidden('not a member of this conversation');
      if (actor.userId !== userId && role !== 'owner') {
        throw AppError.forbidden('only the owner may remove other members');
      }
    }
    if (membership.kind === 'direct') {
      throw new AppError(ErrorCode.Conflict, 'the members of a direct conversation cannot change');
    }
    if (!membership.roles.has(userId) || !(await this.conversations.removeMember(conversationId, userId))) {
      throw AppError.notFound('no such member');
    }
    this.membership.membersChanged(conversationId);
    this.realtime.leaveConversation(userId, conversationId);
    await this.dropQueuedMessages(userId, conversationId);
    const remaining = await this.conversations.memberIds(conversationId);
    this.realtime.emitMembership([...remaining, userId], { conversationId, userId, change: 'removed' });
  }

  /**
   * The removal is committed, so a Redis failure here must not undo the reply: every
   * queue is then marked for a rebuild from PostgreSQL, where the user no longer has
   * cursors in this conversation.
   */
  private async dropQueuedMessages(userId: string, conversationId: string): Promise<void> {
    try {
      for (const device of await this.devices.devicesOf([userId])) {
        await this.queue.dropConversation(device, conversationId);
      }
    } catch (error) {
      this.logger.error(`could not drop a removed member's queued messages; queues will be rebuilt: ${String(error)}`);
      this.queue.invalidateAll();
    }
  }

  private async current(conversationId: string): Promise<ConversationRecord> {
    const conversation = await this.conversations.findWithMembers(conversationId);
    if (!conversation) throw AppError.notFound('no such conversation');
    return conversation;
  }
}
