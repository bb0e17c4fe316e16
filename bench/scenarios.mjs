// The scenarios: each one lines up the load workers, runs against one target ('bare' relay
// or the 'service'), and turns the workers' counts into the figures of the report.
import { randomUUID } from 'node:crypto';

import { pool } from './lib/closed-loop.mjs';
import { rssKiB, sleep } from './lib/processes.mjs';
import { summarize } from './lib/stats.mjs';

export { client } from './client-scenario.mjs';
export { twoInstances } from './instances-scenario.mjs';
export { soak } from './soak-scenario.mjs';

// Connections runs first: its RSS baseline is cleanest on a server that has not carried load yet.
export const SCENARIOS = ['connections', 'throughput', 'latency', 'drain', 'fanout', 'client', 'soak', 'two-instances'];
/**
 * Run only when asked for by name: the soak takes minutes on its own; two-instances
 * starts a second service process and measures three placements of its clients.
 */
export const OPT_IN_SCENARIOS = new Set(['soak', 'two-instances']);

/** Counts and bounds of each scenario; --quick shrinks them for a smoke run. */
export function settingsFor(quick) {
  return {
    throughput: {
      pairs: quick ? 16 : 64,
      window: 16,
      durationMs: quick ? 4_000 : 10_000,
      warmupMs: quick ? 1_000 : 2_000,
      maxMessagesPerWorker: quick ? 100_000 : 500_000,
      timeoutMs: 15_000,
    },
    latency: {
      ratePerSecond: 1_000,
      pairs: quick ? 20 : 50,
      // Steady state: the first seconds of a fresh process (JIT, new conversations going
      // through the careful store path once) are left out; results.json keeps p99 per second.
      durationMs: quick ? 5_000 : 13_000,
      warmupMs: 3_000,
      timeoutMs: 15_000,
    },
    connections: {
      count: quick ? 1_000 : 10_000,
      // Two client processes (5,000 sockets each at full size, under the 20,000 open files
      // a process may hold): on 2 cores more processes only contend with the servers.
      workers: 2,
      concurrencyPerWorker: 100,
      settleMs: 2_000,
    },
    drain: {
      count: quick ? 1_000 : 10_000,
      window: 64,
      timeoutMs: 30_000,
    },
    fanout: {
      members: 100,
      window: 16,
      durationMs: quick ? 4_000 : 10_000,
      warmupMs: quick ? 1_000 : 2_000,
      maxMessages: 200_000,
      timeoutMs: 15_000,
    },
    client: {
      connects: quick ? 50 : 200,
      connectWarmup: 10,
      drops: quick ? 15 : 50,
      // The SDK's default backoff, then a short one: the first retry after a drop waits
      // random(0, minDelayMs) ms, which is part of the reconnect figure.
      backoffs: [
        { minDelayMs: 500, maxDelayMs: 20_000 },
        { minDelayMs: 50, maxDelayMs: 20_000 },
      ],
      dropGapMs: 100,
      sends: quick ? 1_000 : 5_000,
      sendsWarmup: 200,
      // The service's default per-connection limit is 1,000 requests/s with bursts of 2,000
      // (RATE_LIMIT_EVENTS_PER_SEC); the rate of the first 1,500 stored stays inside the burst.
      sendsEarly: 1_500,
      spreadConversations: 10,
      sendsTimeoutMs: 60_000,
      // SDK.md's target is stated for 1,000 clients in one process, so quick keeps it.
      heapClients: 1_000,
      heapWarmup: 20,
      heapConcurrency: 50,
      heapHoldMs: 1_000,
      timeoutMs: 15_000,
    },
    'two-instances': {
      // The throughput scenario's pairs and window, then the latency scenario's rate and
      // durations, on the same pairs, for each placement (bench/instances-scenario.mjs).
      pairs: quick ? 16 : 64,
      window: 16,
      placementWarmupMs: quick ? 2_000 : 3_000,
      durationMs: quick ? 4_000 : 10_000,
      warmupMs: quick ? 1_000 : 2_000,
      maxMessagesPerWorker: quick ? 100_000 : 500_000,
      latencyRatePerSecond: 1_000,
      latencyDurationMs: quick ? 5_000 : 13_000,
      latencyWarmupMs: 3_000,
      timeoutMs: 15_000,
    },
    soak: {
      // --soak-seconds overrides the duration.
      durationMs: quick ? 30_000 : 300_000,
      sampleEveryMs: 1_000,
      // 200 sockets at 400 msg/s: a steady load well under this machine's capacity, so
      // what grows is the service's doing and not a backlog of the load.
      pairs: 100,
      ratePerSecond: 400,
      typingEveryMs: 1_000,
      typingShare: 0.2,
      // Every 5 s a tenth of the sockets is dropped, each back after a random pause of up to 1 s.
      reconnectEveryMs: 5_000,
      reconnectShare: 0.1,
      reconnectPauseMs: 1_000,
      joinLeaveEveryMs: 1_000,
      joinLeavePerTick: 4,
      maxInFlight: 2_000,
      timeoutMs: 15_000,
    },
  };
}

/** Splits `items` round-robin into `parts` lists. */
function split(items, parts) {
  const lists = Array.from({ length: parts }, () => []);
  items.forEach((item, index) => lists[index % parts].push(item));
  return lists;
}

function mergeErrors(parts) {
  const merged = { count: 0, byCode: {}, rateLimited: 0 };
  for (const part of parts) {
    if (!part) continue;
    merged.count += part.count;
    merged.rateLimited += part.rateLimited ?? 0;
    for (const [code, count] of Object.entries(part.byCode)) merged.byCode[code] = (merged.byCode[code] ?? 0) + count;
  }
  return merged;
}

const sum = (parts, pick) => parts.reduce((total, part) => total + pick(part), 0);
const round = (value, digits = 0) => (value === null ? null : Math.round(value * 10 ** digits) / 10 ** digits);

/** A conversation id: created over REST on the service, a room name on the bare relay. */
function conversationFor(ctx, kind, creatorId, body) {
  if (kind === 'bare') return Promise.resolve(randomUUID());
  return ctx.createConversation(creatorId, body);
}

async function onWorkers(workers, op, argsFor, timeoutMs) {
  return Promise.all(workers.map((worker, index) => worker.call(op, argsFor(index), timeoutMs)));
}

/**
 * Creates `count` one-to-one conversations (sender and receiver users tagged by
 * scenario), shares them out over the workers and has each worker connect its pairs.
 * Returns each worker's pairs.
 */
async function setUpPairs(ctx, kind, workers, count, tag) {
  const specs = await pool(
    Array.from({ length: count }, (_, i) => i),
    8,
    async (i) => {
      const sender = { userId: `${ctx.runId}-${tag}-${kind}-s${i}`, deviceId: 'bench' };
      const receiver = { userId: `${ctx.runId}-${tag}-${kind}-r${i}`, deviceId: 'bench' };
      const conversationId = await conversationFor(ctx, kind, sender.userId, {
        kind: 'direct',
        memberIds: [receiver.userId],
      });
      return { conversationId, sender, receiver };
    },
  );
  const groups = split(specs, workers.length);
  const target = ctx.target(kind);
  await onWorkers(workers, 'pairs.setup', (i) => ({ target, pairs: groups[i] }), 120_000);
  return groups;
}

// ------------------------------------------------------------------------- throughput

export async function throughput(ctx, kind) {
  const s = ctx.settings.throughput;
  const workers = ctx.messageWorkers();
  await setUpPairs(ctx, kind, workers, s.pairs, 'tp');
  await ctx.settle();
  const measuring = await ctx.begin(kind);
  const parts = await onWorkers(
    workers,
    'pairs.throughput',
    () => ({
      window: s.window,
      durationMs: s.durationMs,
      warmupMs: s.warmupMs,
      maxMessages: s.maxMessagesPerWorker,
      timeoutMs: s.timeoutMs,
      runId: `${ctx.runId}${kind[0]}`,
    }),
    s.durationMs + s.timeoutMs + 30_000,
  );
  const { store, ...cpu } = await ctx.end(measuring, 'throughput');
  await onWorkers(workers, 'pairs.teardown', () => ({}), 30_000);
  const seconds = parts[0].windowSeconds;
  const rate = (pick) => round(sum(parts, pick) / seconds);
  return {
    pairs: s.pairs,
    window: s.window,
    measuredSeconds: seconds,
    perSecond: {
      completed: rate((p) => p.windowed.completed),
      stored: rate((p) => p.windowed.stored),
      delivered: rate((p) => p.windowed.delivered),
      acked: rate((p) => p.windowed.acked),
    },
    totals: {
      sent: sum(parts, (p) => p.totals.sent),
      stored: sum(parts, (p) => p.totals.stored),
      delivered: sum(parts, (p) => p.totals.delivered),
      acked: sum(parts, (p) => p.totals.acked),
      completed: sum(parts, (p) => p.totals.completed),
      stuck: sum(parts, (p) => p.stuck),
    },
    completionLatencyMs: summarize(parts.map((p) => p.completion)),
    liveNotAscending: sum(parts, (p) => p.notAscending),
    serverCpuMsPerMessage: cpuMsPerMessage(
      cpu,
      kind,
      sum(parts, (p) => p.totals.completed),
    ),
    errors: mergeErrors(parts.map((p) => p.errors)),
    cpu,
    store: perMessage(
      store,
      sum(parts, (p) => p.totals.completed),
    ),
  };
}

/** The store counters of a run, with each also divided by the messages of the run. */
function perMessage(store, messages) {
  if (!store) return null;
  const each = Object.fromEntries(
    Object.entries(store).map(([key, value]) => [key, messages > 0 ? round(value / messages, 2) : null]),
  );
  return { total: store, messages, perMessage: each };
}

/** CPU time the server process spent per completed message over the whole run. */
function cpuMsPerMessage(cpu, kind, messages) {
  return messages > 0 ? round((cpu.cores[kind] * cpu.wallSeconds * 1000) / messages, 3) : null;
}

// ---------------------------------------------------------------------------- latency

export async function latency(ctx, kind) {
  const s = ctx.settings.latency;
  const workers = ctx.messageWorkers();
  const groups = await setUpPairs(ctx, kind, workers, s.pairs, 'lt');
  await ctx.settle();
  const measuring = await ctx.begin(kind);
  const parts = await onWorkers(
    workers,
    'pairs.latency',
    (i) => ({
      rate: (s.ratePerSecond * groups[i].length) / s.pairs,
      durationMs: s.durationMs,
      warmupMs: s.warmupMs,
      timeoutMs: s.timeoutMs,
      runId: `${ctx.runId}${kind[0]}`,
    }),
    s.durationMs + s.timeoutMs + 30_000,
  );
  const { store, ...cpu } = await ctx.end(measuring, 'latency');
  await onWorkers(workers, 'pairs.teardown', () => ({}), 30_000);
  return {
    pairs: s.pairs,
    offeredPerSecond: s.ratePerSecond,
    achievedPerSecond: round(sum(parts, (p) => p.achievedPerSecond)),
    measuredSeconds: (s.durationMs - s.warmupMs) / 1000,
    sent: sum(parts, (p) => p.sent),
    received: sum(parts, (p) => p.received),
    deliveredPerSecond: round(sum(parts, (p) => p.receivedBeforeStop) / (s.durationMs / 1000)),
    deliveryMs: summarize(parts.map((p) => p.delivery)),
    deliveryBySecond: parts.map((p) => p.bySecond),
    storedAckMs: summarize(parts.map((p) => p.stored)),
    liveNotAscending: sum(parts, (p) => p.notAscending),
    loadGeneratorMaxTickGapMs: round(Math.max(...parts.map((p) => p.maxTickGapMs)), 1),
    errors: mergeErrors(parts.map((p) => p.errors)),
    cpu,
    store: perMessage(
      store,
      sum(parts, (p) => p.sent),
    ),
  };
}

// ------------------------------------------------------------------------ connections

/** Each measured process's CPU milliseconds per item over a measured stretch. */
function cpuMsPer(used, count) {
  if (!count) return null;
  return Object.fromEntries(
    Object.entries(used.cores).map(([name, cores]) => [name, round((cores * used.wallSeconds * 1000) / count, 3)]),
  );
}

export async function connections(ctx, kind) {
  const s = ctx.settings.connections;
  const workers = ctx.connectionWorkers();
  const pid = ctx.serverPid(kind);
  const shares = split(
    Array.from({ length: s.count }, (_, i) => i),
    workers.length,
  ).map((list) => list.length);
  // Warm-up: the first connections load and compile the handshake path; keep that out of the baseline.
  await workers[0].call(
    'connections.open',
    { target: ctx.target(kind), prefix: `${ctx.runId}-cw-${kind}-u`, from: 0, count: 50, concurrency: 10 },
    60_000,
  );
  await workers[0].call('connections.close', {}, 60_000);
  await sleep(500);
  await ctx.settle();
  const rssBeforeKiB = rssKiB(pid);
  const heapBefore = await ctx.heapUsedBytes(kind);
  // With --cpu-prof (the service has its inspector open): also the heap left after a full GC.
  const retainedBefore = await ctx.heapUsedBytes(kind, { collect: true });
  const measuring = await ctx.begin(kind);
  // Every worker opens its share of the same users' devices, in consecutive ranges.
  const openAll = () => {
    const starts = shares.map((_, i) => sum(shares.slice(0, i), (n) => n));
    return onWorkers(
      workers,
      'connections.open',
      (i) => ({
        target: ctx.target(kind),
        prefix: `${ctx.runId}-cn-${kind}-u`,
        from: starts[i],
        count: shares[i],
        concurrency: s.concurrencyPerWorker,
      }),
      300_000,
    );
  };
  const parts = await openAll();
  const { store, ...cpu } = await ctx.end(measuring, 'connections');
  await sleep(s.settleMs);
  await ctx.settle();
  const rssAfterKiB = rssKiB(pid);
  const heapAfter = await ctx.heapUsedBytes(kind);
  const retainedAfter = await ctx.heapUsedBytes(kind, { collect: true });
  const opened = sum(parts, (p) => p.opened);
  const seconds = (Math.max(...parts.map((p) => p.finishedAt)) - Math.min(...parts.map((p) => p.startedAt))) / 1000;
  await onWorkers(workers, 'connections.close', () => ({}), 120_000);
  await ctx.settle();
  // The same devices again: a known device's connect also audits its queue against
  // PostgreSQL (a new one has nothing to audit), the reconnect-storm case.
  const measuringAgain = await ctx.begin(kind);
  const again = await openAll();
  const { store: _reconnectStore, ...reconnectCpu } = await ctx.end(measuringAgain, 'reconnects');
  const reopened = sum(again, (p) => p.opened);
  const reconnectSeconds =
    (Math.max(...again.map((p) => p.finishedAt)) - Math.min(...again.map((p) => p.startedAt))) / 1000;
  await onWorkers(workers, 'connections.close', () => ({}), 120_000);
  await ctx.settle();
  return {
    requested: s.count,
    opened,
    reopened,
    reconnectsPerSecond: round(reopened / reconnectSeconds),
    // CPU per connect (ms, each process): steadier than rates on a busy machine.
    cpuMsPerConnect: cpuMsPer(cpu, opened),
    cpuMsPerReconnect: cpuMsPer(reconnectCpu, reopened),
    clientProcesses: workers.length,
    connectSeconds: round(seconds, 2),
    connectsPerSecond: round(opened / seconds),
    rssBeforeKiB,
    rssAfterKiB,
    rssPerConnectionKiB: opened > 0 ? round((rssAfterKiB - rssBeforeKiB) / opened, 2) : null,
    heapPerConnectionKiB:
      opened > 0 && heapBefore !== null && heapAfter !== null
        ? round((heapAfter - heapBefore) / 1024 / opened, 2)
        : null,
    retainedHeapPerConnectionKiB:
      opened > 0 && retainedBefore !== null && retainedAfter !== null
        ? round((retainedAfter - retainedBefore) / 1024 / opened, 2)
        : null,
    errors: mergeErrors([...parts, ...again].map((p) => p.errors)),
    cpu,
    store: perMessage(store, opened), // per connection here
  };
}

// ------------------------------------------------------------------------------ drain

export async function drain(ctx) {
  const s = ctx.settings.drain;
  const [worker] = ctx.messageWorkers();
  const sender = { userId: `${ctx.runId}-dr-s`, deviceId: 'bench' };
  const receiver = { userId: `${ctx.runId}-dr-r`, deviceId: 'bench' };
  const conversationId = await ctx.createConversation(sender.userId, {
    kind: 'direct',
    memberIds: [receiver.userId],
  });
  await ctx.settle();
  const measuring = await ctx.begin('service');
  const result = await worker.call(
    'drain.run',
    {
      target: ctx.target('service'),
      conversationId,
      sender,
      receiver,
      count: s.count,
      window: s.window,
      timeoutMs: s.timeoutMs,
      runId: ctx.runId,
    },
    300_000,
  );
  const { store, ...cpu } = await ctx.end(measuring, 'drain');
  return {
    ...result,
    fillSeconds: round(result.fillSeconds, 2),
    fillPerSecond: round(result.fillPerSecond),
    connectSeconds: round(result.connectSeconds, 3),
    drainSeconds: round(result.drainSeconds, 3),
    cpu,
    store: perMessage(store, result.count), // filling and draining together
  };
}

// ----------------------------------------------------------------------------- fan-out

export async function fanout(ctx, kind) {
  const s = ctx.settings.fanout;
  const workers = ctx.messageWorkers();
  const sender = { userId: `${ctx.runId}-fo-${kind}-s`, deviceId: 'bench' };
  const receivers = Array.from({ length: s.members - 1 }, (_, i) => ({
    userId: `${ctx.runId}-fo-${kind}-r${i}`,
    deviceId: 'bench',
  }));
  const conversationId = await conversationFor(ctx, kind, sender.userId, {
    kind: 'group',
    title: 'bench fan-out',
    memberIds: receivers.map((receiver) => receiver.userId),
  });
  const groups = split(receivers, workers.length);
  const target = ctx.target(kind);
  await onWorkers(
    workers,
    'fanout.setup',
    (i) => ({ target, conversationId, receivers: groups[i], sender: i === 0 ? sender : null }),
    120_000,
  );
  await ctx.settle();
  const measuring = await ctx.begin(kind);
  const parts = await onWorkers(
    workers,
    'fanout.run',
    () => ({
      window: s.window,
      durationMs: s.durationMs,
      warmupMs: s.warmupMs,
      maxMessages: s.maxMessages,
      timeoutMs: s.timeoutMs,
      runId: `${ctx.runId}${kind[0]}`,
    }),
    s.durationMs + s.timeoutMs + 30_000,
  );
  const { store, ...cpu } = await ctx.end(measuring, 'fanout');
  await onWorkers(workers, 'fanout.teardown', () => ({}), 30_000);
  const seconds = parts[0].windowSeconds;
  const deliveriesPerSecond = sum(parts, (p) => p.deliveriesInWindow) / seconds;
  return {
    members: s.members,
    receivers: s.members - 1,
    window: s.window,
    measuredSeconds: seconds,
    deliveriesPerSecond: round(deliveriesPerSecond),
    messagesPerSecond: round(deliveriesPerSecond / (s.members - 1)),
    serverCpuMsPerMessage: cpuMsPerMessage(
      cpu,
      kind,
      sum(parts, (p) => p.stored),
    ),
    sent: sum(parts, (p) => p.sent),
    stored: sum(parts, (p) => p.stored),
    deliveries: sum(parts, (p) => p.deliveries),
    stuck: sum(parts, (p) => p.stuck),
    deliveryLatencyMs: summarize(parts.map((p) => p.latency)),
    errors: mergeErrors(parts.map((p) => p.errors)),
    cpu,
    store: perMessage(
      store,
      sum(parts, (p) => p.stored),
    ),
  };
}
