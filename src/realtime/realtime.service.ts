import { Injectable } from '@nestjs/common';
import type { Namespace } from 'socket.io';

import type { SocketData } from './realtime.types.js';
import type {
  ClientToServerEvents,
  ErrorEventPayload,
  MembershipPayload,
  PresencePayload,
  ReceiptPayload,
  ServerToClientEvents,
  TypingPayload,
  WireMessage,
} from '@messaging-service/client/protocol';
import { rooms } from './realtime.types.js';

/** What one instance asks the others (Socket.IO `serverSideEmit`, over the adapter). */
interface ServerSideEvents {
  /** Send these of your sockets `error`, then disconnect them (RealtimeService.replaceSockets). */
  'replace-sockets': (socketIds: string[], error: ErrorEventPayload) => void;
}

export type RealtimeNamespace = Namespace<ClientToServerEvents, ServerToClientEvents, ServerSideEvents, SocketData>;

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
    namespace.on('replace-sockets', (socketIds, error) => this.replaceHere(socketIds, error));
  }

  /**
   * Sends these sockets `error`, then disconnects them, on whichever instance holds them
   * (a device connected again: SessionService). The other instances get both as one
   * server-side event: a remote socket's `emit` and `disconnect` would be two publishes,
   * which a Redis Cluster may deliver in either order (each PUBLISH goes to a node of its
   * own, then over the cluster bus), and the client then lost the error.
   */
  replaceSockets(socketIds: readonly string[], error: ErrorEventPayload): void {
    const namespace = this.namespace;
    if (!namespace) return;
    const remote = socketIds.filter((id) => !namespace.sockets.has(id));
    this.replaceHere(
      socketIds.filter((id) => namespace.sockets.has(id)),
      error,
    );
    if (remote.length > 0) namespace.serverSideEmit('replace-sockets', remote, error);
  }

  private replaceHere(socketIds: readonly string[], error: ErrorEventPayload): void {
    for (const id of socketIds) {
      const socket = this.namespace?.sockets.get(id);
      if (!socket) continue;
      socket.emit('error', error);
      socket.disconnect(true);
    }
  }

  /**
   * Delivers a message live to this instance's sockets of these users but the sending
   * device's. Messages cross instances on their own channel, in seq order (LiveStream),
   * not through the adapter.
   */
  emitMessageHere(userIds: readonly string[], message: WireMessage): void {
    if (!this.namespace || userIds.length === 0) return;
    this.namespace.local
      .to(userIds.map(rooms.user))
      .except(rooms.device(message.senderId, message.senderDeviceId))
      .emit('message', message);
  }

  emitReceipt(userIds: readonly string[], receipt: ReceiptPayload): void {
    if (!this.namespace || userIds.length === 0) return;
    this.namespace.to(userIds.map(rooms.user)).emit('receipt', receipt);
  }

  /**
   * Tells every connected device of these users (members and the user added or removed),
   * joined to the conversation or not, on every node: e2e senders keep their recipient
   * lists from these events.
   */
  emitMembership(userIds: readonly string[], payload: MembershipPayload): void {
    if (!this.namespace || userIds.length === 0) return;
    this.namespace.to(userIds.map(rooms.user)).emit('membership', payload);
  }

  /** Relays a receipt to the sockets joined to the conversation (its ephemeral stream). */
  emitReceiptToConversation(receipt: ReceiptPayload): void {
    if (!this.namespace) return;
    this.namespace.to(rooms.conversation(receipt.conversationId)).emit('receipt', receipt);
  }

  /**
   * Makes every socket of `userId` (on every node) leave the conversation's room, so it
   * stops receiving its typing, presence and receipts (the user was removed).
   */
  leaveConversation(userId: string, conversationId: string): void {
    if (!this.namespace) return;
    this.namespace.in(rooms.user(userId)).socketsLeave(rooms.conversation(conversationId));
  }

  /** Disconnects the device's live socket, if any, on any node (the device was unregistered). */
  disconnectDevice(userId: string, deviceId: string): void {
    if (!this.namespace) return;
    this.namespace.in(rooms.device(userId, deviceId)).disconnectSockets(true);
  }

  /**
   * Disconnects every socket of this instance, not of the others (shutdown): each client
   * gets the DISCONNECT packet after what was written before it (replies included), and
   * sees the reason "io server disconnect".
   */
  disconnectLocal(): void {
    this.namespace?.local.disconnectSockets(true);
  }

  /** `presence` to a conversation's joined sockets, except the user's own. */
  emitPresence(conversationId: string, payload: PresencePayload): void {
    this.namespace?.to(rooms.conversation(conversationId)).except(rooms.user(payload.userId)).emit('presence', payload);
  }

  /** `typing` to a conversation's joined sockets, except the typing user's own. */
  emitTyping(conversationId: string, payload: TypingPayload): void {
    this.namespace?.to(rooms.conversation(conversationId)).except(rooms.user(payload.userId)).emit('typing', payload);
  }

  get server(): RealtimeNamespace | null {
    return this.namespace;
  }
}
