/**
 * The wire contract's shapes (PROTOCOL.md section 1): the one source of truth that the
 * service and this SDK both compile against, so renaming an event or a field breaks both
 * builds. Types, and the list of error codes.
 *
 * @example
 *   import type { ClientToServerEvents, ServerToClientEvents } from '@messaging-service/client/protocol';
 *   const socket: Socket<ServerToClientEvents, ClientToServerEvents> = io(url + '/v1', { auth });
 */

/** The error codes of the wire contract (PROTOCOL.md section 3). */
export const ERROR_CODES = [
  'bad_request',
  'unauthorized',
  'token_expired',
  'forbidden',
  'not_found',
  'conflict',
  'devices_changed',
  'payload_too_large',
  'rate_limited',
  'unknown_event',
  'session_replaced',
  'unavailable',
  'internal',
] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

/** A message as clients see it. Exactly one of `body` / `ciphertext` is present. */
export interface WireMessage {
  id: string;
  conversationId: string;
  seq: number;
  senderId: string;
  senderDeviceId: string;
  clientMsgId: string;
  contentType: string;
  body?: string;
  ciphertext?: string;
  createdAt: string;
}

export interface WireError {
  code: ErrorCode;
  message: string;
  details?: Record<string, unknown>;
}

/** The one reply every request gets through its Socket.IO acknowledgement. */
export type Reply<T> = { ok: true; data: T } | { ok: false; error: WireError };
export type Ack<T> = (reply: Reply<T>) => void;

export interface SessionPayload {
  userId: string;
  deviceId: string;
  sessionId: string;
  serverTime: string;
  tokenExpiresAt: string;
  unacked: number;
  limits: { maxMessageBytes: number; maxBatch: number };
}

export interface TypingPayload {
  conversationId: string;
  userId: string;
  isTyping: boolean;
  expiresAt: string;
}

export interface ReceiptPayload {
  conversationId: string;
  userId: string;
  status: 'delivered' | 'read';
  seq: number;
  messageIds?: string[];
}

export interface PresencePayload {
  conversationId: string;
  userId: string;
  status: 'online' | 'offline';
}

export interface MembershipPayload {
  conversationId: string;
  userId: string;
  change: 'added' | 'removed';
}

/** The `error` event: a failed request sent without a callback, or a session-level error. */
export type ErrorEventPayload = WireError & { event?: string };

/** Server → client events. */
export interface ServerToClientEvents {
  session: (payload: SessionPayload) => void;
  message: (message: WireMessage) => void;
  typing: (payload: TypingPayload) => void;
  receipt: (payload: ReceiptPayload) => void;
  presence: (payload: PresencePayload) => void;
  membership: (payload: MembershipPayload) => void;
  error: (payload: ErrorEventPayload) => void;
}

export interface SendPayload {
  conversationId: string;
  clientMsgId: string;
  body?: string;
  ciphertext?: string;
  contentType?: string;
  /**
   * e2e conversations only: the `userId/deviceId` pairs the message key was sealed to; a
   * set other than the members' current keyed devices is refused with `devices_changed`.
   */
  recipientDevices?: string[];
}
export interface SendData {
  message: WireMessage;
  duplicate: boolean;
}
export interface PageData {
  messages: WireMessage[];
  hasMore: boolean;
}
export interface JoinData {
  conversationId: string;
  lastSeq: number;
  readSeq: number;
  presence: { userId: string; deviceIds: string[] }[];
  flags: { hasBacklog: boolean; hasPresence: boolean; resumed: boolean };
}
export interface ConversationRef {
  conversationId: string;
}
export interface TypingRequest {
  conversationId: string;
  isTyping: boolean;
}
export interface AckRequest {
  messageIds: string[];
}
export interface GetUnackedRequest {
  limit?: number;
}
export interface ReadRequest {
  conversationId: string;
  seq: number;
}
export interface HistoryRequest {
  conversationId: string;
  beforeSeq?: number;
  afterSeq?: number;
  limit?: number;
}
export interface AuthRequest {
  token: string;
}
export interface PingRequest {
  t?: unknown;
}

/** Client → server events: every one is a request answered once through its ack. */
export interface ClientToServerEvents {
  join: (payload: ConversationRef, ack: Ack<JoinData>) => void;
  leave: (payload: ConversationRef, ack: Ack<Record<string, never>>) => void;
  send: (payload: SendPayload, ack: Ack<SendData>) => void;
  typing: (payload: TypingRequest, ack: Ack<{ expiresAt: string }>) => void;
  ack: (payload: AckRequest, ack: Ack<{ acked: number }>) => void;
  'get-unacked': (payload: GetUnackedRequest, ack: Ack<PageData>) => void;
  read: (payload: ReadRequest, ack: Ack<{ readSeq: number }>) => void;
  history: (payload: HistoryRequest, ack: Ack<PageData>) => void;
  auth: (payload: AuthRequest, ack: Ack<{ tokenExpiresAt: string }>) => void;
  ping: (payload: PingRequest, ack: Ack<{ t: unknown; serverTime: string }>) => void;
}

/** The request payload and reply data of each client event, derived from the event map. */
export type RequestOf<E extends keyof ClientToServerEvents> = Parameters<ClientToServerEvents[E]>[0];
export type ReplyDataOf<E extends keyof ClientToServerEvents> =
  Parameters<ClientToServerEvents[E]>[1] extends Ack<infer T> ? T : never;
