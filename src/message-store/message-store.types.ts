import type { WireMessage } from '@messaging-service/client/protocol';

/** A conversation's data key as stored: what seals and opens its messages. */
export interface ConversationKey {
  conversationId: string;
  encryption: 'server' | 'e2e';
  /** The data key, wrapped under the master key of `keyVersion`. */
  wrappedKey: Uint8Array;
  keyVersion: number;
}

/** A message to store: everything but its seq, its sealed content and its time. */
export interface NewMessage {
  id: string;
  conversationId: string;
  senderId: string;
  senderDeviceId: string;
  clientMsgId: string;
  contentType: string;
}

/** Sealed content as stored. `keyVersion` is the data key generation it was sealed with. */
export interface Sealed {
  ciphertext: Uint8Array;
  nonce: Uint8Array;
  keyVersion: number;
}

/** A message row as stored (still sealed), with its conversation's key to open it. */
export interface StoredMessage extends NewMessage, Sealed {
  seq: number;
  createdAt: Date;
  key: ConversationKey;
}

/**
 * What storing one message came to. Expected cases are outcomes, not exceptions; a
 * rejected promise means the store could not answer (PostgreSQL down and the like).
 *
 * - `stored`: committed now, under a new seq. `previousAt` is when the conversation's
 *   previous message was committed (ms): live delivery orders by it (SeqMerge).
 * - `duplicate`: the sender's clientMsgId was already stored (earlier, by another
 *   instance, or earlier in the same batch); `message` is that message, which may
 *   belong to another conversation.
 */
export type StoreOutcome =
  { kind: 'stored'; message: WireMessage; previousAt: number } | { kind: 'duplicate'; message: WireMessage };

/** A page of a conversation, ascending by seq, plus whether more lie in the paging direction. */
export interface StoredPage {
  messages: StoredMessage[];
  hasMore: boolean;
}
