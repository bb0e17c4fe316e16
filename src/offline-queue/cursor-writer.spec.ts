import { afterEach, describe, expect, it, vi } from 'vitest';

import { CursorWriter } from './cursor-writer.js';
import type { DeliveryCursor, DeliveryCursorsRepository } from './delivery-cursors.repository.js';

/** The repository's one statement, recorded; `failing` makes the next calls throw. */
class RecordedCursors {
  readonly writes: DeliveryCursor[][] = [];
  failing = 0;

  advance(cursors: readonly DeliveryCursor[]): Promise<void> {
    if (this.failing > 0) {
      this.failing--;
      // Fails a little later, as a lost connection would: acks may come in meanwhile.
      return new Promise((_, reject) => setTimeout(() => reject(new Error('connection refused')), 10));
    }
    this.writes.push([...cursors]);
    return Promise.resolve();
  }
}

function writer() {
  const cursors = new RecordedCursors();
  return { cursors, writer: new CursorWriter(cursors as unknown as DeliveryCursorsRepository) };
}

const at = (conversationId: string, ackedSeq: number) => ({ conversationId, ackedSeq });

describe('CursorWriter', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('writes the acks of one interval in one statement, keeping the highest seq per cursor', async () => {
    vi.useFakeTimers();
    const { cursors, writer: w } = writer();
    w.advance('u', 'phone', [at('c1', 3), at('c2', 1)]);
    w.advance('u', 'phone', [at('c1', 5)]);
    w.advance('u', 'phone', [at('c1', 4)]); // an older ack arriving late
    w.advance('v', 'laptop', [at('c1', 2)]);
    expect(cursors.writes).toEqual([]);
    await vi.advanceTimersByTimeAsync(60);
    expect(cursors.writes).toHaveLength(1);
    expect(cursors.writes[0]).toEqual(
      expect.arrayContaining([
        { userId: 'u', deviceId: 'phone', ...at('c1', 5) },
        { userId: 'u', deviceId: 'phone', ...at('c2', 1) },
        { userId: 'v', deviceId: 'laptop', ...at('c1', 2) },
      ]),
    );
    expect(cursors.writes[0]).toHaveLength(3);
  });

  it('keeps a failed batch for a retry, merged with newer acks and never moving back', async () => {
    vi.useFakeTimers();
    const { cursors, writer: w } = writer();
    cursors.failing = 1;
    w.advance('u', 'phone', [at('c1', 5), at('c2', 7)]);
    await vi.advanceTimersByTimeAsync(55);
    // While that write is in flight (and about to fail): newer for c1, older for c2.
    w.advance('u', 'phone', [at('c1', 9), at('c2', 6)]);
    await vi.advanceTimersByTimeAsync(10);
    expect(cursors.writes).toEqual([]);
    await vi.advanceTimersByTimeAsync(1_100);
    expect(cursors.writes).toHaveLength(1);
    expect(cursors.writes[0]).toEqual(
      expect.arrayContaining([
        { userId: 'u', deviceId: 'phone', ...at('c1', 9) },
        { userId: 'u', deviceId: 'phone', ...at('c2', 7) },
      ]),
    );
    expect(cursors.writes[0]).toHaveLength(2);
  });

  it('writes at once when many cursors are pending', async () => {
    const { cursors, writer: w } = writer();
    for (let i = 0; i < 2_000; i++) w.advance('u', `d${i}`, [at('c', 1)]);
    await vi.waitFor(() => expect(cursors.writes).toHaveLength(1));
    expect(cursors.writes[0]).toHaveLength(2_000);
  });

  it('flushes what is pending at shutdown', async () => {
    const { cursors, writer: w } = writer();
    w.advance('u', 'phone', [at('c1', 2)]);
    await w.onApplicationShutdown();
    expect(cursors.writes).toEqual([[{ userId: 'u', deviceId: 'phone', ...at('c1', 2) }]]);
  });
});
