import { Injectable, Logger } from '@nestjs/common';

import { ConversationKeysRepository } from './conversation-keys.repository.js';
import { CryptoService } from './crypto.service.js';

/** Conversations handled per page in a rotation run. */
const ROTATION_BATCH_SIZE = 500;

export interface RotationResult {
  /** Conversation keys this run re-wrapped under the active master key. */
  rewrapped: number;
  /**
   * Conversation keys already under the active master key: those found so when the run
   * started, plus any another run re-wrapped while this one was going.
   */
  alreadyCurrent: number;
}

/**
 * Master key rotation: re-wraps every conversation data key that is not under the active
 * master key version. Data keys themselves do not change, so message rows are never read
 * or written. Safe to interrupt and re-run, and to run twice at once: each row is
 * replaced only if it still has the version it was read with.
 */
@Injectable()
export class KeyRotationService {
  private readonly logger = new Logger(KeyRotationService.name);

  constructor(
    private readonly keys: ConversationKeysRepository,
    private readonly crypto: CryptoService,
  ) {}

  /**
   * Re-wraps all conversation keys under the active master key version, page by page.
   * Stops at the first key that cannot be unwrapped (CryptoError: for example a master
   * key version missing from ENCRYPTION_KEYS); the keys re-wrapped so far stay re-wrapped.
   *
   * @example
   * // ENCRYPTION_KEYS=1:<old>,2:<new> ENCRYPTION_ACTIVE_KEY=2
   * const { rewrapped, alreadyCurrent } = await rotation.rotateAll();
   * // once done, version 1 can be removed from ENCRYPTION_KEYS
   */
  async rotateAll(options: { batchSize?: number } = {}): Promise<RotationResult> {
    const batchSize = options.batchSize ?? ROTATION_BATCH_SIZE;
    const active = this.crypto.activeKeyVersion;
    let alreadyCurrent = await this.keys.countAtVersion(active);
    let rewrapped = 0;
    let afterId: string | null = null;
    for (;;) {
      const page = await this.keys.findNotAtVersion(active, afterId, batchSize);
      for (const row of page) {
        const next = this.crypto.rewrapDataKey(row.id, row.wrappedKey, row.keyVersion);
        if (await this.keys.replaceWrappedKey(row.id, row.keyVersion, next)) rewrapped += 1;
        else alreadyCurrent += 1;
      }
      if (page.length > 0) {
        this.logger.log(`re-wrapped ${rewrapped} conversation keys under master key version ${active} so far`);
      }
      if (page.length < batchSize) break;
      afterId = page[page.length - 1].id;
    }
    return { rewrapped, alreadyCurrent };
  }
}
