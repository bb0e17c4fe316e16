import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

import { backoffDelay } from './backoff.js';

const options = { minDelayMs: 500, maxDelayMs: 20_000 };
/** The largest double below 1: what Math.random() can return at most. */
const almostOne = () => 1 - Number.EPSILON / 2;

describe('backoffDelay (full jitter)', () => {
  it('is 0 when the random draw is 0, whatever the attempt', () => {
    for (const attempt of [0, 1, 2, 5, 10, 60, 1000]) {
      expect(backoffDelay(attempt, options, () => 0)).toBe(0);
    }
  });

  it('approaches min(maxDelayMs, minDelayMs * 2^attempt) from below as the draw approaches 1', () => {
    const expected: [number, number][] = [
      [0, 500],
      [1, 1000],
      [2, 2000],
      [3, 4000],
      [5, 16_000],
      [6, 20_000],
      [7, 20_000],
    ];
    for (const [attempt, ceiling] of expected) {
      const delay = backoffDelay(attempt, options, almostOne);
      expect(delay, `attempt ${attempt}`).toBeLessThan(ceiling);
      expect(delay, `attempt ${attempt}`).toBeGreaterThanOrEqual(ceiling - 1);
    }
  });

  it('counts attempts from 0: the first retry draws from [0, minDelayMs)', () => {
    expect(backoffDelay(0, options, () => 0.5)).toBe(250);
    expect(backoffDelay(1, options, () => 0.5)).toBe(500);
    // A negative attempt is treated as the first one, not as a smaller window.
    expect(backoffDelay(-3, options, () => 0.5)).toBe(250);
  });

  it('never goes above maxDelayMs, even for huge attempts', () => {
    for (const attempt of [30, 60, 1000, 5000]) {
      const delay = backoffDelay(attempt, options, almostOne);
      expect(Number.isFinite(delay), `attempt ${attempt}`).toBe(true);
      expect(delay, `attempt ${attempt}`).toBeLessThanOrEqual(options.maxDelayMs);
      expect(delay, `attempt ${attempt}`).toBeGreaterThanOrEqual(options.maxDelayMs - 1);
    }
  });

  it('draws a whole number of ms within [0, ceiling) for any attempt and draw', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 2000 }),
        fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
        fc.integer({ min: 1, max: 5000 }),
        fc.integer({ min: 1, max: 100_000 }),
        (attempt, draw, minDelayMs, extra) => {
          const bounds = { minDelayMs, maxDelayMs: minDelayMs + extra };
          const delay = backoffDelay(attempt, bounds, () => draw);
          const ceiling = Math.min(bounds.maxDelayMs, minDelayMs * 2 ** attempt);
          expect(Number.isInteger(delay)).toBe(true);
          expect(delay).toBeGreaterThanOrEqual(0);
          expect(delay).toBeLessThan(ceiling);
        },
      ),
    );
  });

  it('uses Math.random by default', () => {
    const delays = Array.from({ length: 200 }, () => backoffDelay(3, options));
    expect(delays.every((delay) => delay >= 0 && delay < 4000)).toBe(true);
    // Jitter: 200 draws are not all the same.
    expect(new Set(delays).size).toBeGreaterThan(1);
  });
});
