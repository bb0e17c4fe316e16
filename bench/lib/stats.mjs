// Statistics shared by the load workers and the orchestrator: one clock, and latencies
// kept in HDR histograms (hdr-histogram-js), whose percentiles cover every sample, in
// constant memory, and merge across processes without resampling.
import hdr from 'hdr-histogram-js';
import { performance } from 'node:perf_hooks';

/** Milliseconds on a clock every process of this machine shares (sub-millisecond precision). */
export function clock() {
  return performance.timeOrigin + performance.now();
}

const round = (value) => Math.round(value * 1000) / 1000;

/**
 * Latencies in milliseconds, recorded at microsecond resolution with 3 significant digits
 * (a percentile is within 0.1% of the exact one), from 1 µs up (the range grows as needed).
 * Crosses process boundaries as `encode()`'s compressed string.
 */
export class LatencyHistogram {
  constructor() {
    this.histogram = hdr.build({ lowestDiscernibleValue: 1, numberOfSignificantValueDigits: 3 });
  }

  /** Records one latency (ms); values under 1 µs count as 1 µs. */
  record(ms) {
    this.histogram.recordValue(Math.max(1, Math.round(ms * 1000)));
  }

  get count() {
    return this.histogram.totalCount;
  }

  /** The compressed form (base64) to send over IPC; `LatencyHistogram.merge` reads it back. */
  encode() {
    return hdr.encodeIntoCompressedBase64(this.histogram);
  }

  /** One histogram of every sample of the given ones (encoded strings or histograms; null skipped). */
  static merge(parts) {
    const merged = new LatencyHistogram();
    for (const part of parts) {
      if (part === null || part === undefined) continue;
      merged.histogram.add(typeof part === 'string' ? hdr.decodeFromCompressedBase64(part) : part.histogram);
    }
    return merged;
  }

  /** count, mean and the usual percentiles (ms), all null but count when empty. */
  summary() {
    const h = this.histogram;
    if (h.totalCount === 0) return { count: 0, min: null, p50: null, p95: null, p99: null, max: null, mean: null };
    const ms = (microseconds) => round(microseconds / 1000);
    return {
      count: h.totalCount,
      min: ms(h.minNonZeroValue),
      p50: ms(h.getValueAtPercentile(50)),
      p95: ms(h.getValueAtPercentile(95)),
      p99: ms(h.getValueAtPercentile(99)),
      max: ms(h.maxValue),
      mean: ms(h.mean),
    };
  }
}

/**
 * count, mean and the usual percentiles (ms) of a LatencyHistogram, of several (encoded or
 * not, merged), or of a list of samples in milliseconds.
 */
export function summarize(input) {
  if (input instanceof LatencyHistogram) return input.summary();
  if (input.length > 0 && typeof input[0] !== 'number') return LatencyHistogram.merge(input).summary();
  const histogram = new LatencyHistogram();
  for (const value of input) histogram.record(value);
  return histogram.summary();
}
