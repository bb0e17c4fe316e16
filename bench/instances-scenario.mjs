// The `two-instances` scenario: what a message costs when its sender and its receiver are
// connected to different instances of the service, beside the same load on one instance,
// in the same run. Three placements of the same one-to-one pairs:
//
//   one     every client on instance A, and A is the only instance (its broadcasts stay
//           off Redis, as in production with one instance)
//   split   a second instance B on the same PostgreSQL and Redis; every sender on A,
//           every receiver on B, so every live message crosses Redis
//   mixed   both instances; pair i's sender on A or B by i % 2, its receiver by
//           (i >> 1) % 2: each instance sends and receives, half the pairs cross
//   idle3   as split, with a third instance C that holds no clients: C's CPU and the
//           Redis bytes it adds are what every further instance costs per message while
//           live messages are broadcast to every instance
//
// Each placement first runs the throughput loop for a few unmeasured seconds (warm-up),
// then the throughput loop (closed, `window` in flight per sender, done
// once stored, delivered and acked) and then the latency loop (open, a fixed offered rate)
// on the same pairs. Per placement: msg/s, deliveries/s, delivery latency, CPU ms per
// message of each instance (and of PostgreSQL, Redis and the load), PostgreSQL write
// transactions and WAL bytes, Redis commands (INFO stats and commandstats) and Redis
// network bytes in and out per message.
import { pool } from './lib/closed-loop.mjs';
import { summarize } from './lib/stats.mjs';

const round = (value, digits = 0) =>
  value === null || value === undefined || Number.isNaN(value) ? null : Math.round(value * 10 ** digits) / 10 ** digits;
const sum = (parts, pick) => parts.reduce((total, part) => total + pick(part), 0);

/** Where pair `index`'s sender and receiver connect, by placement: 'A' or 'B'. */
const PLACEMENTS = {
  one: () => ['A', 'A'],
  split: () => ['A', 'B'],
  mixed: (index) => [index % 2 === 0 ? 'A' : 'B', (index >> 1) % 2 === 0 ? 'A' : 'B'],
  idle3: () => ['A', 'B'],
};

export async function twoInstances(ctx) {
  const s = ctx.settings['two-instances'];
  const targets = { A: ctx.target('service'), B: null };
  const variants = {};
  // Alone first: A's broadcasts stay local only while no other instance is subscribed.
  variants.one = await measurePlacement(ctx, s, 'one', targets);
  ctx.log('two-instances: starting a second instance of the service');
  const second = await ctx.startExtraService();
  targets.B = second.target;
  try {
    for (const placement of ['split', 'mixed']) {
      await ctx.settle();
      variants[placement] = await measurePlacement(ctx, s, placement, targets);
    }
    ctx.log('two-instances: starting a third instance, with no clients');
    const third = await ctx.startExtraService();
    try {
      await ctx.settle();
      variants.idle3 = await measurePlacement(ctx, s, 'idle3', targets);
    } finally {
      await third.stop();
    }
  } finally {
    await second.stop();
  }
  return { pairs: s.pairs, window: s.window, latencyRatePerSecond: s.latencyRatePerSecond, variants };
}

async function measurePlacement(ctx, s, placement, targets) {
  const workers = ctx.messageWorkers();
  const tag = `ti${placement.slice(0, 2)}`;
  const specs = await pool(
    Array.from({ length: s.pairs }, (_, i) => i),
    8,
    async (i) => {
      const sender = { userId: `${ctx.runId}-${tag}-s${i}`, deviceId: 'bench' };
      const receiver = { userId: `${ctx.runId}-${tag}-r${i}`, deviceId: 'bench' };
      const conversationId = await ctx.createConversation(sender.userId, {
        kind: 'direct',
        memberIds: [receiver.userId],
      });
      const [senderAt, receiverAt] = PLACEMENTS[placement](i);
      return {
        conversationId,
        sender,
        receiver,
        senderTarget: targets[senderAt],
        receiverTarget: targets[receiverAt],
        crosses: senderAt !== receiverAt,
      };
    },
  );
  const groups = workers.map((_, w) => specs.filter((_, i) => i % workers.length === w));
  await Promise.all(
    workers.map((worker, w) => worker.call('pairs.setup', { target: targets.A, pairs: groups[w] }, 120_000)),
  );
  try {
    // Unmeasured: a fresh instance's first seconds (JIT, each new conversation's first
    // store on the transactional path) would otherwise count against whichever placement
    // meets it first.
    await Promise.all(
      workers.map((worker) =>
        worker.call(
          'pairs.throughput',
          {
            window: s.window,
            durationMs: s.placementWarmupMs,
            warmupMs: 0,
            maxMessages: s.maxMessagesPerWorker,
            timeoutMs: s.timeoutMs,
            runId: `${ctx.runId}${tag}w`,
          },
          s.placementWarmupMs + s.timeoutMs + 30_000,
        ),
      ),
    );
    await ctx.settle();
    const throughput = await measure(ctx, `two-instances-${placement}-throughput`, async () => {
      const parts = await Promise.all(
        workers.map((worker) =>
          worker.call(
            'pairs.throughput',
            {
              window: s.window,
              durationMs: s.durationMs,
              warmupMs: s.warmupMs,
              maxMessages: s.maxMessagesPerWorker,
              timeoutMs: s.timeoutMs,
              runId: `${ctx.runId}${tag}t`,
            },
            s.durationMs + s.timeoutMs + 30_000,
          ),
        ),
      );
      const seconds = parts[0].windowSeconds;
      const messages = sum(parts, (p) => p.totals.completed);
      return {
        messages,
        figures: {
          measuredSeconds: seconds,
          perSecond: {
            completed: round(sum(parts, (p) => p.windowed.completed) / seconds),
            stored: round(sum(parts, (p) => p.windowed.stored) / seconds),
            delivered: round(sum(parts, (p) => p.windowed.delivered) / seconds),
          },
          totals: {
            sent: sum(parts, (p) => p.totals.sent),
            stored: sum(parts, (p) => p.totals.stored),
            delivered: sum(parts, (p) => p.totals.delivered),
            completed: messages,
            stuck: sum(parts, (p) => p.stuck),
          },
          completionLatencyMs: summarize(parts.map((p) => p.completion)),
          liveNotAscending: sum(parts, (p) => p.notAscending),
          errors: sum(parts, (p) => p.errors.count),
          errorsByCode: mergeCodes(parts.map((p) => p.errors)),
        },
      };
    });
    await ctx.settle();
    const latency = await measure(ctx, `two-instances-${placement}-latency`, async () => {
      const parts = await Promise.all(
        workers.map((worker, w) =>
          worker.call(
            'pairs.latency',
            {
              rate: (s.latencyRatePerSecond * groups[w].length) / s.pairs,
              durationMs: s.latencyDurationMs,
              warmupMs: s.latencyWarmupMs,
              timeoutMs: s.timeoutMs,
              runId: `${ctx.runId}${tag}l`,
            },
            s.latencyDurationMs + s.timeoutMs + 30_000,
          ),
        ),
      );
      const messages = sum(parts, (p) => p.sent);
      return {
        messages,
        figures: {
          offeredPerSecond: s.latencyRatePerSecond,
          achievedPerSecond: round(sum(parts, (p) => p.achievedPerSecond)),
          sent: messages,
          received: sum(parts, (p) => p.received),
          deliveryMs: summarize(parts.map((p) => p.delivery)),
          deliveryBySecond: parts.map((p) => p.bySecond),
          storedAckMs: summarize(parts.map((p) => p.stored)),
          liveNotAscending: sum(parts, (p) => p.notAscending),
          errors: sum(parts, (p) => p.errors.count),
          errorsByCode: mergeCodes(parts.map((p) => p.errors)),
        },
      };
    });
    return { crossingPairs: specs.filter((spec) => spec.crosses).length, throughput, latency };
  } finally {
    await Promise.all(workers.map((worker) => worker.call('pairs.teardown', {}, 30_000)));
  }
}

/**
 * Runs `work` (which resolves { messages, figures }) between ctx.begin and ctx.end and adds
 * the cost per message: CPU ms of each process group (service = instance A, service2 = B),
 * the store counters, and the Redis commands by name (INFO commandstats).
 */
async function measure(ctx, name, work) {
  const commandsBefore = await ctx.redisCommandCalls();
  const measuring = await ctx.begin('service');
  const { messages, figures } = await work();
  const { store, ...cpu } = await ctx.end(measuring, name);
  const commandsAfter = await ctx.redisCommandCalls();
  const per = (value) => (messages > 0 ? value / messages : null);
  const cpuMs = Object.fromEntries(
    Object.entries(cpu.cores)
      .filter(([group]) => group !== 'bare') // no relay in this scenario
      .map(([group, cores]) => [group, round(per(cores * cpu.wallSeconds * 1000), 3)]),
  );
  cpuMs.servicesTotal = round((cpuMs.service ?? 0) + (cpuMs.service2 ?? 0) + (cpuMs.service3 ?? 0), 3);
  const commands = Object.entries(commandsAfter)
    .map(([command, calls]) => [command, calls - (commandsBefore[command] ?? 0)])
    .filter(([, calls]) => calls > 0)
    .sort((a, b) => b[1] - a[1]);
  return {
    ...figures,
    cpu,
    cpuMsPerMessage: cpuMs,
    store: {
      total: store,
      messages,
      perMessage: Object.fromEntries(Object.entries(store).map(([key, value]) => [key, round(per(value), 2)])),
    },
    redisCommandsPerMessage: Object.fromEntries(commands.map(([command, calls]) => [command, round(per(calls), 2)])),
  };
}

function mergeCodes(tallies) {
  const merged = {};
  for (const tally of tallies) {
    for (const [code, count] of Object.entries(tally.byCode)) merged[code] = (merged[code] ?? 0) + count;
  }
  return merged;
}
