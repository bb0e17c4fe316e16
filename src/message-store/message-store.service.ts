import { Injectable, Logger } from '@nestjs/common';

import type { WireMessage } from '@messaging-service/client/protocol';
import { MessageCodec } from './message.codec.js';
import { MessageStoreRepository, type Head, type SealedRow } from './message-store.repository.js';
import type { ConversationKey, NewMessage, StoreOutcome, StoredMessage, StoredPage } from './message-store.types.js';

/** One message waiting in a lane. */
interface Pending {
  message: NewMessage;
  content: Uint8Array;
  resolve: (outcome: StoreOutcome) => void;
  reject: (error: unknown) => void;
}

/** What one step stored (with when each one's predecessor was) and found already stored. */
interface Settled {
  stored: { pending: Pending; row: StoredMessage; previousAt: number }[];
  existing: { pending: Pending; row: StoredMessage }[];
}

/** Concurrent transactions; each lane owns a fixed share of conversations. */
const LANES = 4;
/** Messages in one transaction at most. */
const MAX_BATCH = 256;
/** Conversations whose head the fast path remembers; past that it starts over. */
const MAX_HEADS = 100_000;

function laneOf(conversationId: string): number {
  let hash = 0;
  for (let i = 0; i < conversationId.length; i++) hash = (hash * 31 + conversationId.charCodeAt(i)) | 0;
  return Math.abs(hash) % LANES;
}

const resendKey = (message: { senderId: string; clientMsgId: string }) => `${message.senderId}\n${message.clientMsgId}`;

/**
 * The one owner of storing a message: dedupe by the sender's clientMsgId, group commit,
 * the fast path and its fallbacks, and sealing under the seq (part of the associated
 * data). Each `store` comes back
 * as an outcome (StoreOutcome); it rejects only when the store cannot answer.
 *
 * Group commit: sends that arrive while a lane's transaction is in flight wait and go
 * together in its next one, so under load one fsync covers many messages; an idle lane
 * starts at once, so a lone message waits for nobody. A conversation always maps to the
 * same lane, so its stores never overlap here and lanes cannot deadlock each other.
 *
 * Each batch takes the cheapest path that is safe, falling back step by step:
 * 1. predicted: conversations whose head (last seq and key) this lane left, in one
 *    statement without a transaction; a conversation moved by another writer is missed;
 * 2. transaction: the rest, locking their conversations; a clash (a resend it did not
 *    look for) runs it again looking for resends first;
 * 3. one by one: a second clash (a concurrent writer's duplicate, a deadlock) stores
 *    each message alone, in arrival order, so the batch's order holds.
 */
@Injectable()
export class MessageStore {
  private readonly logger = new Logger(MessageStore.name);
  private readonly lanes: Pending[][] = Array.from({ length: LANES }, () => []);
  private readonly busy: boolean[] = Array.from({ length: LANES }, () => false);
  /** Per conversation, where this instance last left it (for the predicted path). */
  private readonly heads = new Map<string, Head>();

  constructor(
    private readonly repository: MessageStoreRepository,
    private readonly codec: MessageCodec,
  ) {}

  /** Stores `content` (the plaintext body's bytes, or the e2e ciphertext) sealed at rest. */
  store(message: NewMessage, content: Uint8Array): Promise<StoreOutcome> {
    const lane = laneOf(message.conversationId);
    return new Promise<StoreOutcome>((resolve, reject) => {
      this.lanes[lane].push({ message, content, resolve, reject });
      if (!this.busy[lane]) void this.run(lane);
    });
  }

  /**
   * Opens stored messages by id, in the order given. Ids with no stored message are
   * `missing`; rows that fail to open (corrupted at rest) are `unreadable`, logged, and
   * left out rather than failing the whole lot.
   */
  async openByIds(
    ids: readonly string[],
  ): Promise<{ messages: WireMessage[]; missing: string[]; unreadable: string[] }> {
    const byId = new Map((await this.repository.findByIds(ids)).map((row) => [row.id, row]));
    const result = { messages: [] as WireMessage[], missing: [] as string[], unreadable: [] as string[] };
    for (const id of ids) {
      const row = byId.get(id);
      if (!row) {
        result.missing.push(id);
        continue;
      }
      try {
        result.messages.push(this.codec.open(row));
      } catch (error) {
        this.logger.error({ msg: 'a stored message could not be opened', messageId: id, err: error });
        result.unreadable.push(id);
      }
    }
    return result;
  }

  /** A page of a conversation, opened, ascending by seq (MessageStoreRepository.page). */
  async page(
    conversationId: string,
    range: { beforeSeq?: number; afterSeq?: number; limit: number },
  ): Promise<{ messages: WireMessage[]; hasMore: boolean }> {
    const page: StoredPage = await this.repository.page(conversationId, range);
    return { messages: page.messages.map((row) => this.codec.open(row)), hasMore: page.hasMore };
  }

  private async run(lane: number): Promise<void> {
    this.busy[lane] = true;
    try {
      while (this.lanes[lane].length > 0) await this.storeBatch(this.lanes[lane].splice(0, MAX_BATCH));
    } finally {
      this.busy[lane] = false;
    }
  }

  /** Stores one batch and settles every promise in it; never throws. */
  private async storeBatch(batch: Pending[]): Promise<void> {
    // The same sender and clientMsgId twice in one batch: store the first (the leader),
    // answer the others with what it came to.
    const leaders = new Map<string, Pending>();
    const followers: Pending[] = [];
    for (const pending of batch) {
      const key = resendKey(pending.message);
      if (leaders.has(key)) followers.push(pending);
      else leaders.set(key, pending);
    }
    const outcomes = new Map<string, StoreOutcome | { error: unknown }>();
    const settle = (pending: Pending, outcome: StoreOutcome | { error: unknown }) => {
      if (outcomes.has(resendKey(pending.message))) return;
      outcomes.set(resendKey(pending.message), outcome);
      if ('error' in outcome) pending.reject(outcome.error);
      else pending.resolve(outcome);
    };
    const settleAll = (settled: Settled) => {
      for (const { pending, row, previousAt } of settled.stored) {
        settle(pending, { kind: 'stored', message: this.codec.toWire(row, pending.content), previousAt });
      }
      for (const { pending, row } of settled.existing) settle(pending, this.duplicateOf(row));
    };

    // Split before the predicted path runs: a miss there forgets the head, and the
    // missed messages join the rest.
    const known = [...leaders.values()].filter((p) => this.heads.has(p.message.conversationId));
    const rest = [...leaders.values()].filter((p) => !this.heads.has(p.message.conversationId));
    try {
      if (known.length > 0) {
        const predicted = await this.storePredicted(known);
        settleAll(predicted);
        rest.push(...predicted.missed);
      }
      if (rest.length > 0) {
        const careful = await this.storeInTransaction(rest, [false, true]);
        if (careful) settleAll(careful);
        else for (const pending of rest) settle(pending, await this.storeAlone(pending));
      }
    } catch (error) {
      // What is settled stays settled (settle ignores a second outcome).
      for (const pending of leaders.values()) settle(pending, { error });
    }

    for (const follower of followers) {
      const outcome = outcomes.get(resendKey(follower.message));
      if (!outcome) follower.reject(new Error('a duplicate in the batch has no settled original'));
      else if ('error' in outcome) follower.reject(outcome.error);
      else follower.resolve({ kind: 'duplicate', message: outcome.message });
    }
  }

  /**
   * Step 1: seqs predicted from the heads this lane left (lanes own their
   * conversations, so on one instance the prediction holds), one statement, no
   * transaction. Conversations another writer moved come back in `missed`, their heads
   * forgotten; any error (a resend, a deadlock) sends all of them to the next step.
   */
  private async storePredicted(batch: readonly Pending[]): Promise<Settled & { missed: Pending[] }> {
    const counts = new Map<string, number>();
    const rows: (SealedRow & { ordinal: number; pending: Pending; key: ConversationKey })[] = [];
    for (const pending of batch) {
      const { message } = pending;
      const head = this.heads.get(message.conversationId) as Head;
      const ordinal = (counts.get(message.conversationId) ?? 0) + 1;
      counts.set(message.conversationId, ordinal);
      const seq = head.lastSeq + ordinal;
      const sealed = this.codec.seal(head.key, message.id, seq, pending.content);
      rows.push({ message, seq, ordinal, sealed, pending, key: head.key });
    }
    const heads = [...counts].map(([conversationId, count]) => ({
      conversationId,
      expected: this.heads.get(conversationId) as Head,
      count,
    }));
    let result: { createdAt: Map<string, Date>; missed: Set<string> };
    try {
      result = await this.repository.insertPredicted(rows, heads);
    } catch {
      // Nothing was stored; the transaction decides.
      for (const head of heads) this.heads.delete(head.conversationId);
      return { stored: [], existing: [], missed: [...batch] };
    }
    const settled: Settled & { missed: Pending[] } = { stored: [], existing: [], missed: [] };
    // Each message's predecessor: the head's last message, then the one before it here.
    const previous = new Map(heads.map((head) => [head.conversationId, head.expected.at]));
    for (const { pending, key, seq, sealed, message } of rows) {
      const createdAt = result.createdAt.get(message.id);
      if (!createdAt) {
        settled.missed.push(pending);
        continue;
      }
      const previousAt = previous.get(message.conversationId) as number;
      previous.set(message.conversationId, createdAt.getTime());
      settled.stored.push({ pending, row: { ...message, seq, ...sealed, createdAt, key }, previousAt });
    }
    for (const { conversationId, expected, count } of heads) {
      if (result.missed.has(conversationId)) this.heads.delete(conversationId);
      else {
        const at = previous.get(conversationId) as number;
        this.remember(conversationId, { lastSeq: expected.lastSeq + count, key: expected.key, at });
      }
    }
    return settled;
  }

  /**
   * Step 2: one transaction that locks each conversation first, once per entry of
   * `attempts` (whether it looks for resends first) until one does not clash: resends
   * are rare, so a batch looks for them only after meeting one. Null when every attempt
   * clashed.
   */
  private async storeInTransaction(batch: readonly Pending[], attempts: readonly boolean[]): Promise<Settled | null> {
    const byId = new Map(batch.map((pending) => [pending.message.id, pending]));
    const messages = batch.map((pending) => pending.message);
    for (const lookForResends of attempts) {
      let result;
      try {
        result = await this.repository.insertBatch(
          messages,
          (message, seq, key) => this.codec.seal(key, message.id, seq, (byId.get(message.id) as Pending).content),
          lookForResends,
        );
      } catch (error) {
        for (const message of messages) this.heads.delete(message.conversationId);
        throw error;
      }
      if (result.kind === 'clash') {
        for (const message of messages) this.heads.delete(message.conversationId);
        continue;
      }
      for (const [conversationId, head] of result.heads) this.remember(conversationId, head);
      const byKey = new Map(batch.map((pending) => [resendKey(pending.message), pending]));
      return {
        stored: result.stored.map(({ previousAt, ...row }) => ({
          pending: byId.get(row.id) as Pending,
          row,
          previousAt,
        })),
        existing: result.existing.map((row) => ({ pending: byKey.get(resendKey(row)) as Pending, row })),
      };
    }
    return null;
  }

  /**
   * Step 3: one message in a transaction of its own. A clash then can only be a
   * concurrent send of the same clientMsgId (one conversation cannot deadlock): the
   * answer is the message that won.
   */
  private async storeAlone(pending: Pending): Promise<StoreOutcome | { error: unknown }> {
    try {
      const settled = await this.storeInTransaction([pending], [true]);
      if (settled?.stored[0]) {
        const { row, previousAt } = settled.stored[0];
        return { kind: 'stored', message: this.codec.toWire(row, pending.content), previousAt };
      }
      if (settled?.existing[0]) return this.duplicateOf(settled.existing[0].row);
      const winner = await this.repository.findByClientMsgId(pending.message.senderId, pending.message.clientMsgId);
      if (!winner) return { error: new Error('clientMsgId clash without a stored message') };
      return this.duplicateOf(winner);
    } catch (error) {
      return { error };
    }
  }

  private duplicateOf(row: StoredMessage): StoreOutcome | { error: unknown } {
    try {
      return { kind: 'duplicate', message: this.codec.open(row) };
    } catch (error) {
      return { error };
    }
  }

  private remember(conversationId: string, head: Head): void {
    if (this.heads.size >= MAX_HEADS) this.heads.clear();
    this.heads.set(conversationId, head);
  }
}
