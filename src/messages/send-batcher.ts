import { Injectable } from '@nestjs/common';

import {
  MessagesRepository,
  ResendInBatch,
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

  constructor(
    private readonly messages: MessagesRepository,
    private readonly ordered: OrderedEmitter,
  ) {}

  /** Resolves once the message is committed (or found already stored); rejects with BatchConflict to retry alone. */
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
    const reserved: { conversationId: string; seq: number }[] = [];
    const releaseReserved = () => {
      for (const r of reserved.splice(0)) this.ordered.release(r.conversationId, r.seq);
    };
    const attempt = (lookForResends: boolean) =>
      this.messages.insertBatch(
        [...leaders.values()].map((w) => w.send.message),
        (message, seq, key) => {
          reserved.push({ conversationId: message.conversationId, seq });
          this.ordered.reserve(message.conversationId, seq);
          const waiting = byId.get(message.id);
          if (!waiting) throw new Error('sealed a message that is not in the batch');
          return waiting.send.seal(seq, key);
        },
        lookForResends,
      );
    let result: { stored: StoredMessage[]; existing: SealedMessage[] };
    try {
      try {
        result = await attempt(false);
      } catch (error) {
        if (!(error instanceof ResendInBatch)) throw error;
        releaseReserved();
        result = await attempt(true);
      }
    } catch (error) {
      releaseReserved();
      for (const waiting of batch) waiting.reject(error);
      return;
    }
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
      if (!outcome) {
        waiting.reject(new Error('a duplicate in the batch has no stored original'));
      } else if (outcome.kind === 'stored') {
        waiting.resolve({ kind: 'sibling', stored: outcome.stored });
      } else {
        waiting.resolve(outcome);
      }
    }
  }
}
