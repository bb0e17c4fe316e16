// The `client` scenario: the client SDK (@messaging-service/client, client/dist) against the
// service, measured against SDK.md's "Targets". The SDK runs in forked processes
// (bench/client-worker.mjs), never in the orchestrator or the service; it speaks only the
// service's protocol, so there is no bare-relay run to compare with.
//   connect     new MessagingClient(...) + connect() to the session, sequential, a new user each
//   reconnect   a connection cut by a TCP proxy (in the worker) while the service runs, to 'synced'
//   sends       one client, every send called at once; messages stored per second
//   heap        1,000 connected clients in one fresh process (--expose-gc), heap per client
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

import { summarize } from './lib/stats.mjs';

const CLIENT_WORKER = join(import.meta.dirname, 'client-worker.mjs');
const CLIENT_DIR = join(import.meta.dirname, '..', 'client');

const round = (value, digits = 0) =>
  value === null || value === undefined ? null : Math.round(value * 10 ** digits) / 10 ** digits;

/**
 * The SDK build the bench loads (client/dist, built by `npm run build`): a short digest,
 * and whether a source file changed after it was built (then the figures are of old code).
 */
function clientBuild() {
  const files = (dir, ext) =>
    readdirSync(dir, { withFileTypes: true, recursive: true })
      .filter((entry) => entry.isFile() && entry.name.endsWith(ext))
      .map((entry) => join(entry.parentPath, entry.name))
      .sort();
  try {
    const built = files(join(CLIENT_DIR, 'dist'), '.js');
    const hash = createHash('sha256');
    for (const file of built) hash.update(file.slice(CLIENT_DIR.length)).update(readFileSync(file));
    const builtAt = Math.min(...built.map((file) => statSync(file).mtimeMs));
    const newer = files(join(CLIENT_DIR, 'src'), '.ts')
      .filter((file) => !/\.spec\.ts$|-conformance\.ts$/.test(file)) // not built (tsconfig.build.json)
      .filter((file) => statSync(file).mtimeMs > builtAt);
    return {
      distDigest: hash.digest('hex').slice(0, 12),
      sourcesNewerThanDist: newer.map((f) => f.slice(CLIENT_DIR.length + 1)),
    };
  } catch (error) {
    throw new Error(`client/dist is missing or unreadable (npm run build builds it): ${error.message}`, {
      cause: error,
    });
  }
}

/**
 * Counters of the service's /metrics the sends are checked against: messages stored,
 * requests answered rate_limited, and `history` requests (the SDK asks for a seq it has not
 * seen after gapWaitMs, its own sends' included, so slow replies show up here).
 */
async function serviceCounters(url) {
  const text = await (await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(5_000) })).text();
  const sum = (pattern) => [...text.matchAll(pattern)].reduce((total, match) => total + Number(match[1]), 0);
  return {
    stored: sum(/^messages_stored_total (\S+)$/gm),
    rateLimited: sum(/^errors_total\{(?=[^}]*code="rate_limited")(?=[^}]*transport="socket")[^}]*\} (\S+)$/gm),
    history: sum(/^socket_request_duration_seconds_count\{(?=[^}]*event="history")[^}]*\} (\S+)$/gm),
  };
}

function mergeErrors(parts) {
  const merged = { count: 0, byCode: {}, rateLimited: 0 };
  for (const part of parts) {
    if (!part) continue;
    merged.count += part.count;
    for (const [code, count] of Object.entries(part.byCode)) merged.byCode[code] = (merged.byCode[code] ?? 0) + count;
  }
  return merged;
}

export async function client(ctx) {
  const s = ctx.settings.client;
  const target = ctx.target('service');
  const build = clientBuild();
  if (build.sourcesNewerThanDist.length > 0) {
    ctx.log(
      `client/dist is older than ${build.sourcesNewerThanDist.join(', ')}: run npm run build to bench the current SDK`,
    );
  }
  const prefix = `${ctx.runId}-cl`;
  const result = { build, failures: {} };

  const worker = await ctx.startLoadWorker(CLIENT_WORKER, 'client');
  try {
    // Connect.
    const connect = await worker.call(
      'connect.series',
      { target, prefix: `${prefix}-c`, count: s.connects, warmup: s.connectWarmup, timeoutMs: s.timeoutMs },
      (s.connects + s.connectWarmup) * s.timeoutMs + 30_000,
    );
    result.connect = {
      count: s.connects,
      warmup: s.connectWarmup,
      ms: summarize(connect.samples),
      errors: connect.errors,
    };
    if (connect.failures.length > 0) result.failures.connect = connect.failures;
    await ctx.settle();

    // Reconnect to 'synced', once per backoff setting.
    result.reconnect = [];
    for (const [index, reconnect] of s.backoffs.entries()) {
      const run = await worker.call(
        'reconnect.run',
        {
          target,
          userId: `${prefix}-r${index}`,
          deviceId: 'bench',
          drops: s.drops,
          reconnect,
          gapMs: s.dropGapMs,
          timeoutMs: s.timeoutMs,
        },
        s.drops * (s.dropGapMs + s.timeoutMs) + 30_000,
      );
      result.reconnect.push({
        backoff: reconnect,
        drops: s.drops,
        synced: run.samples.length,
        ms: summarize(run.samples),
        firstRetryDelayMs: summarize(run.firstDelays),
        maxRetriesPerDrop: run.retriesPerDrop.length > 0 ? Math.max(...run.retriesPerDrop) : null,
        clientMetrics: run.metrics,
        errors: run.errors,
      });
      if (run.failures.length > 0) result.failures[`reconnect${index}`] = run.failures;
      await ctx.settle();
    }

    // Sends: a sender and its own conversations per run, each a direct conversation with a
    // receiver whose device connected once and is offline, so every message is also
    // written to that device's offline queue, as in use.
    const conversationsOf = async (tag, count) => {
      const sender = `${prefix}-${tag}-s`;
      const receivers = Array.from({ length: count }, (_, i) => `${prefix}-${tag}-r${i}`);
      const ids = [];
      for (const receiver of receivers) {
        ids.push(await ctx.createConversation(sender, { kind: 'direct', memberIds: [receiver] }));
      }
      await worker.call('devices.register', { target, userIds: receivers, timeoutMs: s.timeoutMs }, 60_000);
      return { sender, ids };
    };
    /** A sends run; `profile`: also the CPU of every process and the service's store work, under that name. */
    const sendsOn = async ({ sender, ids }, count, profile = null) => {
      const before = await serviceCounters(target.url);
      const measuring = profile ? await ctx.begin('service') : null;
      const run = await worker.call(
        'sends.run',
        {
          target,
          userId: sender,
          deviceId: 'bench',
          conversationIds: ids,
          count,
          early: s.sendsEarly,
          timeoutMs: s.sendsTimeoutMs,
        },
        s.sendsTimeoutMs + 30_000,
      );
      const { store = null, ...cpu } = measuring ? await ctx.end(measuring, profile) : {};
      const after = await serviceCounters(target.url);
      return {
        conversations: ids.length,
        count,
        stored: run.stored,
        seconds: round(run.seconds, 3),
        perSecond: round(run.perSecond),
        early: run.early,
        earlyPerSecond: round(run.earlyPerSecond),
        storedByService: after.stored - before.stored,
        rateLimitedReplies: after.rateLimited - before.rateLimited,
        historyRequests: after.history - before.history,
        storedOutOfSeqOrder: run.storedOutOfSeqOrder,
        clientMetrics: run.metrics,
        errors: run.errors,
        ...(run.failure ? { failure: run.failure } : {}),
        ...(measuring ? { cpu, store } : {}),
      };
    };
    const warm = await conversationsOf('sw', 1);
    const one = await conversationsOf('s1', 1);
    const spread = await conversationsOf('s10', s.spreadConversations);
    // Warm-up: the send path's first messages (JIT, cold look-ups) are not the steady state.
    result.sendsWarmup = await sendsOn(warm, s.sendsWarmup);
    await ctx.settle();
    result.sends = await sendsOn(one, s.sends, 'client-sends');
    result.cpu = result.sends.cpu; // the report's CPU line: the one-conversation sends
    await ctx.settle();
    result.sendsSpread = await sendsOn(spread, s.sends, 'client-sends-spread');
    await ctx.settle();
  } finally {
    await worker.stop();
  }

  // Heap: a fresh process holding nothing but the clients.
  const heapWorker = await ctx.startLoadWorker(CLIENT_WORKER, 'client-heap', { execArgv: ['--expose-gc'] });
  try {
    const heap = await heapWorker.call(
      'heap.run',
      {
        target,
        prefix: `${prefix}-h`,
        count: s.heapClients,
        warmup: s.heapWarmup,
        concurrency: s.heapConcurrency,
        timeoutMs: s.timeoutMs,
        holdMs: s.heapHoldMs,
      },
      120_000,
    );
    const per = (key) => (heap.opened > 0 ? round((heap.after[key] - heap.before[key]) / 1024 / heap.opened, 1) : null);
    result.heap = {
      ...heap,
      heapPerClientKiB: per('heapUsed'),
      rssPerClientKiB: per('rss'),
      externalPerClientKiB: per('external'),
    };
    delete result.heap.failures;
    if (heap.failures.length > 0) result.failures.heap = heap.failures;
  } finally {
    await heapWorker.stop();
  }
  await ctx.settle();

  result.errors = mergeErrors([
    result.connect.errors,
    ...result.reconnect.map((run) => run.errors),
    result.sends.errors,
    result.sendsSpread.errors,
    result.heap.errors,
  ]);
  // Rate-limited sends are reported per run (sends.rateLimitedReplies), beside their rate.
  if (Object.keys(result.failures).length === 0) delete result.failures;
  return result;
}
