import type { ClientError } from './errors.js';

/**
 * Batches acks: ids queued in one tick go out as one `ack` request (at most `maxBatch`
 * ids each). An ack that fails is not retried: the message stays in the device's queue,
 * comes back on the next drain, and is acked then as a duplicate.
 */
export class AckBatcher {
  private queued: string[] = [];
  private scheduled = false;
  private inFlight = new Set<Promise<void>>();

  constructor(
    private readonly sendAck: (messageIds: string[]) => Promise<unknown>,
    private readonly maxBatch: () => number,
    private readonly onError: (error: ClientError) => void,
  ) {}

  add(messageId: string): void {
    this.queued.push(messageId);
    if (this.scheduled) return;
    this.scheduled = true;
    queueMicrotask(() => this.flush());
  }

  /** Resolves once every ack queued so far has been answered (or has failed). */
  async settled(): Promise<void> {
    this.flush();
    while (this.inFlight.size > 0) await Promise.all(this.inFlight);
  }

  private flush(): void {
    this.scheduled = false;
    const size = Math.max(1, this.maxBatch());
    while (this.queued.length > 0) {
      const ids = this.queued.splice(0, size);
      const request: Promise<void> = this.sendAck(ids).then(
        () => undefined,
        (error: ClientError) => {
          if (error.code !== 'unavailable' && error.code !== 'timeout' && error.code !== 'closed') this.onError(error);
        },
      );
      this.inFlight.add(request);
      void request.finally(() => this.inFlight.delete(request));
    }
  }
}
