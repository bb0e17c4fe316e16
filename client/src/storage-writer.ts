import type { ClientStorage, StoredSend } from './storage/storage.js';

/**
 * The one way the SDK writes to its storage: changes made in the same tick go out as one
 * batch (one fsync for `fileStorage`), batches go out one at a time in order, and a later
 * change to the same entry replaces an earlier one still waiting (a delete after a put
 * cancels the put). Each caller learns when its own change is durable.
 */
export class StorageWriter {
  private puts = new Map<string, StoredSend>();
  private deletes = new Set<string>();
  private marks = new Map<string, number>();
  private reads: (() => Promise<void>)[] = [];
  private waiters: { resolve: () => void; reject: (error: unknown) => void }[] = [];
  private running = false;
  private idleWaiters: (() => void)[] = [];

  constructor(
    private readonly storage: ClientStorage,
    private readonly onError: (error: unknown) => void,
  ) {}

  /** Inserts or replaces an outbox entry; resolves once it is durable. */
  put(entry: StoredSend): Promise<void> {
    this.deletes.delete(entry.clientMsgId);
    this.puts.set(entry.clientMsgId, entry);
    return this.schedule();
  }

  /** Removes an outbox entry. A failure is reported, not thrown: the entry is resent later and answered as a duplicate. */
  delete(clientMsgId: string): void {
    this.puts.delete(clientMsgId);
    this.deletes.add(clientMsgId);
    this.schedule().catch(this.onError);
  }

  /** Raises a conversation's high-water mark; resolves once it is durable. */
  mark(conversationId: string, seq: number): Promise<void> {
    if (seq > (this.marks.get(conversationId) ?? -1)) this.marks.set(conversationId, seq);
    return this.schedule();
  }

  /** Runs `read` between batches, so that it sees every change made before the call. */
  read<T>(read: () => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.reads.push(() => read().then(resolve, reject));
      this.kick();
    });
  }

  /** Resolves once every change made so far has been attempted. */
  idle(): Promise<void> {
    if (!this.running) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private schedule(): Promise<void> {
    const done = new Promise<void>((resolve, reject) => this.waiters.push({ resolve, reject }));
    this.kick();
    return done;
  }

  private kick(): void {
    if (this.running) return;
    this.running = true;
    // A microtask later, so that every change of the current tick joins the batch.
    queueMicrotask(() => void this.drain());
  }

  private async drain(): Promise<void> {
    while (this.waiters.length > 0 || this.reads.length > 0) {
      const waiters = this.waiters;
      const deletes = [...this.deletes];
      const puts = [...this.puts.values()];
      const marks = Object.fromEntries(this.marks);
      const reads = this.reads;
      this.waiters = [];
      this.deletes = new Set();
      this.puts = new Map();
      this.marks = new Map();
      this.reads = [];
      try {
        // Deletes and puts never name the same entry (see put/delete), so their order is free.
        if (deletes.length > 0) await this.storage.deleteOutbox(deletes);
        if (puts.length > 0) await this.storage.putOutbox(puts);
        if (Object.keys(marks).length > 0) await this.storage.setHighWater(marks);
        for (const waiter of waiters) waiter.resolve();
      } catch (error) {
        for (const waiter of waiters) waiter.reject(error);
      }
      for (const read of reads) await read();
    }
    this.running = false;
    for (const resolve of this.idleWaiters.splice(0)) resolve();
  }
}
