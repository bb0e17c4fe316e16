import { Injectable, Logger } from '@nestjs/common';

interface Slot {
  emit?: () => void;
  released: boolean;
}

/** How long a reserved seq may hold back its successors before they go out anyway. */
const STALL_MS = 5_000;

/**
 * Keeps live emits of one conversation in seq order on this instance. Fan-outs finish
 * out of order (each awaits its own queries), so each message reserves its seq while its
 * transaction still holds the conversation row lock (hence in seq order), and its emit
 * runs only after every earlier reserved seq has emitted or been released.
 *
 * Across instances order is per instance; clients order by `seq` (PROTOCOL.md section 2).
 */
@Injectable()
export class OrderedEmitter {
  private readonly logger = new Logger(OrderedEmitter.name);
  private readonly conversations = new Map<
    string,
    { slots: Map<number, Slot>; order: number[]; timer?: NodeJS.Timeout }
  >();

  /** Called inside the storing transaction, once the seq is known. */
  reserve(conversationId: string, seq: number): void {
    let state = this.conversations.get(conversationId);
    if (!state) {
      state = { slots: new Map(), order: [] };
      this.conversations.set(conversationId, state);
    }
    state.slots.set(seq, { released: false });
    state.order.push(seq);
  }

  /** The message was committed: emit now, or as soon as its predecessors have. */
  emit(conversationId: string, seq: number, emit: () => void): void {
    const slot = this.conversations.get(conversationId)?.slots.get(seq);
    if (!slot) {
      emit();
      return;
    }
    slot.emit = emit;
    this.drain(conversationId);
  }

  /**
   * Nothing will be emitted for this seq (rolled back, duplicate, fan-out failed): its
   * successors need not wait. No effect once its emit is registered.
   */
  release(conversationId: string, seq: number): void {
    const slot = this.conversations.get(conversationId)?.slots.get(seq);
    if (!slot || slot.emit) return;
    slot.released = true;
    this.drain(conversationId);
  }

  private drain(conversationId: string): void {
    const state = this.conversations.get(conversationId);
    if (!state) return;
    while (state.order.length > 0) {
      const head = state.order[0];
      const slot = state.slots.get(head);
      if (slot && !slot.released && !slot.emit) break;
      state.order.shift();
      state.slots.delete(head);
      this.run(slot?.emit);
    }
    if (state.order.length === 0) {
      if (state.timer) clearTimeout(state.timer);
      this.conversations.delete(conversationId);
      return;
    }
    // One timer per waiting conversation, pushed back on every step forward (refresh()
    // re-arms it without a new timer per message).
    if (state.timer) {
      state.timer.refresh();
      return;
    }
    state.timer = setTimeout(() => {
      const current = this.conversations.get(conversationId);
      if (!current || current.order.length === 0) return;
      current.timer = undefined;
      const stalled = current.order[0];
      this.logger.warn(`seq ${stalled} held back a conversation's live emits for ${STALL_MS} ms; skipping it`);
      this.release(conversationId, stalled);
    }, STALL_MS);
    state.timer.unref();
  }

  private run(emit: (() => void) | undefined): void {
    try {
      emit?.();
    } catch (error) {
      this.logger.error(`live emit failed: ${String(error)}`);
    }
  }
}
