import { ClientError } from './errors.js';
import type { PageData, WireMessage } from './protocol.js';
import type { StorageWriter } from './storage-writer.js';

export interface InboxDeps {
  writer: StorageWriter;
  /** Whether a message was sent by this very device (the SDK never emits those: `send` resolved them). */
  isOwn(message: WireMessage): boolean;
  /** Runs the app's 'message' listeners; resolves once they returned or settled. */
  deliver(message: WireMessage): Promise<void> | undefined;
  /** A message dropped as a duplicate: acked even with autoAck off, since it was emitted once already and an unacked duplicate would keep the (cursor-less) drain from moving on. */
  ackDuplicate(messageId: string): void;
  /** A message was emitted and its listeners settled. */
  delivered(messageId: string): void;
  /** Fetches missing seqs (PROTOCOL.md `history`, `afterSeq` pages forward). */
  history(conversationId: string, afterSeq: number, limit: number): Promise<PageData>;
  /**
   * Whether this device's own sends into the conversation await their replies: replies of
   * pipelined sends may come back out of seq order, so a gap may be one of them.
   */
  sending(conversationId: string): boolean;
  /** How long a later seq waits for the missing one before asking `history`. */
  gapWaitMs: number;
  /** Delay before retrying a failed gap fetch, by failures in a row. */
  retryDelay(failures: number): number;
  onError(error: ClientError): void;
}

export interface InboxCounters {
  received: number;
  duplicatesDropped: number;
  gapsFilled: number;
}

/** How many gap waits a conversation's first own messages wait for an earlier seq (see release). */
const OWN_BASELINE_WAITS = 4;

export type Origin = 'live' | 'drain' | 'history' | 'own';

interface Held {
  message: WireMessage;
  origin: Origin;
  /** Called once the message was emitted and its listeners settled (with its id), or was not emitted. */
  settled: (emittedId?: string) => void;
}

interface Lane {
  id: string;
  /** The highest seq emitted (or sent by this device); undefined until the first one. */
  highWater: number | undefined;
  held: Map<number, Held>;
  gapTimer?: ReturnType<typeof setTimeout>;
  filling: boolean;
  fillFailures: number;
}

/**
 * The receiving side (SDK.md "Receiving"): whatever the source (live event, offline-queue
 * drain, history), each conversation's messages reach the app once per id and in strictly
 * increasing seq without gaps. A message ahead of the next expected seq is held; the
 * missing one usually arrives within moments (another server instance, or the drain) and
 * is otherwise fetched with `history` after `gapWaitMs`.
 *
 * "Once" holds across restarts because the high-water mark is durable before a message is
 * emitted: a crash between the two loses the emission, never repeats it.
 */
export class Inbox {
  readonly counters: InboxCounters = { received: 0, duplicatesDropped: 0, gapsFilled: 0 };
  private readonly lanes = new Map<string, Lane>();
  private synced = false;
  private closed = false;

  constructor(private readonly deps: InboxDeps) {}

  restore(highWater: Record<string, number>): void {
    for (const [conversationId, seq] of Object.entries(highWater)) this.laneOf(conversationId).highWater = seq;
  }

  /**
   * Takes messages in; resolves with the ids it emitted once each of them was emitted and
   * its listeners settled, or was dropped as a duplicate (the drain waits for this before
   * asking for the next page).
   */
  accept(messages: WireMessage[], origin: Origin): Promise<string[]> {
    const waits: Promise<string | undefined>[] = [];
    const touched = new Set<Lane>();
    for (const message of messages) {
      const own = origin === 'own' || this.deps.isOwn(message);
      const lane = this.laneOf(message.conversationId);
      if ((lane.highWater !== undefined && message.seq <= lane.highWater) || lane.held.has(message.seq)) {
        if (!own) {
          this.counters.duplicatesDropped++;
          if (origin !== 'history') this.deps.ackDuplicate(message.id);
        }
        continue;
      }
      waits.push(
        new Promise<string | undefined>((settled) =>
          lane.held.set(message.seq, { message, origin: own ? 'own' : origin, settled }),
        ),
      );
      touched.add(lane);
    }
    for (const lane of touched) this.release(lane);
    return Promise.all(waits).then((ids) => ids.filter((id): id is string => id !== undefined));
  }

  /** The offline queue is drained (false again while a new connection drains it). */
  setSynced(synced: boolean): void {
    this.synced = synced;
    if (!synced) return;
    for (const lane of this.lanes.values()) if (lane.held.size > 0) this.release(lane);
  }

  close(): void {
    this.closed = true;
    for (const lane of this.lanes.values()) {
      clearTimeout(lane.gapTimer);
      for (const held of lane.held.values()) held.settled();
      lane.held.clear();
    }
  }

  /** Emits what is now in order, then arranges for any gap left to be filled. */
  private release(lane: Lane): void {
    if (this.closed) return;
    if (lane.highWater === undefined) {
      // The first message of a conversation this device has not seen: older ones may still
      // be on their way in the drain (oldest first), so the baseline waits for it.
      const held = [...lane.held.values()];
      if (!this.synced && !held.some((h) => h.origin === 'drain')) return;
      // Nor is the reply to one of this device's own sends a baseline at once: it may
      // overtake an earlier seq that another instance stored and is still delivering live,
      // which would then fall below the mark and be dropped. Own messages (never emitted)
      // wait a while for a message from someone else.
      if (held.every((h) => h.origin === 'own')) return this.scheduleOwnBaseline(lane);
      lane.highWater = Math.min(...lane.held.keys()) - 1;
    }
    const batch: Held[] = [];
    let next = lane.highWater + 1;
    for (let held = lane.held.get(next); held; held = lane.held.get(++next)) {
      lane.held.delete(next);
      batch.push(held);
    }
    if (batch.length > 0) {
      lane.highWater = next - 1;
      this.emitInOrder(lane, batch);
    }
    if (lane.held.size > 0) {
      this.scheduleFill(lane);
    } else {
      clearTimeout(lane.gapTimer);
      lane.gapTimer = undefined;
    }
  }

  private emitInOrder(lane: Lane, batch: Held[]): void {
    // Batches are emitted in the order their marks become durable, which is the order they
    // were released in (the writer's batches complete in order).
    const durable = this.deps.writer.mark(lane.id, lane.highWater ?? 0);
    durable
      .catch((error: unknown) => {
        // Still emitted: not emitting would lose the message; only a restart could repeat it.
        this.deps.onError(ClientError.from(error, 'storage_error'));
      })
      .then(() => {
        for (const held of batch) this.emitOne(held);
      })
      .catch((error: unknown) => this.deps.onError(ClientError.from(error, 'internal')));
  }

  private emitOne(held: Held): void {
    if (held.origin === 'own' || this.closed) {
      held.settled();
      return;
    }
    this.counters.received++;
    if (held.origin === 'history') this.counters.gapsFilled++;
    const { message } = held;
    const listeners = this.deps.deliver(message);
    const done = () => {
      this.deps.delivered(message.id);
      held.settled(message.id);
    };
    if (listeners) void listeners.then(done);
    else done();
  }

  /**
   * Makes a lane holding only own messages take its baseline from them after
   * OWN_BASELINE_WAITS gap waits (longer than the service holds a live seq for an earlier
   * one), unless a message from someone else set it first; the held replies are then let go.
   */
  private scheduleOwnBaseline(lane: Lane): void {
    if (lane.gapTimer || lane.filling) return;
    lane.gapTimer = setTimeout(() => {
      lane.gapTimer = undefined;
      if (lane.highWater === undefined && lane.held.size > 0) lane.highWater = Math.min(...lane.held.keys()) - 1;
      if (lane.held.size > 0) this.release(lane);
    }, OWN_BASELINE_WAITS * this.deps.gapWaitMs);
  }

  private scheduleFill(lane: Lane): void {
    if (lane.gapTimer || lane.filling) return;
    lane.gapTimer = setTimeout(() => {
      lane.gapTimer = undefined;
      // While the drain runs, it is the likelier source of the missing seqs; only gaps
      // inside what it returned are filled before it ends.
      const fromDrain = [...lane.held.values()].some((held) => held.origin === 'drain');
      if ((!this.synced && !fromDrain) || this.deps.sending(lane.id)) return this.scheduleFill(lane);
      void this.fill(lane);
    }, this.deps.gapWaitMs);
  }

  private async fill(lane: Lane): Promise<void> {
    if (lane.filling || this.closed) return;
    lane.filling = true;
    try {
      while (lane.held.size > 0 && lane.highWater !== undefined && !lane.held.has(lane.highWater + 1)) {
        const after = lane.highWater;
        const firstHeld = Math.min(...lane.held.keys());
        const page = await this.deps.history(lane.id, after, Math.min(100, firstHeld - after - 1));
        // The gap may have closed (or moved) while the page was on its way: look again.
        if (lane.highWater !== after) continue;
        const missing = page.messages.filter((message) => message.seq > after && message.seq < firstHeld);
        if (missing.length === 0) {
          // The seqs are gone for this device (it cannot read them): move past them rather
          // than hold the conversation back for ever.
          this.skipTo(lane, firstHeld - 1);
        } else {
          await this.accept(missing, 'history');
        }
        lane.fillFailures = 0;
      }
    } catch (error) {
      const failure = ClientError.from(error, 'internal');
      if (failure.code === 'forbidden' || failure.code === 'not_found') {
        if (lane.held.size > 0) this.skipTo(lane, Math.min(...lane.held.keys()) - 1);
      } else {
        lane.filling = false;
        lane.gapTimer = setTimeout(() => {
          lane.gapTimer = undefined;
          void this.fill(lane);
        }, this.deps.retryDelay(lane.fillFailures++));
        return;
      }
    }
    lane.filling = false;
    if (lane.held.size > 0) this.release(lane);
  }

  private skipTo(lane: Lane, seq: number): void {
    // Never backwards: a lower mark would emit again what was emitted.
    if (lane.highWater !== undefined && seq <= lane.highWater) return;
    this.deps.onError(
      new ClientError('not_found', `messages ${(lane.highWater ?? 0) + 1}-${seq} of ${lane.id} could not be fetched`, {
        conversationId: lane.id,
      }),
    );
    lane.highWater = seq;
    this.release(lane);
  }

  private laneOf(conversationId: string): Lane {
    let lane = this.lanes.get(conversationId);
    if (!lane) {
      lane = { id: conversationId, highWater: undefined, held: new Map(), filling: false, fillFailures: 0 };
      this.lanes.set(conversationId, lane);
    }
    return lane;
  }
}
