import { Injectable } from '@nestjs/common';
import type { Socket } from 'socket.io';

import { MembershipService } from '../conversations/membership.service.js';
import { OfflineQueueService } from '../offline-queue/offline-queue.service.js';
import { rooms } from '../realtime/realtime.types.js';
import type { JoinData } from '@messaging-service/client/protocol';
import { PresenceService } from './presence.service.js';
import { TypingService } from './typing.service.js';

/** The slice of a socket these streams need. */
type StreamSocket = Pick<Socket, 'id' | 'rooms' | 'join' | 'leave'>;

export interface StreamCaller {
  userId: string;
  deviceId: string;
  socket: StreamSocket;
}

/**
 * A conversation's ephemeral streams (typing, presence, read receipts) reach the sockets
 * that joined its room. Messages do not need a join: they go to every member's devices.
 */
@Injectable()
export class ConversationStreamsService {
  constructor(
    private readonly membership: MembershipService,
    private readonly presence: PresenceService,
    private readonly typing: TypingService,
    private readonly queue: OfflineQueueService,
  ) {}

  async join(caller: StreamCaller, conversationId: string): Promise<JoinData> {
    const room = rooms.conversation(conversationId);
    const resumed = caller.socket.rooms.has(room);
    const access = await this.membership.requireMemberFresh(conversationId, caller.userId);
    await caller.socket.join(room);
    // A removal that raced the join must still win: check again now that we are in.
    try {
      await this.membership.requireMemberFresh(conversationId, caller.userId);
    } catch (error) {
      await caller.socket.leave(room);
      throw error;
    }
    const others = (await this.membership.memberIds(conversationId)).filter((id) => id !== caller.userId);
    const [presence, hasBacklog] = await Promise.all([
      this.presence.snapshot(others),
      this.queue.hasBacklog({ userId: caller.userId, deviceId: caller.deviceId }, conversationId),
    ]);
    return {
      conversationId,
      lastSeq: access.lastSeq,
      readSeq: access.readSeq,
      presence,
      flags: { hasBacklog, hasPresence: presence.length > 0, resumed },
    };
  }

  async leave(caller: StreamCaller, conversationId: string): Promise<Record<string, never>> {
    await this.membership.requireMember(conversationId, caller.userId);
    await caller.socket.leave(rooms.conversation(conversationId));
    this.typing.socketGone(caller.socket.id, conversationId);
    return {};
  }

  async setTyping(caller: StreamCaller, conversationId: string, isTyping: boolean): Promise<{ expiresAt: string }> {
    await this.membership.requireMember(conversationId, caller.userId);
    return this.typing.update(conversationId, caller.userId, caller.socket.id, isTyping);
  }
}
