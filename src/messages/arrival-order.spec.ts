import { describe, expect, it } from 'vitest';

import { ArrivalOrder } from './arrival-order.js';

const later = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

describe('ArrivalOrder', () => {
  it('enqueues in call order per key even when the preparations finish in reverse', async () => {
    const order = new ArrivalOrder();
    const enqueued: number[] = [];
    await Promise.all(
      [0, 1, 2, 3, 4].map((i) =>
        order.run(
          'socket-1\nconversation',
          () => later(25 - i * 5),
          () => enqueued.push(i),
        ),
      ),
    );
    expect(enqueued).toEqual([0, 1, 2, 3, 4]);
  });

  it('keeps the order past a failed preparation, which fails alone', async () => {
    const order = new ArrivalOrder();
    const enqueued: number[] = [];
    const results = await Promise.allSettled(
      [0, 1, 2].map((i) =>
        order.run(
          'k',
          async () => {
            await later(i === 0 ? 20 : 1);
            if (i === 1) throw new Error('not a member');
          },
          () => enqueued.push(i),
        ),
      ),
    );
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect(enqueued).toEqual([0, 2]);
  });

  it('does not hold one key back for another', async () => {
    const order = new ArrivalOrder();
    const enqueued: string[] = [];
    const slow = order.run(
      'a',
      () => later(30),
      () => enqueued.push('a'),
    );
    await order.run(
      'b',
      () => later(1),
      () => enqueued.push('b'),
    );
    expect(enqueued).toEqual(['b']);
    await slow;
    expect(enqueued).toEqual(['b', 'a']);
  });

  it('forgets a key once its last call enqueued', async () => {
    const order = new ArrivalOrder();
    await order.run(
      'k',
      () => later(1),
      () => undefined,
    );
    await later(1);
    expect((order as unknown as { tails: Map<string, unknown> }).tails.size).toBe(0);
  });
});
