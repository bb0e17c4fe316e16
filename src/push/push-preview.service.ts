import { Inject, Injectable } from '@nestjs/common';

import { MessageCodec } from '../messages/message.codec.js';
import { MessagesRepository } from '../messages/messages.repository.js';
import type { PushJobData } from './push-jobs.repository.js';
import { PUSH_OPTIONS, type PushOptions } from './push.options.js';
import type { PushContent } from './push.payload.js';

/**
 * Sender and text of a message for a push preview: only when the operator enabled
 * previews, only for server-mode text messages (e2e content is never opened here).
 */
@Injectable()
export class PushPreviewService {
  constructor(
    @Inject(PUSH_OPTIONS) private readonly options: PushOptions,
    private readonly messages: MessagesRepository,
    private readonly codec: MessageCodec,
  ) {}

  async previewOf(data: PushJobData): Promise<PushContent['preview']> {
    if (!this.options.previews || data.e2e) return undefined;
    const [row] = await this.messages.findByIds([data.messageId]);
    if (!row || row.encryption !== 'server' || !row.contentType.startsWith('text/')) return undefined;
    const key = {
      conversationId: row.conversationId,
      encryption: row.encryption,
      wrappedKey: row.wrappedKey,
      keyVersion: row.conversationKeyVersion,
    };
    const wire = this.codec.open(key, row);
    return wire.body === undefined ? undefined : { sender: row.senderId, text: wire.body };
  }
}
