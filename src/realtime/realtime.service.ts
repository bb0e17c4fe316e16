import { Injectable } from '@nestjs/common';
import type { Namespace } from 'socket.io';

import type {
  ClientToServerEvents,
  MembershipPayload,
  ReceiptPayload,
  ServerToClientEvents,
  SocketData,
  WireMessage,
} from './realtime.types.js';
import { rooms } from './realtime.types.js';

export type RealtimeNamespace = Namespace<
  ClientToServerEvents,
  ServerToClientEvents,
  Record<string, never>,
  SocketData
>;

/**
 * Emits server events to connected sockets. The gateway hands it the `/v1` namespace at
 * init; feature services (messages, membership) emit through it without depending on
 * the gateway. Before the namespace exists (e.g. a CLI context) emits are no-ops.
 */
@Injectable()
export class RealtimeService {
  private namespace: RealtimeNamespace | null = null;

  attach(namespace: RealtimeNamespace): void {
    this.namespace = namespace;
  }

  /** Delivers a message live to every socket of these users, except the sending socket. */
  emitMessage(userIds: readonly string[], message: WireMessage, exceptSocketId?: string): void {
    if (!this.namespace || userIds.length === 0) return;
    let target = this.namespace.to(userIds.map(rooms.user));
    if (exceptSocketId) target = target.except(exceptSocketId);
    target.emit('message', message);
  }

  emitReceipt(userIds: readonly string[], receipt: ReceiptPayload): void {
    if (!this.namespace || userIds.length === 0) return;
    this.namespace.to(userIds.map(rooms.user)).emit('receipt', receipt);
  }

  emitMembership(conversationId: string, userIds: readonly string[], payload: MembershipPayload): void {
    if (!this.namespace) return;
    this.namespace.to([rooms.conversation(conversationId), ...userIds.map(rooms.user)]).emit('membership', payload);
  }

  get server(): RealtimeNamespace | null {
    return this.namespace;
  }
}
