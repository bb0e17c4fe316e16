import { Injectable, Logger, type OnApplicationShutdown } from '@nestjs/common';

import { DeliveryCursorsRepository } from './delivery-cursors.repository.js';

/** How long acked positions wait to be written together. */
const FLUSH_MS = 50;
const MAX_PENDING = 2_000;

interface Pending {
  userId: string;
  deviceId: string;
  conversationId: string;
  ackedSeq: number;
}

/**
 * Writes devices' delivery cursors in batches. A cursor only matters when a queue is
 * rebuilt after Redis lost it, and moves forward only, so a write may lag an ack by up
 * to FLUSH_MS: if the process dies in between, a rebuild redelivers those few messages
 * (at least once; clients dedupe by id), nothing is lost. One UPDATE then covers every
 * ack of the interval instead of one transaction per ack. Flushed at shutdown.
 */
@Injectable()
export class CursorWriter implements OnApplicationShutdown {
  private readonly logger = new Logger(CursorWriter.name);
  private pending = new Map<string, Pending>();
  private timer?: NodeJS.Timeout;
  private flushing: Promise<void> = Promise.resolve();

  constructor(private readonly cursors: DeliveryCursorsRepository) {}

  advance(userId: string, deviceId: string, cursors: readonly { conversationId: string; ackedSeq: number }[]): void {
    for (const cursor of cursors) {
      const key = `${userId}\n${deviceId}\n${cursor.conversationId}`;
      const existing = this.pending.get(key);
      if (!existing || existing.ackedSeq < cursor.ackedSeq) this.pending.set(key, { userId, deviceId, ...cursor });
    }
    if (this.pending.size >= MAX_PENDING) this.flushSoon(0);
    else this.flushSoon(FLUSH_MS);
  }

  /** Writes everything pending now (tests, shutdown). */
  async flush(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    const batch = [...this.pending.values()];
    this.pending = new Map();
    this.flushing = this.flushing.then(async () => {
      if (batch.length === 0) return;
      try {
        await this.cursors.advance(batch);
      } catch (error) {
        // Keep them for the next flush (never move back: the map keeps the highest).
        this.logger.warn(`delivery cursors not written yet (${batch.length}): ${String(error)}`);
        for (const cursor of batch) {
          const key = `${cursor.userId}\n${cursor.deviceId}\n${cursor.conversationId}`;
          const newer = this.pending.get(key);
          if (!newer || newer.ackedSeq < cursor.ackedSeq) this.pending.set(key, cursor);
        }
        this.flushSoon(1_000);
      }
    });
    await this.flushing;
  }

  async onApplicationShutdown(): Promise<void> {
    await this.flush();
  }

  private flushSoon(delayMs: number): void {
    if (this.timer && delayMs > 0) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.flush(), delayMs);
    this.timer.unref();
  }
}
