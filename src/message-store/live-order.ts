import { Injectable, Logger } from '@nestjs/common';

/**
 * A message's place in its conversation's live-emit order on this instance, taken while
 * its seq was assigned. Exactly one of the two ends it; either is idempotent:
 * - `emit(send)`: send now, or as soon as every earlier place has sent or been released;
 * - `release()`: nothing will be sent (rolled back, failed fan-out); successors need not
 *   wait. No effect once `emit` was called, so `finally { slot.release() }` is always safe.
 * A place left open holds its successors back for at most STALL_MS.
 */
export interface LiveSlot {
  emit(send: () => void): void;
  release(): void;
}

/** How long an open place may hold back its successors before they go out anyway. */
const STALL_MS = 5_000;

interface Line {
  slots: Slot[];
  timer?: NodeJS.Timeout;
}

class Slot implements LiveSlot {
  /** open: waiting for its end; ready: emit registered; done: released, sent or skipped. */
  state: 'open' | 'ready' | 'done' = 'open';
  send?: () => void;

  constructor(
    private readonly order: LiveOrder,
    readonly conversationId: string,
  ) {}

  emit(send: () => void): void {
    if (this.state === 'ready') return;
    if (this.state === 'done') {
      // Skipped after a stall (or released): late is better than never.
      if (!this.send) this.order.run(send);
      this.send = send;
      return;
    }
    this.send = send;
    this.state = 'ready';
    this.order.drain(this.conversationId);
  }

  release(): void {
    if (this.state !== 'open') return;
    this.state = 'done';
    this.order.drain(this.conversationId);
  }
}

/**
 * Keeps live emits of one conversation in seq order on this instance. Fan-outs finish
 * out of order (each awaits its own queries), so each message takes its place while its
 * transaction still holds the conversation row lock (hence in seq order), and its emit
 * runs only after every earlier place has emitted or been released.
 */
@Injectable()
export class LiveOrder {
  private readonly logger = new Logger(LiveOrder.name);
  private readonly lines = new Map<string, Line>();

  /** Called while the seq is assigned (under the conversation's lock), so places follow seq order. */
  reserve(conversationId: string): LiveSlot {
    let line = this.lines.get(conversationId);
    if (!line) {
      line = { slots: [] };
      this.lines.set(conversationId, line);
    }
    const slot = new Slot(this, conversationId);
    line.slots.push(slot);
    return slot;
  }

  /** @internal Sends what is ready at the head of the line; re-arms the stall timer. */
  drain(conversationId: string): void {
    const line = this.lines.get(conversationId);
    if (!line) return;
    let sent = 0;
    while (sent < line.slots.length && line.slots[sent].state !== 'open') {
      const slot = line.slots[sent++];
      const { send } = slot;
      slot.state = 'done';
      if (send) this.run(send);
    }
    line.slots.splice(0, sent);
    if (line.slots.length === 0) {
      clearTimeout(line.timer);
      this.lines.delete(conversationId);
      return;
    }
    // One timer per waiting conversation, pushed back on every step forward (refresh()
    // re-arms it without a new timer per message).
    if (line.timer) {
      if (sent > 0) line.timer.refresh();
      return;
    }
    line.timer = setTimeout(() => {
      line.timer = undefined;
      const stalled = line.slots[0];
      if (!stalled || this.lines.get(conversationId) !== line) return;
      this.logger.warn(`a message held back a conversation's live emits for ${STALL_MS} ms; skipping it`);
      stalled.release();
    }, STALL_MS);
    line.timer.unref();
  }

  /** @internal One emit; a throwing emit (a socket gone) never stops the others. */
  run(send: () => void): void {
    try {
      send();
    } catch (error) {
      this.logger.error(`live emit failed: ${String(error)}`);
    }
  }
}
