/**
 * Keeps one connection's sends into one conversation in the order they arrived, up to the
 * point where they join the store's queue (PROTOCOL.md section 2, "Sends keep their
 * order"). The slow part before it (the membership look-up, which may go to PostgreSQL)
 * still runs concurrently; only the hand-over waits for the earlier sends of the same key.
 */
export class ArrivalOrder {
  private readonly tails = new Map<string, Promise<void>>();

  /** Whether an earlier call with this key has not enqueued yet (a later one must wait its turn). */
  busy(key: string): boolean {
    return this.tails.has(key);
  }

  /**
   * Runs `prepare` at once, then `enqueue` (synchronous) once every earlier call with the
   * same key has enqueued or failed. Resolves with what `enqueue` returned.
   */
  async run<P, T>(key: string, prepare: () => Promise<P>, enqueue: (prepared: P) => T): Promise<T> {
    const previous = this.tails.get(key);
    let handedOver!: () => void;
    const mine = new Promise<void>((resolve) => (handedOver = resolve));
    this.tails.set(key, mine);
    try {
      const prepared = await prepare();
      if (previous) await previous;
      return enqueue(prepared);
    } finally {
      // A failed prepare still holds later sends until the earlier ones are in.
      const release = () => {
        handedOver();
        if (this.tails.get(key) === mine) this.tails.delete(key);
      };
      if (previous) void previous.then(release);
      else release();
    }
  }
}
