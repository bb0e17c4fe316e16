/** Who is sending: a user's device (socket), or a service/app over REST. */
export interface Sender {
  userId: string;
  deviceId: string;
  /** The sending socket, which is not sent its own message back. */
  socketId?: string;
}

/** A send as the edges hand it over, validated for shape (messages.schemas, event.schemas). */
export interface SendInput {
  conversationId: string;
  clientMsgId: string;
  body?: string;
  ciphertext?: string;
  contentType?: string;
  /** e2e only: the devices the client sealed to, checked against the current ones. */
  recipientDevices?: string[];
}

export interface HistoryInput {
  conversationId: string;
  beforeSeq?: number;
  afterSeq?: number;
  limit?: number;
}
