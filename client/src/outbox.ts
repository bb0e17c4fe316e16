import { ClientError, PERMANENT_SEND_ERRORS } from './errors.js';
import type { Reply, SendData, SendPayload, WireMessage } from './protocol.js';
import type { StorageWriter } from './storage-writer.js';
import type { StoredSend } from './storage/storage.js';

export interface OutboxDeps {
  writer: StorageWriter;
  /** Puts a send on the current socket, or returns false when there is none. `reply` is called at most once. */
  transmit(payload: SendPayload, reply: (reply: Reply<SendData>) => void): boolean;
  /** Whether a socket is up (a send persisted while it is will go out at once). */
  connected(): boolean;
  sendTimeoutMs: number;
  /** Delay before retrying after the n-th transient failure in a row (n from 0): the reconnect backoff. */
  retryDelay(failures: number): number;
  /** Each stored own message, so the receiving side counts its seq as seen. */
  onStored(message: WireMessage): void;
  onError(error: ClientError): void;
  /**
   * e2e entries (`entry.e2e`, option `e2e: true`): encrypts the entry's body for the
   * conversation's current devices under a fresh message key. Resolves with what to send,
   * or with undefined when the conversation turns out not to be e2e (the body goes as
   * is). Rejects with a ClientError: a permanent code rejects the send, any other is
   * retried after the backoff.
   */
  seal?(entry: StoredSend): Promise<{ ciphertext: string; recipientDevices: string[] } | undefined>;
  /**
   * An e2e send was refused with `devices_changed`: refreshes what `seal` works from
   * (the users named in `details.missing`/`extra`, and the member list) before the
   * conversation's entries are sealed again.
   */
  devicesChanged?(entry: StoredSend, details: Record<string, unknown> | undefined): Promise<void>;
}

export interface OutboxCounters {
  sent: number;
  resent: number;
}

/** Most sends of one conversation on the wire at once; the rest wait for replies. */
const MAX_IN_FLIGHT_PER_CONVERSATION = 256;
/** `devices_changed` replies in a row one e2e send takes (each sealed again) before it is rejected. */
export const MAX_RESEALS = 5;

interface Pending {
  entry: StoredSend;
  /** False until the entry is durable in the storage: nothing goes on the wire before. */
  persisted: boolean;
  /** Written with attempts: 1 because it was to go out right after the write (see send). */
  precounted: boolean;
  /** Token of the attempt on the wire; 0 when not on the wire. */
  attempt: number;
  /** Transient failures in a row (backoff). */
  failures: number;
  /** `devices_changed` replies so far (e2e). */
  reseals: number;
  timer?: ReturnType<typeof setTimeout>;
  settle?: { resolve(message: WireMessage): void; reject(error: ClientError): void };
  done: boolean;
}

interface Lane {
  items: Pending[];
  inFlight: number;
  pausedUntil: number;
  pauseTimer?: ReturnType<typeof setTimeout>;
  /** An e2e entry is being sealed: the lane waits for it (order). */
  sealing: boolean;
  /** After `devices_changed`: the key refresh the lane waits for before sealing again. */
  refreshing: number;
  /** Bumped by each `devices_changed`: a seal begun before it used the stale keys. */
  sealEpoch: number;
}

/**
 * The sending side (SDK.md "Sending"): each send is written to the storage before it goes
 * on the wire, pipelined per conversation in call order, resent with the same
 * `clientMsgId` after a timeout, a transient error, a reconnect or a restart, and removed
 * once a reply says it is stored. After a resend the whole tail of the conversation goes
 * again in its original order, so a retried send never overtakes the ones after it.
 */
export class Outbox {
  readonly counters: OutboxCounters = { sent: 0, resent: 0 };
  private readonly lanes = new Map<string, Lane>();
  private readonly byId = new Map<string, Pending>();
  private nextOrder = 1;
  private nextAttempt = 1;
  /** Until when the socket's request rate is spent (a `rate_limited` reply's retryAfterMs). */
  private rateLimitedUntil = 0;
  private closed = false;

  constructor(private readonly deps: OutboxDeps) {}

  /** Takes back what a previous client on the same storage left unsent. */
  restore(entries: StoredSend[]): void {
    for (const entry of [...entries].sort((a, b) => a.order - b.order)) {
      if (this.byId.has(entry.clientMsgId)) continue;
      this.nextOrder = Math.max(this.nextOrder, entry.order + 1);
      this.add({ entry, persisted: true, precounted: false, attempt: 0, failures: 0, reseals: 0, done: false });
    }
  }

  get depth(): number {
    return this.byId.size;
  }

  /** Whether sends of this conversation still wait for their reply (whose seqs may fill a gap). */
  sending(conversationId: string): boolean {
    return this.lanes.has(conversationId);
  }

  send(entry: Omit<StoredSend, 'order' | 'attempts' | 'createdAt'>): Promise<WireMessage> {
    if (this.closed) return Promise.reject(new ClientError('closed', 'the client is closed'));
    const existing = this.byId.get(entry.clientMsgId);
    if (existing) return this.promiseOf(existing);
    // Counted as on the wire already when it will go out right after the write, which
    // spares a second write only to say so.
    const attempts = this.deps.connected() ? 1 : 0;
    const pending: Pending = {
      entry: { ...entry, order: this.nextOrder++, createdAt: new Date().toISOString(), attempts },
      persisted: false,
      precounted: attempts === 1,
      attempt: 0,
      failures: 0,
      reseals: 0,
      done: false,
    };
    const result = this.promiseOf(pending);
    this.add(pending);
    this.deps.writer.put({ ...pending.entry }).then(
      () => {
        pending.persisted = true;
        this.pump(this.laneOf(pending));
      },
      (error: unknown) =>
        this.finish(pending, undefined, ClientError.from(error, 'storage_error'), /* keepInStorage */ true),
    );
    return result;
  }

  /** Sends whatever can go: called when a socket comes up. */
  pumpAll(): void {
    for (const lane of this.lanes.values()) this.pump(lane);
  }

  /** The socket went away: nothing is on the wire any more; everything goes again on the next one. */
  disconnected(): void {
    for (const lane of this.lanes.values()) {
      lane.inFlight = 0;
      for (const pending of lane.items) this.offWire(pending);
    }
  }

  /** Stops: pending sends stay in the storage for the next client; their promises reject. */
  close(): void {
    this.closed = true;
    for (const lane of this.lanes.values()) clearTimeout(lane.pauseTimer);
    for (const pending of [...this.byId.values()]) {
      this.offWire(pending);
      pending.done = true;
      pending.settle?.reject(
        new ClientError('closed', 'the client closed before the send was stored; it stays in the outbox'),
      );
    }
    this.byId.clear();
    this.lanes.clear();
  }

  private add(pending: Pending): void {
    this.byId.set(pending.entry.clientMsgId, pending);
    this.laneOf(pending).items.push(pending);
  }

  private promiseOf(pending: Pending): Promise<WireMessage> {
    return new Promise<WireMessage>((resolve, reject) => {
      const previous = pending.settle;
      pending.settle = {
        resolve: (message) => {
          previous?.resolve(message);
          resolve(message);
        },
        reject: (error) => {
          previous?.reject(error);
          reject(error);
        },
      };
    });
  }

  private laneOf(pending: Pending): Lane {
    const id = pending.entry.conversationId;
    let lane = this.lanes.get(id);
    if (!lane)
      this.lanes.set(
        id,
        (lane = { items: [], inFlight: 0, pausedUntil: 0, sealing: false, refreshing: 0, sealEpoch: 0 }),
      );
    return lane;
  }

  private pump(lane: Lane): void {
    if (this.closed || !this.deps.connected() || lane.sealing || lane.refreshing > 0) return;
    const wait = Math.max(lane.pausedUntil, this.rateLimitedUntil) - Date.now();
    if (wait > 0) {
      lane.pauseTimer ??= setTimeout(() => {
        lane.pauseTimer = undefined;
        this.pump(lane);
      }, wait);
      return;
    }
    for (const pending of lane.items) {
      // Order: nothing overtakes an entry that is not durable yet.
      if (!pending.persisted) return;
      if (pending.attempt !== 0) continue;
      if (lane.inFlight >= MAX_IN_FLIGHT_PER_CONVERSATION) return;
      if (needsSeal(pending.entry)) return this.seal(lane, pending);
      if (!this.transmit(lane, pending)) return;
    }
  }

  /** Encrypts an e2e entry (asynchronously: the keys may need fetching); the lane waits. */
  private seal(lane: Lane, pending: Pending): void {
    if (!this.deps.seal) {
      this.finish(pending, undefined, new ClientError('bad_request', 'an e2e entry needs a client with e2e: true'));
      return;
    }
    lane.sealing = true;
    const { entry } = pending;
    const epoch = lane.sealEpoch;
    this.deps.seal(entry).then(
      (sealed) => {
        lane.sealing = false;
        if (pending.done || this.closed) return;
        // devices_changed came back meanwhile: sealed from stale keys, so sealed again.
        if (epoch !== lane.sealEpoch) return this.pump(lane);
        if (sealed) {
          entry.ciphertext = sealed.ciphertext;
          entry.recipientDevices = sealed.recipientDevices;
        } else {
          entry.e2e = false;
        }
        // What goes on the wire is kept with the entry; a resend after a crash that reseals
        // instead is answered as a duplicate all the same.
        this.deps.writer
          .put({ ...entry })
          .catch((error: unknown) => this.deps.onError(ClientError.from(error, 'storage_error')));
        this.pump(lane);
      },
      (error: unknown) => {
        lane.sealing = false;
        if (pending.done || this.closed) return;
        const failure = ClientError.from(error, 'internal');
        if (PERMANENT_SEND_ERRORS.has(failure.code)) return this.finish(pending, undefined, failure);
        this.deps.onError(failure);
        lane.pausedUntil = Math.max(lane.pausedUntil, Date.now() + this.deps.retryDelay(pending.failures++));
        this.pump(lane);
      },
    );
  }

  private transmit(lane: Lane, pending: Pending): boolean {
    const { entry } = pending;
    const attempt = this.nextAttempt++;
    const payload: SendPayload = { conversationId: entry.conversationId, clientMsgId: entry.clientMsgId };
    if (entry.body !== undefined) payload.body = entry.body;
    if (entry.ciphertext !== undefined) payload.ciphertext = entry.ciphertext;
    if (entry.e2e) {
      // The plaintext stays on this device.
      delete payload.body;
      payload.recipientDevices = entry.recipientDevices ?? [];
    }
    if (entry.contentType !== undefined) payload.contentType = entry.contentType;
    if (!this.deps.transmit(payload, (reply) => this.onReply(pending, attempt, reply))) return false;
    pending.attempt = attempt;
    lane.inFlight++;
    pending.timer = setTimeout(() => this.onTimeout(pending, attempt), this.deps.sendTimeoutMs);
    if (pending.precounted) {
      pending.precounted = false;
      this.counters.sent++;
      return true;
    }
    entry.attempts++;
    if (entry.attempts === 1) this.counters.sent++;
    else this.counters.resent++;
    // Attempts are informational (client.outbox()): this write is not waited for.
    this.deps.writer
      .put({ ...entry })
      .catch((error: unknown) => this.deps.onError(ClientError.from(error, 'storage_error')));
    return true;
  }

  private onReply(pending: Pending, attempt: number, reply: Reply<SendData>): void {
    if (pending.done) return;
    if (reply.ok) {
      this.finish(pending, reply.data.message);
      return;
    }
    const { code, message, details } = reply.error;
    if (code === 'devices_changed' && pending.entry.e2e && this.deps.devicesChanged) {
      if (pending.attempt !== attempt) return;
      if (++pending.reseals > MAX_RESEALS) {
        this.finish(pending, undefined, new ClientError(code, message, details));
        return;
      }
      this.resealFrom(pending, details);
      return;
    }
    if (PERMANENT_SEND_ERRORS.has(code)) {
      this.finish(pending, undefined, new ClientError(code, message, details));
      return;
    }
    // A transient failure of an attempt since replaced: the newer attempt decides.
    if (pending.attempt !== attempt) return;
    const lane = this.laneOf(pending);
    if (code === 'rate_limited') {
      // The limit is the socket's: every conversation waits, not only this one.
      const until = Date.now() + Number(details?.retryAfterMs ?? 1000);
      this.rateLimitedUntil = Math.max(this.rateLimitedUntil, until);
    } else {
      lane.pausedUntil = Math.max(lane.pausedUntil, Date.now() + this.deps.retryDelay(pending.failures++));
    }
    this.requeueFrom(lane, pending);
    this.pump(lane);
  }

  /**
   * `devices_changed`: the entry and every later one of its conversation (sealed to the
   * same stale devices) come off the wire, the keys are refreshed, and they are sealed
   * again with fresh message keys and resent in their original order, same clientMsgIds.
   */
  private resealFrom(pending: Pending, details: Record<string, unknown> | undefined): void {
    const lane = this.laneOf(pending);
    lane.sealEpoch++;
    this.requeueFrom(lane, pending);
    for (const later of lane.items.slice(lane.items.indexOf(pending))) {
      if (!later.entry.e2e) continue;
      delete later.entry.ciphertext;
      delete later.entry.recipientDevices;
    }
    lane.refreshing++;
    this.deps.devicesChanged!({ ...pending.entry }, details)
      .catch((error: unknown) => {
        // Sealed again from what is cached: the server answers devices_changed again if
        // it is still stale, which counts towards MAX_RESEALS.
        this.deps.onError(ClientError.from(error, 'internal'));
      })
      .finally(() => {
        lane.refreshing--;
        this.pump(lane);
      });
  }

  /** No reply in time: like a transient error, the tail goes again after the backoff. */
  private onTimeout(pending: Pending, attempt: number): void {
    if (pending.done || pending.attempt !== attempt) return;
    const lane = this.laneOf(pending);
    lane.pausedUntil = Math.max(lane.pausedUntil, Date.now() + this.deps.retryDelay(pending.failures++));
    this.requeueFrom(lane, pending);
    this.pump(lane);
  }

  /** Takes `pending` and every later entry of its conversation off the wire, to go again in order. */
  private requeueFrom(lane: Lane, pending: Pending): void {
    const start = lane.items.indexOf(pending);
    if (start < 0) return;
    for (const later of lane.items.slice(start)) {
      if (later.attempt !== 0) lane.inFlight--;
      this.offWire(later);
    }
  }

  private offWire(pending: Pending): void {
    clearTimeout(pending.timer);
    pending.timer = undefined;
    pending.attempt = 0;
  }

  private finish(pending: Pending, message?: WireMessage, error?: ClientError, keepInStorage = false): void {
    if (pending.done) return;
    if (pending.attempt !== 0) this.laneOf(pending).inFlight--;
    this.offWire(pending);
    pending.done = true;
    this.byId.delete(pending.entry.clientMsgId);
    const lane = this.laneOf(pending);
    lane.items.splice(lane.items.indexOf(pending), 1);
    if (!keepInStorage) this.deps.writer.delete(pending.entry.clientMsgId);
    if (message) {
      this.deps.onStored(message);
      pending.settle?.resolve(message);
    } else {
      pending.settle?.reject(error ?? new ClientError('internal', 'send failed'));
    }
    if (lane.items.length === 0) {
      clearTimeout(lane.pauseTimer);
      this.lanes.delete(pending.entry.conversationId);
    } else {
      this.pump(lane);
    }
  }
}

/** An e2e entry whose body is not (or no longer) sealed for the current devices. */
function needsSeal(entry: StoredSend): boolean {
  return entry.e2e === true && entry.ciphertext === undefined;
}
