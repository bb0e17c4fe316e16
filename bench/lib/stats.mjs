// Small statistics helpers shared by the load workers and the orchestrator.
import { performance } from 'node:perf_hooks';

/** Milliseconds on a clock every process of this machine shares (sub-millisecond precision). */
export function clock() {
  return performance.timeOrigin + performance.now();
}

/** Nearest-rank percentile of an ascending array. */
export function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))];
}

/** count, mean and the usual percentiles (ms) of a list of samples. */
export function summarize(samples) {
  const sorted = Float64Array.from(samples).sort();
  if (sorted.length === 0) return { count: 0, min: null, p50: null, p95: null, p99: null, max: null, mean: null };
  let sum = 0;
  for (const value of sorted) sum += value;
  const round = (value) => Math.round(value * 1000) / 1000;
  return {
    count: sorted.length,
    min: round(sorted[0]),
    p50: round(percentile(sorted, 50)),
    p95: round(percentile(sorted, 95)),
    p99: round(percentile(sorted, 99)),
    max: round(sorted[sorted.length - 1]),
    mean: round(sum / sorted.length),
  };
}

/**
 * A uniform random sample of at most `capacity` values out of any number offered
 * (Algorithm R): percentiles of the sample estimate those of the whole stream.
 */
export class Reservoir {
  constructor(capacity) {
    this.capacity = capacity;
    this.values = [];
    this.seen = 0;
  }

  add(value) {
    this.seen += 1;
    if (this.values.length < this.capacity) {
      this.values.push(value);
      return;
    }
    const slot = Math.floor(Math.random() * this.seen);
    if (slot < this.capacity) this.values[slot] = value;
  }
}

/**
 * Merges the reservoirs of several workers into one sample that weighs each by the number
 * of values it saw (each contributes a share of `capacity` proportional to `seen`).
 */
export function mergeReservoirs(parts, capacity = 50_000) {
  const total = parts.reduce((sum, part) => sum + part.seen, 0);
  if (total === 0) return [];
  const merged = [];
  for (const part of parts) {
    const share = Math.min(part.values.length, Math.round((capacity * part.seen) / total));
    const values = part.values.slice();
    for (let i = 0; i < share; i += 1) {
      const j = i + Math.floor(Math.random() * (values.length - i));
      [values[i], values[j]] = [values[j], values[i]];
      merged.push(values[i]);
    }
  }
  return merged;
}
