import { randomUUID } from 'node:crypto';

import { Logger } from '@nestjs/common';
import {
  WebSocketGateway,
  type OnGatewayConnection,
  type OnGatewayDisconnect,
  type OnGatewayInit,
} from '@nestjs/websockets';

import { TokenVerifier } from '../auth/token-verifier.service.js';
import { AppConfig } from '../config/app-config.js';
import { DeliveryService } from '../messages/delivery.service.js';
import { MessagesService } from '../messages/messages.service.js';
import { RealtimeService, type RealtimeNamespace } from '../realtime/realtime.service.js';
import { AppError, ErrorCode } from '../common/app-error.js';
import { ReadMarksService } from '../conversations/read-marks.service.js';
import { ShutdownService } from '../lifecycle/shutdown.service.js';
import { ConversationStreamsService, type StreamCaller } from '../presence/conversation-streams.service.js';
import {
  ackSchema,
  authSchema,
  conversationRefSchema,
  getUnackedSchema,
  historySchema,
  parsePayload,
  pingSchema,
  readSchema,
  sendSchema,
  typingSchema,
} from './event.schemas.js';
import { handshakeMiddleware } from './handshake.middleware.js';
import { RateLimitsService } from './rate-limits.service.js';
import { RequestDispatcher, type EventHandlers } from './request-dispatcher.js';
import { ConnectionCaps } from './connection-caps.service.js';
import { SessionService, type AppSocket } from './session.service.js';
import { SlowConsumers } from './slow-consumers.service.js';

/**
 * The `/v1` realtime edge. Each handler validates its payload against its schema, takes
 * the socket's identity, calls one service method and shapes the reply; the dispatcher
 * answers every request exactly once through its ack.
 */
@WebSocketGateway({ namespace: '/v1' })
export class MessagingGateway implements OnGatewayInit, OnGatewayConnection, OnGatewayDisconnect {
  private readonly logger = new Logger(MessagingGateway.name);
  private readonly handlers: EventHandlers;

  constructor(
    private readonly verifier: TokenVerifier,
    private readonly realtime: RealtimeService,
    private readonly sessions: SessionService,
    private readonly messages: MessagesService,
    private readonly delivery: DeliveryService,
    private readonly dispatcher: RequestDispatcher,
    private readonly streams: ConversationStreamsService,
    private readonly readMarks: ReadMarksService,
    private readonly limits: RateLimitsService,
    private readonly caps: ConnectionCaps,
    private readonly slowConsumers: SlowConsumers,
    private readonly shutdown: ShutdownService,
    config: AppConfig,
  ) {
    const { maxBatch } = config.limits;
    // A page a client asked for must not by itself get it cut as a slow consumer; a
    // quarter of the cap leaves room for live traffic and a request in flight beside it.
    const pageBytes = Math.floor(config.socketSendBufferBytes / 4);
    const ackPayload = ackSchema(maxBatch);
    const unackedPayload = getUnackedSchema(maxBatch);
    const caller = (socket: AppSocket): StreamCaller => ({
      userId: socket.data.userId,
      deviceId: socket.data.deviceId,
      socket,
    });
    this.handlers = {
      join: (socket, payload) =>
        this.streams.join(caller(socket), parsePayload(conversationRefSchema, payload).conversationId),
      leave: (socket, payload) =>
        this.streams.leave(caller(socket), parsePayload(conversationRefSchema, payload).conversationId),
      typing: (socket, payload) => {
        const { conversationId, isTyping } = parsePayload(typingSchema, payload);
        return this.streams.setTyping(caller(socket), conversationId, isTyping);
      },
      read: (socket, payload) => {
        const { conversationId, seq } = parsePayload(readSchema, payload);
        return this.readMarks.markRead(socket.data.userId, conversationId, seq);
      },
      send: (socket, payload) =>
        this.messages.send(
          { userId: socket.data.userId, deviceId: socket.data.deviceId, socketId: socket.id },
          parsePayload(sendSchema, payload),
        ),
      ack: (socket, payload) =>
        this.delivery.ack(SessionService.deviceOf(socket), parsePayload(ackPayload, payload).messageIds),
      'get-unacked': (socket, payload) =>
        this.delivery.unacked(
          SessionService.deviceOf(socket),
          parsePayload(unackedPayload, payload).limit ?? Math.min(100, maxBatch),
          pageBytes,
        ),
      history: (socket, payload) =>
        this.messages.history(socket.data.userId, parsePayload(historySchema, payload), pageBytes),
      auth: async (socket, payload) => {
        const identity = await this.verifier.verify(parsePayload(authSchema, payload).token);
        this.sessions.assertTokenFor(socket, identity.userId);
        this.sessions.refreshExpiry(socket, identity.expiresAt);
        return { tokenExpiresAt: identity.expiresAt.toISOString() };
      },
      ping: (_socket, payload) =>
        Promise.resolve({ t: parsePayload(pingSchema, payload).t ?? null, serverTime: new Date().toISOString() }),
    };
  }

  afterInit(namespace: RealtimeNamespace): void {
    this.realtime.attach(namespace);
    namespace.use(
      handshakeMiddleware(
        this.verifier,
        this.limits,
        this.caps,
        this.shutdown,
        (device) => this.sessions.prepare(device),
        randomUUID,
      ),
    );
  }

  handleConnection(socket: AppSocket): void {
    this.slowConsumers.watch(socket);
    // Handlers are bound before anything async, so no early request is lost; each one
    // waits for the session to be ready.
    const ready = this.sessions.open(socket);
    // Setup and cleanup use Redis: the drain lets them finish before Redis closes.
    this.shutdown.track(ready);
    this.dispatcher.bind(socket, this.handlers, ready);
    ready.catch((error: unknown) => {
      // A newer connection of the same device won the race: already told and cut.
      if (error instanceof AppError && error.code === ErrorCode.SessionReplaced) return;
      this.logger.warn(`session setup failed: ${String(error)}`);
      socket.emit('error', { code: ErrorCode.Unavailable, message: 'could not set up the session; retry later' });
      socket.disconnect(true);
    });
  }

  handleDisconnect(socket: AppSocket): void {
    this.caps.release(socket.id);
    const closed = this.sessions.close(socket);
    this.shutdown.track(closed);
    closed.catch((error: unknown) => {
      this.logger.warn(`session cleanup failed: ${String(error)}`);
    });
  }
}
