// The client SDK's load process, forked by bench/client-scenario.mjs. Where
// bench/load-worker.mjs speaks the wire protocol over bare socket.io-client sockets, this
// one drives @messaging-service/client's MessagingClient as an app does, so the figures
// are what an app gets (SDK.md "Targets"): the outbox, the drain and the backoff included.
// Same IPC as the load worker:
//   parent → { id, op, args }      worker → { id, ok: true, result } | { id, ok: false, error }
//
// Target: { kind: 'service', url, secret } (JWTs minted here, before any clock starts: an
// app gets its token from its backend before it connects).
import { connect as tcpConnect, createServer } from 'node:net';

import { MessagingClient, memoryStorage } from '@messaging-service/client';

import { pool } from './lib/closed-loop.mjs';
import { clock } from './lib/stats.mjs';
import { ErrorTally, tokenFor } from './lib/load-common.mjs';
import { serveOps } from './lib/worker-ipc.mjs';

const BODY_PAD = 'x'.repeat(96); // the size of the load worker's bodies
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------------- helpers

/**
 * A client whose 'state' and 'error' events are kept (the last few), so a connect that
 * never resolves can be reported with what the SDK said meanwhile.
 */
function newClient(options) {
  const client = new MessagingClient({ storage: memoryStorage(), ...options });
  const events = [];
  const keep = (entry) => {
    events.push({ at: Math.round(clock()), ...entry });
    if (events.length > 20) events.shift();
  };
  client.on('state', (change) =>
    keep({ state: change.state, attempt: change.attempt, delayMs: change.delayMs, error: change.error?.code }),
  );
  client.on('error', (error) => keep({ error: error.code, message: error.message }));
  return { client, events };
}

/** What the SDK looked like when something did not happen in time: evidence for the report. */
function evidence(client, events, what) {
  return { what, state: client.state, metrics: client.metrics(), lastEvents: events.slice(-10) };
}

/** Resolves with the next `event` of `client` (and when it came), rejects after `timeoutMs`. */
function nextEvent(client, event, timeoutMs) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no '${event}' within ${timeoutMs} ms`));
    }, timeoutMs);
    const off = client.on(event, (payload) => {
      clearTimeout(timer);
      off();
      resolve({ at: clock(), payload });
    });
  });
}

function withTimeout(promise, timeoutMs, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: not settled within ${timeoutMs} ms`)), timeoutMs);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Connects and waits for the first 'synced' (registered first, so it cannot be missed). */
async function connectSynced(client, timeoutMs) {
  const synced = nextEvent(client, 'synced', timeoutMs);
  synced.catch(() => undefined); // a failed connect is the error reported
  await withTimeout(client.connect(), timeoutMs, 'connect()');
  await synced;
}

/**
 * A TCP proxy on 127.0.0.1 in front of the service: the only honest way to drop a client's
 * socket from outside the SDK (its socket is private). `cutAll()` resets every open
 * connection both ways, as a network change on a phone does; new connections are
 * accepted right away.
 */
async function startProxy(targetPort) {
  const pairs = new Set();
  const reset = (socket) => {
    socket.on('error', () => undefined);
    if (socket.destroyed) return;
    if (typeof socket.resetAndDestroy === 'function' && socket.readyState !== 'opening') socket.resetAndDestroy();
    else socket.destroy();
  };
  const server = createServer((client) => {
    const upstream = tcpConnect({ host: '127.0.0.1', port: targetPort });
    const pair = { client, upstream };
    pairs.add(pair);
    const end = () => {
      if (!pairs.delete(pair)) return;
      reset(client);
      reset(upstream);
    };
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    client.pipe(upstream);
    upstream.pipe(client);
    for (const socket of [client, upstream]) {
      socket.on('error', end);
      socket.on('close', end);
    }
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const cutAll = () => {
    const open = [...pairs];
    pairs.clear();
    for (const pair of open) {
      reset(pair.client);
      reset(pair.upstream);
    }
    return open.length;
  };
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    cutAll,
    close: () => {
      cutAll();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

// ------------------------------------------------------------------------------ connect

/**
 * `warmup + count` connects one after the other, each a new client of a new user: the
 * clock runs from `new MessagingClient(...)` to the resolved `connect()` (the session).
 * The first `warmup` are left out (they compile the handshake path on both sides).
 */
async function connectSeries({ target, prefix, count, warmup, timeoutMs }) {
  const tokens = await Promise.all(Array.from({ length: warmup + count }, (_, i) => tokenFor(target, `${prefix}${i}`)));
  const samples = [];
  const errors = new ErrorTally();
  const failures = [];
  for (let i = 0; i < tokens.length; i += 1) {
    const startedAt = clock();
    const { client, events } = newClient({ url: target.url, deviceId: 'bench', token: tokens[i] });
    try {
      await withTimeout(client.connect(), timeoutMs, 'connect()');
      if (i >= warmup) samples.push(clock() - startedAt);
    } catch (error) {
      errors.add({ code: error.code ?? 'timeout' });
      if (failures.length < 5) failures.push({ user: `${prefix}${i}`, ...evidence(client, events, error.message) });
    } finally {
      await client.close();
    }
  }
  return { samples, errors, failures };
}

// ---------------------------------------------------------------------------- reconnect

/**
 * One connected client behind the proxy; `drops` times: cut its connection while it is
 * connected and caught up, and time the cut to the next 'synced' (back, and the offline
 * queue drained). The SDK's backoff (`reconnect`) is part of the figure: its first retry
 * waits random(0, minDelayMs) ms. Each 'reconnecting' state's delayMs is kept, so the
 * report can tell the wait it chose from the rest.
 */
async function reconnectRun({ target, userId, deviceId, drops, reconnect, gapMs, timeoutMs }) {
  const proxy = await startProxy(Number(new URL(target.url).port));
  const token = await tokenFor(target, userId);
  const { client, events } = newClient({ url: proxy.url, deviceId, token, reconnect });
  const delays = [];
  client.on('state', (change) => {
    if (change.state === 'reconnecting') delays.push(change.delayMs);
  });
  const samples = [];
  const firstDelays = [];
  const retriesPerDrop = [];
  const errors = new ErrorTally();
  const failures = [];
  try {
    await connectSynced(client, timeoutMs);
    for (let i = 0; i < drops; i += 1) {
      await sleep(gapMs);
      const synced = nextEvent(client, 'synced', timeoutMs);
      const retriesBefore = delays.length;
      const cutAt = clock();
      const cut = proxy.cutAll();
      try {
        const { at } = await synced;
        samples.push(at - cutAt);
        firstDelays.push(delays[retriesBefore]);
        retriesPerDrop.push(delays.length - retriesBefore);
      } catch (error) {
        errors.add({ code: 'timeout' });
        if (failures.length < 5)
          failures.push({ drop: i, connectionsCut: cut, ...evidence(client, events, error.message) });
        if (client.state === 'closed') break;
      }
    }
  } finally {
    await client.close();
    await proxy.close();
  }
  return { samples, firstDelays, retriesPerDrop, metrics: client.metrics(), errors, failures };
}

// -------------------------------------------------------------------------------- sends

/**
 * One client (a new one, so the server's per-connection rate limit starts afresh) sends
 * `count` messages round-robin over `conversationIds`, every `send` called at once (the
 * SDK pipelines them) and then awaited. The clock runs from the first call to the last
 * stored message; the client connects and catches up before it. Also the rate of the first
 * `early` stored: the service's per-connection limit (rate_limited, then resent by the SDK)
 * caps a long burst, and the part inside its burst allowance shows the pace without it.
 */
async function sendsRun({ target, userId, deviceId, conversationIds, count, early, timeoutMs }) {
  const token = await tokenFor(target, userId);
  const { client, events } = newClient({ url: target.url, deviceId, token });
  const errors = new ErrorTally();
  const storedAt = [];
  // Sends whose stored message came back after one with a higher seq of its conversation:
  // the SDK holds such a seq until the lower one shows up, and asks `history` after gapWaitMs.
  const highestSeq = new Map();
  let storedOutOfSeqOrder = 0;
  try {
    await connectSynced(client, timeoutMs);
    const startedAt = clock();
    const sends = Array.from({ length: count }, (_, i) =>
      client.send(conversationIds[i % conversationIds.length], { body: `${i}|${BODY_PAD}` }).then(
        (message) => {
          storedAt.push(clock());
          if (message.seq < (highestSeq.get(message.conversationId) ?? 0)) storedOutOfSeqOrder += 1;
          else highestSeq.set(message.conversationId, message.seq);
        },
        (error) => errors.add(error),
      ),
    );
    try {
      await withTimeout(Promise.all(sends), timeoutMs, `${count} sends`);
    } catch (error) {
      return {
        count,
        stored: storedAt.length,
        seconds: null,
        errors,
        failure: evidence(client, events, error.message),
      };
    }
    const seconds = (clock() - startedAt) / 1000;
    const stored = storedAt.length;
    const earlyCount = Math.min(early, stored);
    return {
      count,
      stored,
      seconds,
      perSecond: stored / seconds,
      early: earlyCount,
      earlyPerSecond: earlyCount > 0 ? earlyCount / ((storedAt[earlyCount - 1] - startedAt) / 1000) : null,
      storedOutOfSeqOrder,
      metrics: client.metrics(),
      errors,
    };
  } finally {
    await client.close();
  }
}

/** Each user connects once (device 'bench') and leaves: the service then knows a device to queue for. */
async function devicesRegister({ target, userIds, timeoutMs }) {
  for (const userId of userIds) {
    const { client } = newClient({ url: target.url, deviceId: 'bench', token: await tokenFor(target, userId) });
    try {
      await connectSynced(client, timeoutMs);
    } finally {
      await client.close();
    }
  }
  return { registered: userIds.length };
}

// --------------------------------------------------------------------------------- heap

/**
 * `count` connected clients in this process (one user each, `concurrency` connecting at a
 * time, each caught up), and the V8 heap in use after a full GC before and after. Needs
 * --expose-gc; the orchestrator forks a fresh process for it, so nothing else lives here.
 */
async function heapRun({ target, prefix, count, warmup, concurrency, timeoutMs, holdMs }) {
  if (typeof globalThis.gc !== 'function') throw new Error('heap.run needs node --expose-gc');
  const tokens = await Promise.all(Array.from({ length: warmup + count }, (_, i) => tokenFor(target, `${prefix}${i}`)));
  const open = async (index) => {
    const { client, events } = newClient({ url: target.url, deviceId: 'bench', token: tokens[index] });
    try {
      await connectSynced(client, timeoutMs);
      return { client };
    } catch (error) {
      await client.close();
      return { failure: { user: `${prefix}${index}`, ...evidence(client, events, error.message) } };
    }
  };
  // Warm-up: the first clients load socket.io-client's lazy parts and compile the paths;
  // that belongs in the baseline, not to the clients measured.
  for (let i = 0; i < warmup; i += 1) {
    const { client } = await open(i);
    await client?.close();
  }
  const measure = async () => {
    await sleep(200); // closed sockets' last callbacks
    globalThis.gc();
    await sleep(50); // finalizers
    globalThis.gc();
    const { heapUsed, rss, external } = process.memoryUsage();
    return { heapUsed, rss, external };
  };
  const before = await measure();
  const clients = [];
  const failures = [];
  const errors = new ErrorTally();
  const startedAt = clock();
  const indices = Array.from({ length: count }, (_, i) => warmup + i);
  await pool(indices, concurrency, async (index) => {
    const result = await open(index);
    if (result.client) clients.push(result.client);
    else {
      errors.add({ code: 'connect' });
      if (failures.length < 5) failures.push(result.failure);
    }
  });
  const connectSeconds = (clock() - startedAt) / 1000;
  await sleep(holdMs); // connected and idle, as an app's clients sit
  const after = await measure();
  const connected = clients.filter((client) => client.state === 'connected').length;
  await Promise.all(clients.map((client) => client.close()));
  return { requested: count, opened: clients.length, connected, connectSeconds, before, after, errors, failures };
}

// ---------------------------------------------------------------------------------- IPC

const ops = {
  'connect.series': connectSeries,
  'reconnect.run': reconnectRun,
  'devices.register': devicesRegister,
  'sends.run': sendsRun,
  'heap.run': heapRun,
};

serveOps(ops);
