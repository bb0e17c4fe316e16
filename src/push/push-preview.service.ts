import { Inject, Injectable } from '@nestjs/common';

import { MessageStore } from '../message-store/message-store.service.js';
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
    private readonly store: MessageStore,
  ) {}

  async previewOf(data: PushJobData): Promise<PushContent['preview']> {
    if (!this.options.previews || data.e2e) return undefined;
    const {
      messages: [message],
    } = await this.store.openByIds([data.messageId]);
    // Only server-mode messages have a body; e2e ones come back with ciphertext.
    if (message?.body === undefined || !message.contentType.startsWith('text/')) return undefined;
    return { sender: message.senderId, text: message.body };
  }
}
