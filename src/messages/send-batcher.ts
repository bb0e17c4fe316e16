import { Injectable } from '@nestjs/common';

import {
  BatchConflict,
  MessagesRepository,
  ResendInBatch,
  type BatchResult,
  type NewMessage,
  type Sealed,
  type SealedMessage,
  type StoredKey,
  type StoredMessage,
} from './messages.repository.js';
import { OrderedEmitter } from './ordered-emitter.js';

/** One message waiting to be stored. `seal` runs inside the transaction once its seq is known. */
export interface PendingSend {
  message: NewMessage;
  seal: (seq: number, key: StoredKey) => Sealed;
}

/**
 * `stored`: committed now. `existing`: the sender's clientMsgId was already stored.
 * `sibling`: the same clientMsgId came twice in this batch; this is the first one's row.
 */
export type SendOutcome =
  | { kind: 'stored'; stored: StoredMessage }
  | { kind: 'existing'; existing: SealedMessage }
  | { kind: 'sibling'; stored: StoredMessage };

interface Waiting {
  send: PendingSend;
  resolve: (outcome: SendOutcome) => void;
  reject: (error: unknown) => void;
}

/** Concurrent transactions; each lane owns a fixed share of conversations. */
const LANES = 4;
/** Messages in one transaction at most. */
const MAX_BATCH = 256;
/** Conversations whose state the fast path remembers; past that it starts over. */
const MAX_HEADS = 100_000;

function laneOf(conversationId: string): number {
  let hash = 0;
  for (let i = 0; i < conversationId.length; i++) hash = (hash * 31 + conversationId.charCodeAt(i)) | 0;
  return Math.abs(hash) % LANES;
}

/**
 * Group commit for the send path. Sends that arrive while a lane's transaction is in
 * flight wait and go together in its next one, so under load one fsync covers many
 * messages; an idle lane starts at once, so a lone message waits for nobody. A
 * conversation always maps to the same lane, so its transactions never overlap here:
 * seqs are reserved (for in-order live emits) in seq order and lanes cannot deadlock.
 */
@Injectable()
export class SendBatcher {
  private readonly queues: Waiting[][] = Array.from({ length: LANES }, () => []);
  private readonly busy: boolean[] = Array.from({ length: LANES }, () => false);
  /** Per conversation, the last seq and key this instance stored it at (for the fast path). */
  private readonly heads = new Map<string, { lastSeq: number; key: StoredKey }>();

  constructor(
    private readonly messages: MessagesRepository,
    private readonly ordered: OrderedEmitter,
  ) {}

  /** Resolves once the message is committed (or found already stored). */
  submit(send: PendingSend): Promise<SendOutcome> {
    const lane = laneOf(send.message.conversationId);
    return new Promise<SendOutcome>((resolve, reject) => {
      this.queues[lane].push({ send, resolve, reject });
      if (!this.busy[lane]) void this.run(lane);
    });
  }

  private async run(lane: number): Promise<void> {
    this.busy[lane] = true;
    try {
      while (this.queues[lane].length > 0) {
        const batch = this.queues[lane].splice(0, MAX_BATCH);
        await this.store(batch);
      }
    } finally {
      this.busy[lane] = false;
    }
  }

  private async store(batch: Waiting[]): Promise<void> {
    // The same sender and clientMsgId twice in one batch: store the first, answer the rest with it.
    const leaders = new Map<string, Waiting>();
    const followers: { waiting: Waiting; key: string }[] = [];
    for (const waiting of batch) {
      const key = `${waiting.send.message.senderId}\n${waiting.send.message.clientMsgId}`;
      if (leaders.has(key)) followers.push({ waiting, key });
      else leaders.set(key, waiting);
    }
    const byId = new Map([...leaders.values()].map((w) => [w.send.message.id, w]));
    const messages = [...leaders.values()].map((w) => w.send.message);
    let result: { stored: StoredMessage[]; existing: SealedMessage[] };
    let failed = new Map<string, unknown>();
    try {
      // Split before the fast path runs: a miss there forgets the heads, and a split after
      // it would list those messages twice (their second copies clash as resends).
      const known = messages.filter((m) => this.heads.has(m.conversationId));
      const unknown = messages.filter((m) => !this.heads.has(m.conversationId));
      const fast = known.length > 0 ? await this.storePredicted(known, byId) : { stored: [], missed: [] };
      const rest = [...unknown, ...fast.missed];
      const careful = rest.length > 0 ? await this.storeInTransaction(rest, byId) : { stored: [], existing: [] };
      result = { stored: [...fast.stored, ...careful.stored], existing: careful.existing };
    } catch (error) {
      if (!(error instanceof BatchConflict)) {
        for (const waiting of batch) waiting.reject(error);
        return;
      }
      // A concurrent writer clashed with the batch (another instance storing the same
      // clientMsgId): each message alone, one after the other in arrival order, while the
      // lane waits, so that the fallback keeps the order the batch had.
      ({ failed, ...result } = await this.storeEachAlone([...leaders.values()]));
    }
    for (const [id, error] of failed) byId.get(id)?.reject(error);
    const outcomes = new Map<string, SendOutcome>();
    for (const stored of result.stored) {
      const outcome: SendOutcome = { kind: 'stored', stored };
      outcomes.set(`${stored.senderId}\n${stored.clientMsgId}`, outcome);
      byId.get(stored.id)?.resolve(outcome);
    }
    for (const existing of result.existing) {
      const key = `${existing.senderId}\n${existing.clientMsgId}`;
      outcomes.set(key, { kind: 'existing', existing });
      leaders.get(key)?.resolve({ kind: 'existing', existing });
    }
    for (const { waiting, key } of followers) {
      const outcome = outcomes.get(key);
      const leaderFailure = failed.get(leaders.get(key)?.send.message.id ?? '');
      if (leaderFailure !== undefined) {
        waiting.reject(leaderFailure);
      } else if (!outcome) {
        waiting.reject(new Error('a duplicate in the batch has no stored original'));
      } else if (outcome.kind === 'stored') {
        waiting.resolve({ kind: 'sibling', stored: outcome.stored });
      } else {
        waiting.resolve(outcome);
      }
    }
  }

  /**
   * The fast path: seqs predicted from what this lane last stored in each conversation
   * (lanes own their conversations, so on one instance the prediction holds), one
   * statement, no transaction. Conversations whose state moved elsewhere come back in
   * `missed` and are forgotten; any error sends the whole batch to the careful path.
   */
  private async storePredicted(
    messages: readonly NewMessage[],
    byId: Map<string, Waiting>,
  ): Promise<{ stored: StoredMessage[]; missed: NewMessage[] }> {
    const counts = new Map<string, number>();
    const rows: { message: NewMessage; seq: number; ordinal: number; sealed: Sealed }[] = [];
    for (const message of messages) {
      const head = this.heads.get(message.conversationId);
      const waiting = byId.get(message.id);
      if (!head || !waiting) throw new Error('a predicted message without its head');
      const ordinal = (counts.get(message.conversationId) ?? 0) + 1;
      counts.set(message.conversationId, ordinal);
      const seq = head.lastSeq + ordinal;
      this.ordered.reserve(message.conversationId, seq);
      rows.push({ message, seq, ordinal, sealed: waiting.send.seal(seq, head.key) });
    }
    const heads = [...counts].map(([conversationId, count]) => {
      const head = this.heads.get(conversationId) as { lastSeq: number; key: StoredKey };
      return { conversationId, expectedLastSeq: head.lastSeq, count, key: head.key };
    });
    let outcome: { createdAt: Map<string, Date>; missed: Set<string> };
    try {
      outcome = await this.messages.insertPredicted(rows, heads);
    } catch {
      // A resend, a deadlock, anything: nothing was stored; the careful path decides.
      for (const row of rows) this.ordered.release(row.message.conversationId, row.seq);
      for (const head of heads) this.heads.delete(head.conversationId);
      return { stored: [], missed: [...messages] };
    }
    for (const head of heads) {
      if (outcome.missed.has(head.conversationId)) this.heads.delete(head.conversationId);
      else this.remember(head.conversationId, head.expectedLastSeq + head.count, head.key);
    }
    const stored: StoredMessage[] = [];
    const missed: NewMessage[] = [];
    for (const row of rows) {
      const createdAt = outcome.createdAt.get(row.message.id);
      if (!createdAt) {
        this.ordered.release(row.message.conversationId, row.seq);
        missed.push(row.message);
        continue;
      }
      stored.push({ ...row.message, seq: row.seq, ...row.sealed, createdAt });
    }
    return { stored, missed };
  }

  /** The careful path: one transaction that reads and locks each conversation first. */
  private async storeInTransaction(
    messages: readonly NewMessage[],
    byId: Map<string, Waiting>,
  ): Promise<{ stored: StoredMessage[]; existing: SealedMessage[] }> {
    const reserved: { conversationId: string; seq: number }[] = [];
    const releaseReserved = () => {
      for (const r of reserved.splice(0)) this.ordered.release(r.conversationId, r.seq);
    };
    const attempt = (lookForResends: boolean) =>
      this.messages.insertBatch(
        messages,
        (message, seq, key) => {
          reserved.push({ conversationId: message.conversationId, seq });
          this.ordered.reserve(message.conversationId, seq);
          const waiting = byId.get(message.id);
          if (!waiting) throw new Error('sealed a message that is not in the batch');
          return waiting.send.seal(seq, key);
        },
        lookForResends,
      );
    try {
      let result: BatchResult;
      try {
        result = await attempt(false);
      } catch (error) {
        if (!(error instanceof ResendInBatch)) throw error;
        releaseReserved();
        result = await attempt(true);
      }
      for (const [conversationId, head] of result.heads) this.remember(conversationId, head.lastSeq, head.key);
      return result;
    } catch (error) {
      releaseReserved();
      for (const message of messages) this.heads.delete(message.conversationId);
      throw error;
    }
  }

  /** The fallback after a clash: one transaction per message, in order. */
  private async storeEachAlone(
    leaders: readonly Waiting[],
  ): Promise<{ stored: StoredMessage[]; existing: SealedMessage[]; failed: Map<string, unknown> }> {
    const result = {
      stored: [] as StoredMessage[],
      existing: [] as SealedMessage[],
      failed: new Map<string, unknown>(),
    };
    for (const waiting of leaders) {
      const { message } = waiting.send;
      this.heads.delete(message.conversationId);
      try {
        const outcome = await this.storeAlone(waiting.send);
        if (outcome.kind === 'stored') result.stored.push(outcome.stored);
        else result.existing.push(outcome.existing);
      } catch (error) {
        result.failed.set(message.id, error);
      }
    }
    return result;
  }

  private async storeAlone(
    send: PendingSend,
  ): Promise<{ kind: 'stored'; stored: StoredMessage } | { kind: 'existing'; existing: SealedMessage }> {
    const { message } = send;
    let reserved: number | undefined;
    let stored: StoredMessage | null;
    try {
      stored = await this.messages.insertNext(message, (seq, key) => {
        reserved = seq;
        this.ordered.reserve(message.conversationId, seq);
        return send.seal(seq, key);
      });
    } catch (error) {
      if (reserved !== undefined) this.ordered.release(message.conversationId, reserved);
      throw error;
    }
    if (stored) return { kind: 'stored', stored };
    if (reserved !== undefined) this.ordered.release(message.conversationId, reserved);
    // A concurrent send with the same clientMsgId won the race: answer with its message.
    const winner = await this.messages.findByClientMsgId(message.senderId, message.clientMsgId);
    if (!winner) throw new Error('clientMsgId conflict without a stored message');
    return { kind: 'existing', existing: winner };
  }

  private remember(conversationId: string, lastSeq: number, key: StoredKey): void {
    if (this.heads.size >= MAX_HEADS) this.heads.clear();
    this.heads.set(conversationId, { lastSeq, key });
  }
}
