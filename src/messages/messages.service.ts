import { randomUUID } from 'node:crypto';

import { Injectable, Logger } from '@nestjs/common';

import { AppError, ErrorCode } from '../common/app-error.js';
import { AppConfig } from '../config/app-config.js';
import { MembershipService } from '../conversations/membership.service.js';
import type { ConversationAccess } from '../conversations/conversations.repository.js';
import type { SendData, WireMessage } from '@messaging-service/client/protocol';
import { MessageFanout } from './message-fanout.service.js';
import { MessageCodec, type ConversationKey } from './message.codec.js';
import { MessagesRepository, type NewMessage, type SealedMessage } from './messages.repository.js';
import { ArrivalOrder } from './arrival-order.js';
import { fitPage } from './page-budget.js';
import { E2eRecipients } from './e2e-recipients.service.js';
import { SendBatcher } from './send-batcher.js';

/** Who is sending: a user's device (socket), or a service/app over REST. */
export interface Sender {
  userId: string;
  deviceId: string;
  /** The sending socket, which is not sent its own message back. */
  socketId?: string;
}

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

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

const keyOf = (access: ConversationAccess): ConversationKey => ({
  conversationId: access.id,
  encryption: access.encryption,
  wrappedKey: access.wrappedKey,
  keyVersion: access.keyVersion,
});

const keyOfSealed = (row: SealedMessage): ConversationKey => ({
  conversationId: row.conversationId,
  encryption: row.encryption,
  wrappedKey: row.wrappedKey,
  keyVersion: row.conversationKeyVersion,
});

/**
 * The message path shared by the socket and REST edges: membership, idempotency, seq,
 * seal, store; then one fan-out step after the commit.
 */
@Injectable()
export class MessagesService {
  private readonly logger = new Logger(MessagesService.name);
  private readonly arrivalOrder = new ArrivalOrder();

  constructor(
    private readonly membership: MembershipService,
    private readonly messages: MessagesRepository,
    private readonly codec: MessageCodec,
    private readonly fanout: MessageFanout,
    private readonly batcher: SendBatcher,
    private readonly recipients: E2eRecipients,
    private readonly config: AppConfig,
  ) {}

  /** Stores a message durably, then fans it out. Resending a clientMsgId returns the original. */
  async send(sender: Sender, input: SendInput): Promise<SendData> {
    // One connection's sends into one conversation join the store's queue in arrival order.
    // With the membership cached and no earlier send of the key still waiting, joining now
    // is that order; otherwise the hand-over waits its turn.
    const orderKey = `${sender.socketId ?? `${sender.userId}\n${sender.deviceId}`}\n${input.conversationId}`;
    // A send naming its e2e recipients waits for their check, so it takes the ordered path.
    const { recipientDevices } = input;
    const cached =
      recipientDevices === undefined ? this.membership.cachedMember(input.conversationId, sender.userId) : undefined;
    const { key, content, submitted } =
      cached && !this.arrivalOrder.busy(orderKey)
        ? this.submit(this.prepare(sender, input, cached))
        : await this.arrivalOrder.run(
            orderKey,
            async () => {
              const access = await this.membership.requireMember(input.conversationId, sender.userId);
              if (recipientDevices !== undefined) await this.recipients.check(access, sender, recipientDevices);
              return this.prepare(sender, input, access);
            },
            (prepared) => this.submit(prepared),
          );

    const outcome = await submitted;
    switch (outcome.kind) {
      case 'existing':
        return { message: this.duplicateOf(outcome.existing, input.conversationId), duplicate: true };
      case 'sibling':
        if (outcome.stored.conversationId !== input.conversationId) {
          throw new AppError(ErrorCode.Conflict, 'clientMsgId was already used for another conversation', {
            clientMsgId: input.clientMsgId,
          });
        }
        return { message: this.codec.toWire(key, outcome.stored, content), duplicate: true };
      case 'stored': {
        const wire = this.codec.toWire(key, outcome.stored, content);
        await this.fanout.afterCommit(wire, sender);
        return { message: wire, duplicate: false };
      }
    }
  }

  private prepare(sender: Sender, input: SendInput, access: ConversationAccess) {
    const content = this.contentFor(access, input);
    const message: NewMessage = {
      id: randomUUID(),
      conversationId: access.id,
      senderId: sender.userId,
      senderDeviceId: sender.deviceId,
      clientMsgId: input.clientMsgId,
      contentType: input.contentType ?? 'text/plain',
    };
    return { message, key: keyOf(access), content };
  }

  private submit(prepared: { message: NewMessage; key: ConversationKey; content: Uint8Array }) {
    const { message, content } = prepared;
    // Sealed with the key read in the storing transaction, never a cached one.
    const submitted = this.batcher.submit({
      message,
      seal: (seq, stored) => this.codec.seal(stored, message.id, seq, content),
    });
    return { ...prepared, submitted };
  }

  /**
   * A page of a conversation's messages, ascending by seq; fewer (and `hasMore`) where
   * more would weigh over `maxBytes` (see fitPage), dropping those farthest from where
   * paging started so that the next page's cursor continues from this one.
   */
  async history(
    userId: string,
    input: HistoryInput,
    maxBytes = Infinity,
  ): Promise<{ messages: WireMessage[]; hasMore: boolean }> {
    const access = await this.membership.requireMember(input.conversationId, userId);
    const page = await this.messages.page(access.id, {
      beforeSeq: input.beforeSeq,
      afterSeq: input.afterSeq,
      limit: input.limit ?? 50,
    });
    const opened = page.messages.map((row) => this.codec.open(keyOfSealed(row), row));
    const forward = input.afterSeq !== undefined && input.beforeSeq === undefined;
    const messages = fitPage(opened, maxBytes, forward ? 'oldest' : 'newest');
    return { messages, hasMore: page.hasMore || messages.length < opened.length };
  }

  /**
   * Opens stored messages by id (for offline queues), in the order given. Ids with no
   * stored message are `missing`; rows that fail to open (corrupted at rest) are
   * `unreadable`, logged, and left out rather than failing the whole page.
   */
  async openByIds(
    ids: readonly string[],
  ): Promise<{ messages: WireMessage[]; missing: string[]; unreadable: string[] }> {
    const rows = await this.messages.findByIds(ids);
    const byId = new Map(rows.map((row) => [row.id, row]));
    const result = { messages: [] as WireMessage[], missing: [] as string[], unreadable: [] as string[] };
    for (const id of ids) {
      const row = byId.get(id);
      if (!row) {
        result.missing.push(id);
        continue;
      }
      try {
        result.messages.push(this.codec.open(keyOfSealed(row), row));
      } catch (error) {
        this.logger.error({ msg: 'a stored message could not be opened', messageId: id, err: error });
        result.unreadable.push(id);
      }
    }
    return result;
  }

  private duplicateOf(existing: SealedMessage, conversationId: string): WireMessage {
    if (existing.conversationId !== conversationId) {
      throw new AppError(ErrorCode.Conflict, 'clientMsgId was already used for another conversation', {
        clientMsgId: existing.clientMsgId,
      });
    }
    return this.codec.open(keyOfSealed(existing), existing);
  }

  /** The bytes to store for this conversation's mode, checked against the limits. */
  private contentFor(access: ConversationAccess, input: SendInput): Uint8Array {
    const max = this.config.limits.maxMessageBytes;
    if (access.encryption === 'server') {
      if (input.ciphertext !== undefined) {
        throw AppError.badRequest('this conversation is server-encrypted: send body, not ciphertext', {
          problems: [{ path: 'ciphertext', message: 'not allowed in a server-encrypted conversation' }],
        });
      }
      if (input.body === undefined) {
        throw AppError.badRequest('body is required', { problems: [{ path: 'body', message: 'required' }] });
      }
      const bytes = MessageCodec.encodeBody(input.body);
      if (bytes.length > max) {
        throw new AppError(ErrorCode.PayloadTooLarge, `body is over ${max} bytes`, {
          maxMessageBytes: max,
          bytes: bytes.length,
        });
      }
      return bytes;
    }
    if (input.body !== undefined) {
      throw AppError.badRequest('this conversation is end-to-end encrypted: send ciphertext, not body', {
        problems: [{ path: 'body', message: 'not allowed in an e2e conversation' }],
      });
    }
    if (input.ciphertext === undefined) {
      throw AppError.badRequest('ciphertext is required', { problems: [{ path: 'ciphertext', message: 'required' }] });
    }
    if (input.ciphertext.length > Math.ceil((max * 4) / 3) + 4) {
      throw new AppError(ErrorCode.PayloadTooLarge, `ciphertext is over ${max} bytes`, { maxMessageBytes: max });
    }
    if (input.ciphertext.length === 0 || !BASE64.test(input.ciphertext)) {
      throw AppError.badRequest('ciphertext must be base64', {
        problems: [{ path: 'ciphertext', message: 'must be base64' }],
      });
    }
    const bytes = Buffer.from(input.ciphertext, 'base64');
    if (bytes.length > max) {
      throw new AppError(ErrorCode.PayloadTooLarge, `ciphertext is over ${max} bytes`, {
        maxMessageBytes: max,
        bytes: bytes.length,
      });
    }
    return new Uint8Array(bytes);
  }
}
