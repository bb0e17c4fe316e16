import { LRUCache } from 'lru-cache';

import type { WireMessage } from '@messaging-service/client/protocol';

/** A live message on its way to this instance's sockets. */
export interface LiveItem {
  message: WireMessage;
  /** Whose sockets receive it (user rooms). */
  userIds: readonly string[];
  /**
   * When the conversation's previous message was committed (ms, database clock); null
   * for a message that needs no wait (read back from storage into a known gap).
   */
  previousAt: number | null;
}

/** What happened to an item or a gap, for metrics. */
export type MergeEvent = 'held' | 'filled' | 'skipped' | 'late';

export interface SeqMergeOptions {
  /** Sends one item to this instance's sockets. Called in seq order per conversation. */
  emit(item: LiveItem): void;
  /**
   * The stored messages with `afterSeq < seq < beforeSeq`, ascending, as items (the
   * gap a lost or slow publish left). May return fewer, or reject: the gap is skipped.
   */
  fill(conversationId: string, afterSeq: number, beforeSeq: number): Promise<LiveItem[]>;
  /** How long a later seq waits for an earlier one before the gap is read from storage. */
  holdMs: number;
  observe?(event: MergeEvent, count: number): void;
  now?: () => number;
}

/** At most this many messages of one gap are read back; older ones go by the queue. */
const MAX_FILL = 200;

// Loops, not Math.min(...keys): a line may hold more items than a call takes arguments.
function lowestOf(pending: Map<number, LiveItem>): number {
  let lowest = Infinity;
  for (const seq of pending.keys()) if (seq < lowest) lowest = seq;
  return lowest;
}

function highestOf(pending: Map<number, LiveItem>): number {
  let highest = -Infinity;
  for (const seq of pending.keys()) if (seq > highest) highest = seq;
  return highest;
}

/** A conversation with items waiting for an earlier seq. */
interface Line {
  conversationId: string;
  /** The seq to emit next; null until the first one this instance sees is settled. */
  next: number | null;
  pending: Map<number, LiveItem>;
  /** The highest seq known to be stored (`expectStored`), 0 if none: waited for like a pending one. */
  tip: number;
  /** When waiting gives up: the baseline is taken, or the gap is read back. */
  deadline: number;
  timer?: NodeJS.Timeout;
  filling: boolean;
}

/**
 * Puts the live messages of each conversation into seq order on this instance, whatever
 * order they arrive in from the instances that stored them. Every socket here then
 * receives each conversation's messages in strictly increasing seq, because every emit
 * to it comes from this one ordered stream.
 *
 * - The next expected seq goes out at once, with any later ones it unblocks.
 * - A later seq waits for the missing ones up to `holdMs`; then the gap is read from
 *   storage (every seq below a stored one is committed: seqs are assigned under the
 *   conversation's lock) and emitted in order. A lower seq arriving after that is `late`
 *   and dropped here: it already went out, or its devices have it in their queues.
 * - A seq known to be stored without its message (`expectStored`: another instance's
 *   summary of what it published) is waited for like a later seq, then read back: so a
 *   lost last message of a burst still goes out, without a later one to reveal the gap.
 * - The first seq of a conversation seen here (or seen again after it went idle) has no
 *   known predecessor. If that predecessor was committed `holdMs` or more before this
 *   one, it went out long before and this one is next; if less, it may still be in
 *   flight from another instance, so this one waits for it for what is left of `holdMs`.
 */
export class SeqMerge {
  private readonly lines = new Map<string, Line>();
  /** The next seq of conversations with nothing waiting, kept while they are active. */
  private readonly idle = new LRUCache<string, number>({ max: 50_000, ttl: 10 * 60_000 });
  private readonly now: () => number;

  constructor(private readonly options: SeqMergeOptions) {
    this.now = options.now ?? (() => Date.now());
  }

  accept(item: LiveItem): void {
    const { conversationId, seq } = item.message;
    let line = this.lines.get(conversationId);
    if (!line) {
      const next = this.idle.get(conversationId) ?? this.baselineOf(item);
      if (next !== null && seq < next) return this.observe('late', 1);
      if (next === seq) {
        this.send(item);
        this.idle.set(conversationId, seq + 1);
        return;
      }
      line = {
        conversationId,
        next,
        pending: new Map(),
        tip: 0,
        deadline: this.deadlineOf(item, next),
        filling: false,
      };
      this.lines.set(conversationId, line);
      this.idle.delete(conversationId);
      this.observe('held', 1);
    } else if ((line.next !== null && seq < line.next) || line.pending.has(seq)) {
      return this.observe('late', 1);
    }
    line.pending.set(seq, item);
    this.advance(line);
  }

  /**
   * `seq` of the conversation is stored: if it has not gone out here, it is awaited for
   * `holdMs` (its live copy may still be on its way), then read back with whatever it
   * is missing. `knownOnly`: ignore it for a conversation this instance has no place in
   * (one that just started listens to summaries of what went out before it listened).
   */
  expectStored(conversationId: string, seq: number, knownOnly = false): void {
    let line = this.lines.get(conversationId);
    if (!line) {
      const next = this.idle.get(conversationId) ?? null;
      if ((next === null && knownOnly) || (next !== null && seq < next)) return;
      line = {
        conversationId,
        next,
        pending: new Map(),
        tip: 0,
        deadline: this.now() + this.options.holdMs,
        filling: false,
      };
      this.lines.set(conversationId, line);
      this.idle.delete(conversationId);
    } else if (line.next !== null && seq < line.next) {
      return;
    }
    if (seq <= line.tip) return;
    line.tip = seq;
    this.advance(line);
  }

  /** Items waiting for an earlier seq, over all conversations. */
  get waiting(): number {
    let count = 0;
    for (const line of this.lines.values()) count += line.pending.size;
    return count;
  }

  /**
   * The seq this item may go out as the first of its conversation, or null: wait. Both
   * times compared are the database's (the item's commit and its predecessor's), so the
   * clocks of instances and database need not agree.
   */
  private baselineOf(item: LiveItem): number | null {
    const { seq } = item.message;
    return seq === 1 || this.waitFor(item) === 0 ? seq : null;
  }

  /** How much longer than its arrival a first sight waits for its predecessor. */
  private waitFor(item: LiveItem): number {
    if (item.previousAt === null) return 0;
    const apart = Date.parse(item.message.createdAt) - item.previousAt;
    return Math.max(0, this.options.holdMs - Math.max(0, apart));
  }

  private deadlineOf(item: LiveItem, next: number | null): number {
    return this.now() + (next === null ? this.waitFor(item) : this.options.holdMs);
  }

  private advance(line: Line): void {
    if (line.next === null && line.pending.size > 0) {
      const lowest = lowestOf(line.pending);
      const baseline = this.baselineOf(line.pending.get(lowest) as LiveItem);
      if (baseline !== null) line.next = baseline;
    }
    let sent = 0;
    if (line.next !== null) {
      let item: LiveItem | undefined;
      while ((item = line.pending.get(line.next))) {
        line.pending.delete(line.next);
        this.send(item);
        line.next += 1;
        sent += 1;
      }
    }
    if (line.pending.size === 0 && line.next !== null && line.next > line.tip) {
      clearTimeout(line.timer);
      this.lines.delete(line.conversationId);
      if (line.next !== null) this.idle.set(line.conversationId, line.next);
      return;
    }
    if (line.filling) return;
    // Progress restarts the wait for what is still missing.
    if (sent > 0) line.deadline = this.now() + this.options.holdMs;
    clearTimeout(line.timer);
    line.timer = setTimeout(() => this.expire(line), Math.max(0, line.deadline - this.now()));
    line.timer.unref();
  }

  /** Waiting gave up: take the lowest as the first, or read the gap back from storage. */
  private expire(line: Line): void {
    line.timer = undefined;
    if (this.lines.get(line.conversationId) !== line) return;
    if (line.next === null) {
      // Nothing known here before the tip: it is the first (what came before went out
      // before this instance listened, or is in the devices' queues).
      line.next = line.pending.size > 0 ? lowestOf(line.pending) : line.tip;
      if (line.pending.has(line.next)) return this.advance(line);
    }
    // Every gap up to the highest waiting seq (or the tip, itself included) in one read:
    // all of it is committed, and what is still in flight would only arrive later than
    // storage answers.
    const upTo = Math.max(highestOf(line.pending), line.tip + 1);
    const after = Math.max(line.next - 1, upTo - 1 - MAX_FILL);
    line.filling = true;
    this.options.fill(line.conversationId, after, upTo).then(
      (items) => this.filled(line, items, upTo),
      () => this.filled(line, [], upTo),
    );
  }

  private filled(line: Line, items: readonly LiveItem[], upTo: number): void {
    line.filling = false;
    if (this.lines.get(line.conversationId) !== line || line.next === null) return;
    let found = 0;
    for (const item of items) {
      const { seq } = item.message;
      if (seq >= line.next && seq < upTo && !line.pending.has(seq)) {
        line.pending.set(seq, item);
        found += 1;
      }
    }
    if (found > 0) this.observe('filled', found);
    // What storage did not give (an error, or a gap over MAX_FILL) is skipped: those
    // devices have the messages in their queues.
    const seqs = [...line.pending.keys()].filter((seq) => seq < upTo).sort((a, b) => a - b);
    for (const seq of seqs) {
      if (seq > line.next) this.observe('skipped', seq - line.next);
      this.send(line.pending.get(seq) as LiveItem);
      line.pending.delete(seq);
      line.next = seq + 1;
    }
    if (line.next < upTo) {
      this.observe('skipped', upTo - line.next);
      line.next = upTo;
    }
    this.advance(line);
  }

  private send(item: LiveItem): void {
    try {
      this.options.emit(item);
    } catch {
      // A socket gone mid-emit must not stop the conversation's line.
    }
  }

  private observe(event: MergeEvent, count: number): void {
    this.options.observe?.(event, count);
  }
}
