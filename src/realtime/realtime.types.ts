import type { ErrorCode } from '../common/app-error.js';

/**
 * The wire contract's shapes (PROTOCOL.md section 1), shared by the gateway, the services
 * that emit events, and the tests. Renaming an event or a field breaks the build.
 */

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

/** Server → client events. */
export interface ServerToClientEvents {
  session: (payload: SessionPayload) => void;
  message: (message: WireMessage) => void;
  typing: (payload: TypingPayload) => void;
  receipt: (payload: ReceiptPayload) => void;
  presence: (payload: PresencePayload) => void;
  membership: (payload: MembershipPayload) => void;
  error: (payload: WireError & { event?: string }) => void;
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

/** Client → server events: every one is a request answered once through its ack. */
export interface ClientToServerEvents {
  join: (payload: { conversationId: string }, ack: Ack<JoinData>) => void;
  leave: (payload: { conversationId: string }, ack: Ack<Record<string, never>>) => void;
  send: (
    payload: { conversationId: string; clientMsgId: string; body?: string; ciphertext?: string; contentType?: string },
    ack: Ack<SendData>,
  ) => void;
  typing: (payload: { conversationId: string; isTyping: boolean }, ack: Ack<{ expiresAt: string }>) => void;
  ack: (payload: { messageIds: string[] }, ack: Ack<{ acked: number }>) => void;
  'get-unacked': (payload: { limit?: number }, ack: Ack<PageData>) => void;
  read: (payload: { conversationId: string; seq: number }, ack: Ack<{ readSeq: number }>) => void;
  history: (
    payload: { conversationId: string; beforeSeq?: number; afterSeq?: number; limit?: number },
    ack: Ack<PageData>,
  ) => void;
  auth: (payload: { token: string }, ack: Ack<{ tokenExpiresAt: string }>) => void;
  ping: (payload: { t?: unknown }, ack: Ack<{ t: unknown; serverTime: string }>) => void;
}

/** What the handshake leaves on each socket (`socket.data`). */
export interface SocketData {
  userId: string;
  deviceId: string;
  sessionId: string;
  /** Orders connections of one device: the newest one wins. */
  connectedAt: number;
  tokenExpiresAt: Date;
  isService: boolean;
}

/** Room names. Every socket is in its user's and its device's room. */
export const rooms = {
  user: (userId: string) => `u:${userId}`,
  device: (userId: string, deviceId: string) => `d:${userId}:${deviceId}`,
  conversation: (conversationId: string) => `c:${conversationId}`,
};
