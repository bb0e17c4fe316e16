import { randomUUID } from 'node:crypto';

import { Injectable } from '@nestjs/common';

import { AppError, ErrorCode } from '../common/app-error.js';
import { AppConfig } from '../config/app-config.js';
import { MembershipService } from '../conversations/membership.service.js';
import type { ConversationAccess } from '../conversations/conversations.repository.js';
import { MessageCodec } from '../message-store/message.codec.js';
import { MessageStore } from '../message-store/message-store.service.js';
import type { NewMessage, StoreOutcome } from '../message-store/message-store.types.js';
import type { SendData, WireMessage } from '@messaging-service/client/protocol';
import { ArrivalOrder } from './arrival-order.js';
import { E2eRecipients } from './e2e-recipients.service.js';
import { MessageFanout } from './message-fanout.service.js';
import type { HistoryInput, SendInput, Sender } from './messages.types.js';
import { fitPage } from './page-budget.js';

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/**
 * The message path shared by the socket and REST edges: membership, the content's
 * checks, then the message store (idempotency, seq, seal, store), then one fan-out step
 * after the commit.
 */
@Injectable()
export class MessagesService {
  private readonly arrivalOrder = new ArrivalOrder();

  constructor(
    private readonly membership: MembershipService,
    private readonly store: MessageStore,
    private readonly fanout: MessageFanout,
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
    const { outcome } =
      cached && !this.arrivalOrder.busy(orderKey)
        ? this.submit(sender, input, cached)
        : await this.arrivalOrder.run(
            orderKey,
            async () => {
              const access = await this.membership.requireMember(input.conversationId, sender.userId);
              if (recipientDevices !== undefined) await this.recipients.check(access, sender, recipientDevices);
              return access;
            },
            (access) => this.submit(sender, input, access),
          );
    const stored = await outcome;

    switch (stored.kind) {
      case 'duplicate':
        if (stored.message.conversationId !== input.conversationId) {
          throw new AppError(ErrorCode.Conflict, 'clientMsgId was already used for another conversation', {
            clientMsgId: input.clientMsgId,
          });
        }
        return { message: stored.message, duplicate: true };
      case 'stored':
        await this.fanout.afterCommit(stored.message, sender, stored.previousAt);
        return { message: stored.message, duplicate: false };
    }
  }

  /**
   * Checks the content and joins the store's queue, synchronously: that is the arrival
   * order. The promise comes wrapped so that awaiting the hand-over does not await the store.
   */
  private submit(sender: Sender, input: SendInput, access: ConversationAccess): { outcome: Promise<StoreOutcome> } {
    const content = this.contentFor(access, input);
    const message: NewMessage = {
      id: randomUUID(),
      conversationId: access.id,
      senderId: sender.userId,
      senderDeviceId: sender.deviceId,
      clientMsgId: input.clientMsgId,
      contentType: input.contentType ?? 'text/plain',
    };
    return { outcome: this.store.store(message, content) };
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
    const page = await this.store.page(access.id, {
      beforeSeq: input.beforeSeq,
      afterSeq: input.afterSeq,
      limit: input.limit ?? 50,
    });
    const forward = input.afterSeq !== undefined && input.beforeSeq === undefined;
    const messages = fitPage(page.messages, maxBytes, forward ? 'oldest' : 'newest');
    return { messages, hasMore: page.hasMore || messages.length < page.messages.length };
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
