import type { HistoryRequest, SendPayload } from '@messaging-service/client/protocol';

/** Who is sending: a user's device (socket), or a service/app over REST. */
export interface Sender {
  userId: string;
  deviceId: string;
  /** The sending socket, which is not sent its own message back. */
  socketId?: string;
}

/** A send as either edge hands it over: the wire's payload, validated for shape. */
export type SendInput = SendPayload;

/** A history read as either edge hands it over. */
export type HistoryInput = HistoryRequest;
