// The `soak` scenario: a bounded run of mixed load at a moderate fixed rate (sends acked by
// their receivers, typing, sockets dropped and reconnected, join/leave; bench/soak-worker.mjs)
// while the service process is sampled every second: RSS (/proc/<pid>/status), and from
// its /metrics (prom-client's default metrics) the V8 heap in use, the event-loop delay
// (p99 and max since the previous scrape: prom-client resets its histogram on each
// collect) and the active handles. The verdict per series is the slope of a least-squares
// line over the second half of the run (the first half holds the warm-up: JIT, pools
// filling, V8 growing its heap to the load): growth that keeps going shows up there.
// The heap in use is a sawtooth (it climbs between major GCs, ~30 s apart at this load), so
// its series is the heap right after each major GC (prom-client's GC counter moved since the
// previous sample): the floor a leak would lift.
import { join } from 'node:path';

import { cpuSeconds, rssKiB } from './lib/processes.mjs';
import { summarize } from './lib/stats.mjs';

const SOAK_WORKER = join(import.meta.dirname, 'soak-worker.mjs');

const round = (value, digits = 0) =>
  value === null || value === undefined || Number.isNaN(value) ? null : Math.round(value * 10 ** digits) / 10 ** digits;

/**
 * Growth limits of the second half, per minute. Each sits well above what GC and socket
 * churn move by chance in a minute on this machine, and well below what a leak on the
 * hot paths adds at this load (400 msg/s and ~240 reconnects a minute): keeping one
 * message (~0.5 KB) each is ~12 MB/min, one socket's state (~10 KB) per reconnect ~2.4
 * MB/min, one handle per reconnect 240/min.
 */
const SOAK_LIMITS = {
  rssMiB: { perMinute: 2, unit: 'MB' },
  heapAfterGcMiB: { perMinute: 1, unit: 'MB' },
  loopP99Ms: { perMinute: 1, unit: 'ms' },
  // Sockets come and go with the reconnects (20 at a time), so the count wobbles by tens;
  // resources are the handles plus timers and the like (a socket holds one of each).
  handles: { perMinute: 30, unit: 'handles' },
  resources: { perMinute: 60, unit: 'resources' },
};

/** The service's figures of one /metrics scrape (null where a metric is missing). */
async function scrape(url) {
  const text = await (await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(900) })).text();
  const value = (name) => {
    const match = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
    return match ? Number(match[1]) : null;
  };
  return {
    heapUsedBytes: value('nodejs_heap_size_used_bytes'),
    loopP99Seconds: value('nodejs_eventloop_lag_p99_seconds'),
    loopMaxSeconds: value('nodejs_eventloop_lag_max_seconds'),
    handles: value('nodejs_active_handles_total'),
    sockets: value('socket_connections'),
    stored: value('messages_stored_total'),
    resources: value('nodejs_active_resources_total'),
    // The series appears with the first major GC.
    majorGcs: Number(/^nodejs_gc_duration_seconds_count\{kind="major"\} (\S+)$/m.exec(text)?.[1] ?? 0),
  };
}

/** Samples the service every `everyMs` until stop() (a scrape still running is not doubled). */
function startSampler(pid, url, everyMs) {
  const samples = [];
  const start = performance.now();
  let previous = { at: start, cpu: cpuSeconds(pid), stored: null, majorGcs: Infinity };
  let busy = false;
  let failed = 0;
  const timer = setInterval(() => {
    if (busy) return;
    busy = true;
    scrape(url)
      .then((m) => {
        const at = performance.now();
        const cpu = cpuSeconds(pid);
        const seconds = (at - previous.at) / 1000;
        const heapMiB = m.heapUsedBytes === null ? null : round(m.heapUsedBytes / 2 ** 20, 1);
        const afterMajorGc = m.majorGcs > previous.majorGcs;
        samples.push({
          t: round((at - start) / 1000, 1),
          rssMiB: round((rssKiB(pid) ?? NaN) / 1024, 1),
          heapMiB,
          heapAfterGcMiB: afterMajorGc ? heapMiB : null,
          majorGcs: m.majorGcs,
          loopP99Ms: m.loopP99Seconds === null ? null : round(m.loopP99Seconds * 1000, 2),
          loopMaxMs: m.loopMaxSeconds === null ? null : round(m.loopMaxSeconds * 1000, 2),
          handles: m.handles,
          resources: m.resources,
          sockets: m.sockets,
          storedPerSecond:
            m.stored === null || previous.stored === null ? null : round((m.stored - previous.stored) / seconds),
          cpuCores: round((cpu - previous.cpu) / seconds, 2),
        });
        previous = { at, cpu, stored: m.stored, majorGcs: m.majorGcs };
      })
      .catch(() => (failed += 1))
      .finally(() => (busy = false));
  }, everyMs);
  return {
    stop() {
      clearInterval(timer);
      return { samples, failedScrapes: failed };
    },
  };
}

/** Least-squares slope of `key` against t over `samples`, per minute; null with fewer than 2 points. */
function slopePerMinute(samples, key) {
  const points = samples.filter((s) => s[key] !== null && Number.isFinite(s[key]));
  if (points.length < 2) return null;
  const n = points.length;
  const meanT = points.reduce((sum, p) => sum + p.t, 0) / n;
  const meanV = points.reduce((sum, p) => sum + p[key], 0) / n;
  let num = 0;
  let den = 0;
  for (const p of points) {
    num += (p.t - meanT) * (p[key] - meanV);
    den += (p.t - meanT) ** 2;
  }
  return den === 0 ? null : (num / den) * 60;
}

function seriesVerdicts(samples, durationSeconds) {
  const secondHalf = samples.filter((s) => s.t >= durationSeconds / 2);
  const mean = (list, key) => {
    const values = list.map((s) => s[key]).filter((v) => v !== null);
    return values.length > 0 ? values.reduce((a, b) => a + b, 0) / values.length : null;
  };
  return Object.fromEntries(
    Object.entries(SOAK_LIMITS).map(([key, limit]) => {
      const slope = slopePerMinute(secondHalf, key);
      const values = samples.map((s) => s[key]).filter((v) => v !== null);
      return [
        key,
        {
          secondHalfSlopePerMinute: round(slope, 3),
          points: secondHalf.filter((s) => s[key] !== null).length,
          limitPerMinute: limit.perMinute,
          unit: limit.unit,
          pass: slope === null ? null : slope < limit.perMinute,
          first: values[0] ?? null,
          max: values.length > 0 ? Math.max(...values) : null,
          secondHalfMean: round(mean(secondHalf, key), 2),
          last: values.at(-1) ?? null,
        },
      ];
    }),
  );
}

export async function soak(ctx) {
  const s = ctx.settings.soak;
  const target = ctx.target('service');
  const pid = ctx.serverPid('service');
  const prefix = `${ctx.runId}-sk`;
  const specs = [];
  for (let i = 0; i < s.pairs; i += 8) {
    const batch = Array.from({ length: Math.min(8, s.pairs - i) }, async (_, j) => {
      const sender = { userId: `${prefix}-s${i + j}`, deviceId: 'bench' };
      const receiver = { userId: `${prefix}-r${i + j}`, deviceId: 'bench' };
      const conversationId = await ctx.createConversation(sender.userId, {
        kind: 'direct',
        memberIds: [receiver.userId],
      });
      return { conversationId, sender, receiver };
    });
    specs.push(...(await Promise.all(batch)));
  }
  const worker = await ctx.startLoadWorker(SOAK_WORKER, 'soak');
  let run;
  let sampled;
  let cpu;
  let store;
  try {
    await worker.call('soak.setup', { target, pairs: specs, timeoutMs: s.timeoutMs }, 120_000);
    await ctx.settle();
    const measuring = await ctx.begin('service');
    const sampler = startSampler(pid, target.url, s.sampleEveryMs);
    try {
      run = await worker.call(
        'soak.run',
        {
          rate: s.ratePerSecond,
          durationMs: s.durationMs,
          runId: `${ctx.runId}k`,
          typingEveryMs: s.typingEveryMs,
          typingShare: s.typingShare,
          reconnectEveryMs: s.reconnectEveryMs,
          reconnectShare: s.reconnectShare,
          reconnectPauseMs: s.reconnectPauseMs,
          joinLeaveEveryMs: s.joinLeaveEveryMs,
          joinLeavePerTick: s.joinLeavePerTick,
          maxInFlight: s.maxInFlight,
          timeoutMs: s.timeoutMs,
        },
        s.durationMs + 4 * s.timeoutMs + 60_000,
      );
    } finally {
      sampled = sampler.stop();
    }
    ({ store, ...cpu } = await ctx.end(measuring, 'soak'));
    await worker.call('soak.teardown', {}, 30_000);
  } finally {
    await worker.stop();
  }
  const durationSeconds = s.durationMs / 1000;
  const { deliveryMs, reconnectMs, errors, ...counts } = run;
  return {
    durationSeconds,
    offeredPerSecond: s.ratePerSecond,
    sentPerSecond: round(run.sentPerSecond),
    storedPerSecond: round(run.stored / run.sendingSeconds),
    ...counts,
    sendingSeconds: round(run.sendingSeconds, 1),
    maxTickGapMs: round(run.maxTickGapMs, 1),
    deliveryMs: summarize([deliveryMs]),
    reconnectToDrainedMs: summarize([reconnectMs]),
    verdicts: seriesVerdicts(sampled.samples, durationSeconds),
    failedScrapes: sampled.failedScrapes,
    samples: sampled.samples,
    errors,
    cpu,
    store,
  };
}
