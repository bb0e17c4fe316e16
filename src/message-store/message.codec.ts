import { Injectable } from '@nestjs/common';

import { CryptoService } from '../crypto/crypto.service.js';
import type { WireMessage } from '@messaging-service/client/protocol';
import type { ConversationKey, Sealed, StoredMessage } from './message-store.types.js';

/** The generation of the conversation data key new messages are sealed with. */
const DATA_KEY_GENERATION = 1;

const utf8Decoder = new TextDecoder('utf-8', { fatal: true });
const utf8Encoder = new TextEncoder();

/** Seals message contents for storage and opens stored rows into wire messages. */
@Injectable()
export class MessageCodec {
  constructor(private readonly crypto: CryptoService) {}

  /**
   * Server-mode conversations store the body's UTF-8 bytes; e2e conversations store the
   * client's ciphertext bytes. Either way they are sealed at rest under the data key.
   */
  seal(key: ConversationKey, messageId: string, seq: number, content: Uint8Array): Sealed {
    const dataKey = this.crypto.unwrapDataKey(key.conversationId, key.wrappedKey, key.keyVersion);
    const sealed = this.crypto.seal(dataKey, content, {
      conversationId: key.conversationId,
      messageId,
      seq: BigInt(seq),
      keyVersion: DATA_KEY_GENERATION,
    });
    return { ...sealed, keyVersion: DATA_KEY_GENERATION };
  }

  open(row: StoredMessage): WireMessage {
    const { key } = row;
    const dataKey = this.crypto.unwrapDataKey(key.conversationId, key.wrappedKey, key.keyVersion);
    const content = this.crypto.open(dataKey, row.ciphertext, row.nonce, {
      conversationId: row.conversationId,
      messageId: row.id,
      seq: BigInt(row.seq),
      keyVersion: row.keyVersion,
    });
    return this.toWire(row, content);
  }

  /** The wire form of a row whose content is already at hand (just stored, or just opened). */
  toWire(row: StoredMessage, content: Uint8Array): WireMessage {
    const wire: WireMessage = {
      id: row.id,
      conversationId: row.conversationId,
      seq: row.seq,
      senderId: row.senderId,
      senderDeviceId: row.senderDeviceId,
      clientMsgId: row.clientMsgId,
      contentType: row.contentType,
      createdAt: row.createdAt.toISOString(),
    };
    if (row.key.encryption === 'e2e') wire.ciphertext = Buffer.from(content).toString('base64');
    else wire.body = utf8Decoder.decode(content);
    return wire;
  }

  static encodeBody(body: string): Uint8Array {
    return utf8Encoder.encode(body);
  }
}
