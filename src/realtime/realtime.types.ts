/**
 * Server-side realtime shapes. The wire contract's types (events, payloads, messages)
 * live in `@messaging-service/client/protocol`, the one source the SDK compiles against too.
 */

/** What the handshake leaves on each socket (`socket.data`). */
export interface SocketData {
  userId: string;
  deviceId: string;
  sessionId: string;
  /** Orders connections of one device: the newest one wins. */
  connectedAt: number;
  tokenExpiresAt: Date;
  isService: boolean;
  /** The device's offline-queue length when the handshake made it ready (`session.unacked`). */
  unacked: number;
}

/** Room names. Every socket is in its user's and its device's room. */
export const rooms = {
  user: (userId: string) => `u:${userId}`,
  device: (userId: string, deviceId: string) => `d:${userId}:${deviceId}`,
  conversation: (conversationId: string) => `c:${conversationId}`,
};
