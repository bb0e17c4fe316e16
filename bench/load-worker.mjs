// A load-generator process, forked by bench/run.mjs. It holds socket.io-client sockets and
// runs one step of a scenario per request from the orchestrator over IPC:
//   parent → { id, op, args }      worker → { id, ok: true, result } | { id, ok: false, error }
// Ops keep their sockets in module state between steps (setup, run, teardown), so the
// orchestrator can line up every worker before it starts the clock.
//
// Targets: { kind: 'service', url, secret } (JWT per user, minted here) or
// { kind: 'bare', url } (the bare relay: auth names the user and the rooms to join).
import { io } from 'socket.io-client';

import { closedLoop, pool } from './lib/closed-loop.mjs';
import { ErrorTally, tokenFor } from './lib/load-common.mjs';
import { LatencyHistogram, clock } from './lib/stats.mjs';
import { serveOps } from './lib/worker-ipc.mjs';

const BODY_PAD = 'x'.repeat(96);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------------- sockets

/**
 * Connects one client (websocket transport only, no reconnection) and resolves once the
 * server's `session` arrived, i.e. the connection is authenticated and fully set up.
 */
function connect(target, client, token, timeoutMs = 30_000) {
  const auth =
    target.kind === 'service'
      ? { token, deviceId: client.deviceId }
      : { userId: client.userId, deviceId: client.deviceId, rooms: client.rooms ?? [] };
  const socket = io(`${target.url}/v1`, {
    auth,
    transports: ['websocket'],
    forceNew: true,
    reconnection: false,
    timeout: timeoutMs,
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => fail(new Error(`no session within ${timeoutMs} ms`)), timeoutMs);
    /** @param {Error} error */
    const fail = (error) => {
      clearTimeout(timer);
      socket.close();
      reject(error);
    };
    socket.once('connect_error', (error) => fail(new Error(`connect_error: ${error.message}`)));
    socket.once('session', (session) => {
      clearTimeout(timer);
      socket.off('connect_error');
      resolve({ socket, session });
    });
  });
}

/** Connects every client, to its own `client.target` where it has one, else to `target`. */
async function connectAll(target, clients, concurrency) {
  const targetOf = (client) => client.target ?? target;
  const tokens = await Promise.all(clients.map((client) => tokenFor(targetOf(client), client.userId)));
  return pool(
    clients,
    concurrency,
    async (client, index) => (await connect(targetOf(client), client, tokens[index])).socket,
  );
}

async function closeAll(sockets) {
  for (const socket of sockets) socket.close();
  await sleep(50);
}

/** A request with a timeout, resolving `{ ok, data | error }` (timeouts become ok: false). */
function request(socket, event, payload, timeoutMs, tally) {
  return new Promise((resolve) => {
    emitRetrying(socket, event, payload, timeoutMs, tally, (error, reply) => {
      if (error) resolve({ ok: false, error: { code: 'timeout', message: `${event}: no reply in ${timeoutMs} ms` } });
      else resolve(reply ?? { ok: false, error: { code: 'empty', message: 'empty reply' } });
    });
  });
}

const MAX_RATE_LIMIT_RETRIES = 50;

/**
 * emit with an ack and a timeout, as a well-behaved client does it: a `rate_limited`
 * reply is retried after its retryAfterMs (sends are idempotent by clientMsgId).
 * `callback(error, reply)` gets the final outcome.
 */
function emitRetrying(socket, event, payload, timeoutMs, tally, callback, attempt = 0) {
  socket.timeout(timeoutMs).emit(event, payload, (error, reply) => {
    if (!error && reply?.ok === false && reply.error?.code === 'rate_limited' && attempt < MAX_RATE_LIMIT_RETRIES) {
      tally.rateLimited += 1;
      const wait = Number(reply.error.details?.retryAfterMs) || 100;
      setTimeout(() => emitRetrying(socket, event, payload, timeoutMs, tally, callback, attempt + 1), wait);
      return;
    }
    callback(error, reply);
  });
}

/**
 * emitRetrying for the load's own requests: a failure (timeout or error reply) is counted
 * in `errors` and reported to `onFail`; a success goes to `onOk(reply)`.
 */
function emitCounted(socket, event, payload, timeoutMs, errors, onOk, onFail = () => undefined) {
  emitRetrying(socket, event, payload, timeoutMs, errors, (error, reply) => {
    if (error || !reply?.ok) {
      errors.add(error ? { code: 'timeout' } : reply?.error);
      onFail();
      return;
    }
    onOk(reply);
  });
}

/** Sends one bench message; its body carries `sentAt`, for latency at the receiver. */
function sendTimed(socket, conversationId, clientMsgId, sentAt, timeoutMs, errors, onOk, onFail) {
  emitCounted(socket, 'send', { conversationId, clientMsgId, body: bodyAt(sentAt) }, timeoutMs, errors, onOk, onFail);
}

function bodyAt(time) {
  return `${time.toFixed(3)}|${BODY_PAD}`;
}

function sentAtOf(message) {
  const text = message?.body;
  if (typeof text !== 'string') return null;
  const time = Number(text.slice(0, text.indexOf('|')));
  return Number.isFinite(time) ? time : null;
}

// ---------------------------------------------------------------------- one-to-one pairs

/**
 * Watches the order of live messages per pair: each conversation has one sender here, so
 * its receiver should see seq ascending; `notAscending` counts messages whose seq was not
 * above the highest seq that receiver had already got.
 */
class SeqOrder {
  notAscending = 0;
  highest = new Map();

  received(pair, message) {
    const highest = this.highest.get(pair) ?? -Infinity;
    if (typeof message?.seq !== 'number') return;
    if (message.seq <= highest) this.notAscending += 1;
    else this.highest.set(pair, message.seq);
  }
}

/**
 * Pairs of { conversationId, sender, receiver } with live sockets (throughput, latency).
 * A spec may name the instance each side connects to (`senderTarget`, `receiverTarget`:
 * the two-instances scenario); otherwise both connect to `target`.
 */
let pairs = [];

async function pairsSetup({ target, pairs: specs, concurrency = 32 }) {
  const clients = specs.flatMap((spec) => [
    { ...spec.sender, rooms: [spec.conversationId], target: spec.senderTarget },
    { ...spec.receiver, rooms: [spec.conversationId], target: spec.receiverTarget },
  ]);
  const sockets = await connectAll(target, clients, concurrency);
  pairs = specs.map((spec, index) => ({
    ...spec,
    index,
    senderSocket: sockets[index * 2],
    receiverSocket: sockets[index * 2 + 1],
  }));
  return { pairs: pairs.length, sockets: sockets.length };
}

async function pairsTeardown() {
  await closeAll(pairs.flatMap((pair) => [pair.senderSocket, pair.receiverSocket]));
  const closed = pairs.length;
  pairs = [];
  return { closed };
}

/**
 * Closed loop: each sender keeps `window` messages in flight, where a message stays in
 * flight until all three steps completed: the send was acked (stored), the receiver got
 * the live `message` (delivered), and the receiver's `ack` was answered (acked). Counts
 * messages whose last step completed inside [start + warmup, start + duration].
 */
async function pairsThroughput({ window, durationMs, warmupMs, maxMessages, timeoutMs, runId }) {
  const start = clock();
  const measureFrom = start + warmupMs;
  const stopAt = start + durationMs;
  const inWindow = (time) => time >= measureFrom && time <= stopAt;
  const errors = new ErrorTally();
  const totals = { sent: 0, stored: 0, delivered: 0, acked: 0, completed: 0 };
  const windowed = { stored: 0, delivered: 0, acked: 0, completed: 0 };
  const completion = new LatencyHistogram();
  const order = new SeqOrder();

  const settle = (pair, record, failed) => {
    if (record.done) return;
    record.done = true;
    pair.records.delete(record.clientMsgId);
    if (!failed) {
      const now = clock();
      totals.completed += 1;
      if (inWindow(now)) {
        windowed.completed += 1;
        completion.record(now - record.sentAt);
      }
    }
    record.release();
  };

  /** Marks one step of a message done (stored, delivered, acked) and counts it. */
  const count = (record, step) => {
    record[step] = true;
    totals[step] += 1;
    if (inWindow(clock())) windowed[step] += 1;
  };

  /** Counts a step; the message is done once it is stored and acked. */
  const stepDone = (pair, record, step) => {
    count(record, step);
    if (record.stored && record.acked) settle(pair, record, false);
  };

  const sendOne = (pair, release) => {
    const sentAt = clock();
    const clientMsgId = `${runId}-${pair.index}-${pair.next++}`;
    const record = { clientMsgId, sentAt, stored: false, delivered: false, acked: false, done: false, release };
    pair.records.set(clientMsgId, record);
    totals.sent += 1;
    sendTimed(
      pair.senderSocket,
      pair.conversationId,
      clientMsgId,
      sentAt,
      timeoutMs,
      errors,
      () => stepDone(pair, record, 'stored'),
      () => settle(pair, record, true),
    );
  };

  for (const pair of pairs) {
    pair.records = new Map();
    pair.next = 0;
    pair.receiverSocket.off('message');
    pair.receiverSocket.on('message', (message) => {
      order.received(pair, message);
      const record = pair.records.get(message.clientMsgId);
      if (!record || record.delivered) return;
      count(record, 'delivered');
      emitCounted(
        pair.receiverSocket,
        'ack',
        { messageIds: [message.id] },
        timeoutMs,
        errors,
        () => stepDone(pair, record, 'acked'),
        () => settle(pair, record, true),
      );
    });
  }
  // Each pair is a lane; the stragglers after stopAt get the request timeout (and a second).
  const { stuck } = await closedLoop({
    lanes: pairs,
    window,
    stopAt,
    limit: maxMessages,
    drainMs: timeoutMs + 1_000,
    now: clock,
    start: sendOne,
  });
  for (const pair of pairs) pair.receiverSocket.off('message');
  return {
    windowSeconds: (stopAt - measureFrom) / 1000,
    windowed,
    totals,
    stuck,
    notAscending: order.notAscending,
    errors,
    completion: completion.encode(),
  };
}

/**
 * Open loop at a fixed offered rate (this worker's share), spread round-robin over its
 * pairs. Latency = receipt of the live `message` at the receiver − the moment the sender
 * emitted `send` (carried in the body, on the machine's shared clock). Receivers ack
 * every message, as a client does.
 */
async function pairsLatency({ rate, durationMs, warmupMs, timeoutMs, runId }) {
  const start = clock();
  const measureFrom = start + warmupMs;
  const stopAt = start + durationMs;
  const delivery = new LatencyHistogram();
  const bySecond = [];
  const stored = new LatencyHistogram();
  const errors = new ErrorTally();
  let sent = 0;
  let received = 0;
  let receivedBeforeStop = 0;
  let maxTickGapMs = 0;
  let lastTick = start;
  const order = new SeqOrder();

  for (const pair of pairs) {
    pair.receiverSocket.off('message');
    pair.receiverSocket.on('message', (message) => {
      const now = clock();
      order.received(pair, message);
      const sentAt = sentAtOf(message);
      received += 1;
      if (now <= stopAt) receivedBeforeStop += 1;
      if (sentAt !== null && sentAt >= measureFrom && sentAt <= stopAt) {
        delivery.record(now - sentAt);
        const second = Math.floor((sentAt - start) / 1000);
        (bySecond[second] ??= new LatencyHistogram()).record(now - sentAt);
      }
      emitCounted(pair.receiverSocket, 'ack', { messageIds: [message.id] }, timeoutMs, errors, () => undefined);
    });
  }

  const sendOne = (pair) => {
    const sentAt = clock();
    const clientMsgId = `${runId}-${pair.index}-${sent}`;
    sent += 1;
    sendTimed(pair.senderSocket, pair.conversationId, clientMsgId, sentAt, timeoutMs, errors, () => {
      if (sentAt >= measureFrom) stored.record(clock() - sentAt);
    });
  };

  await new Promise((resolve) => {
    const tick = () => {
      const now = clock();
      maxTickGapMs = Math.max(maxTickGapMs, now - lastTick);
      lastTick = now;
      if (now >= stopAt) {
        resolve();
        return;
      }
      const due = Math.floor(((now - start) * rate) / 1000);
      while (sent < due) sendOne(pairs[sent % pairs.length]);
      setTimeout(tick, 1);
    };
    tick();
  });
  // Let the last messages arrive (bounded).
  const deadline = clock() + Math.min(timeoutMs, 5_000);
  while (received < sent && clock() < deadline) await sleep(20);
  for (const pair of pairs) pair.receiverSocket.off('message');
  return {
    sent,
    received,
    receivedBeforeStop,
    offeredPerSecond: rate,
    achievedPerSecond: sent / (durationMs / 1000),
    maxTickGapMs,
    notAscending: order.notAscending,
    delivery: delivery.encode(),
    bySecond: Array.from(bySecond, (histogram) => {
      if (!histogram) return null;
      const { p50, p99, max } = histogram.summary();
      return { p50, p99, max };
    }),
    stored: stored.encode(),
    errors,
  };
}

// ---------------------------------------------------------------------- idle connections

let idleSockets = [];

/** Opens `count` authenticated sockets, one user each; resolves once every `session` came. */
async function connectionsOpen({ target, prefix, from, count, concurrency }) {
  const clients = Array.from({ length: count }, (_, i) => ({ userId: `${prefix}${from + i}`, deviceId: 'd1' }));
  const tokens = await Promise.all(clients.map((client) => tokenFor(target, client.userId)));
  const errors = new ErrorTally();
  const startedAt = clock();
  const sockets = await pool(clients, concurrency, async (client, index) => {
    try {
      return (await connect(target, client, tokens[index])).socket;
    } catch (error) {
      errors.add({ code: error.message.slice(0, 60) });
      return null;
    }
  });
  const finishedAt = clock();
  idleSockets = sockets.filter(Boolean);
  return { opened: idleSockets.length, startedAt, finishedAt, errors };
}

async function connectionsClose() {
  const closed = idleSockets.length;
  await closeAll(idleSockets);
  idleSockets = [];
  return { closed };
}

// ----------------------------------------------------------------------------- drain

/**
 * Offline drain: the receiving device connects once (so it is known), goes offline; the
 * sender stores `count` messages (window in flight); then the device connects and pages
 * through get-unacked (limit = session.limits.maxBatch), acking each page.
 */
async function drainRun({ target, conversationId, sender, receiver, count, window, timeoutMs, runId }) {
  const rooms = [conversationId];
  const receiverToken = await tokenFor(target, receiver.userId);
  const first = await connect(target, { ...receiver, rooms }, receiverToken);
  first.socket.close();
  await sleep(200); // let the server see the disconnect before messages are sent

  const { socket: senderSocket } = await connect(target, { ...sender, rooms }, await tokenFor(target, sender.userId));
  const errors = new ErrorTally();
  const fillStart = clock();
  let stored = 0;
  await closedLoop({
    lanes: [senderSocket],
    window,
    limit: count,
    start: (socket, release, seq) => {
      sendTimed(
        socket,
        conversationId,
        `${runId}-drain-${seq}`,
        clock(),
        timeoutMs,
        errors,
        () => {
          stored += 1;
          release();
        },
        release,
      );
    },
  });
  const fillSeconds = (clock() - fillStart) / 1000;
  senderSocket.close();
  await sleep(200);

  // The clock runs from the connect call to the reply to the ack that empties the queue.
  const connectAt = clock();
  const { socket, session } = await connect(target, { ...receiver, rooms }, receiverToken);
  const sessionAt = clock();
  const maxBatch = session.limits?.maxBatch ?? 100;
  const seen = new Set();
  let pages = 0;
  let lastSeq = 0;
  let inOrder = true;
  let drainedAt = null;
  for (let guard = 0; guard < Math.ceil(count / maxBatch) * 3 + 10; guard += 1) {
    const page = await request(socket, 'get-unacked', { limit: maxBatch }, timeoutMs, errors);
    if (!page.ok) {
      errors.add(page.error);
      break;
    }
    const messages = page.data.messages;
    if (messages.length === 0) {
      drainedAt = clock();
      break;
    }
    pages += 1;
    for (const message of messages) {
      if (message.seq <= lastSeq) inOrder = false;
      lastSeq = message.seq;
      seen.add(message.id);
    }
    const acked = await request(
      socket,
      'ack',
      { messageIds: messages.map((message) => message.id) },
      timeoutMs,
      errors,
    );
    if (!acked.ok) {
      errors.add(acked.error);
      break;
    }
    if (!page.data.hasMore) {
      drainedAt = clock();
      break;
    }
  }
  // Outside the timed part: the queue must now be empty.
  const check = await request(socket, 'get-unacked', { limit: maxBatch }, timeoutMs, errors);
  socket.close();
  return {
    count,
    stored,
    fillSeconds,
    fillPerSecond: stored / fillSeconds,
    sessionUnacked: session.unacked,
    maxBatch,
    connectSeconds: (sessionAt - connectAt) / 1000,
    drainSeconds: drainedAt === null ? null : (drainedAt - connectAt) / 1000,
    pages,
    received: seen.size,
    inOrder,
    leftAfter: check.ok ? check.data.messages.length : null,
    errors,
  };
}

// ------------------------------------------------------------------------------ fan-out

let fan = { sender: null, receivers: [] };

async function fanoutSetup({ target, conversationId, sender, receivers, concurrency = 32 }) {
  const rooms = [conversationId];
  const clients = receivers.map((receiver) => ({ ...receiver, rooms }));
  const sockets = await connectAll(target, clients, concurrency);
  fan = { conversationId, sender: null, receivers: sockets };
  if (sender) {
    fan.sender = (await connect(target, { ...sender, rooms }, await tokenFor(target, sender.userId))).socket;
  }
  return { receivers: sockets.length, sender: Boolean(sender) };
}

async function fanoutTeardown() {
  await closeAll([...fan.receivers, ...(fan.sender ? [fan.sender] : [])]);
  fan = { sender: null, receivers: [] };
  return {};
}

/**
 * The sender (in one worker) keeps `window` messages in flight, where a message stays in
 * flight until its send was acked and every receiver of the sender's own worker got it
 * (so the relay cannot run ahead of its readers). Every worker counts the deliveries its
 * receivers got inside [start + warmup, start + duration].
 */
async function fanoutRun({ window, durationMs, warmupMs, maxMessages, timeoutMs, runId }) {
  const start = clock();
  const measureFrom = start + warmupMs;
  const stopAt = start + durationMs;
  const localReceivers = fan.receivers.length;
  const records = new Map();
  const latency = new LatencyHistogram();
  const errors = new ErrorTally();
  let deliveries = 0;
  let deliveriesInWindow = 0;
  let stored = 0;

  const release = (record) => {
    if (record.done) return;
    record.done = true;
    records.delete(record.clientMsgId);
    record.release();
  };
  const maybeRelease = (record) => {
    if (record.stored && record.received >= localReceivers) release(record);
  };
  const sendOne = (sender, releaseSlot, seq) => {
    const sentAt = clock();
    const clientMsgId = `${runId}-fan-${seq}`;
    const record = { clientMsgId, stored: false, received: 0, done: false, release: releaseSlot };
    records.set(clientMsgId, record);
    sendTimed(
      sender,
      fan.conversationId,
      clientMsgId,
      sentAt,
      timeoutMs,
      errors,
      () => {
        stored += 1;
        record.stored = true;
        maybeRelease(record);
      },
      () => release(record),
    );
  };

  for (const socket of fan.receivers) {
    socket.off('message');
    socket.on('message', (message) => {
      const now = clock();
      deliveries += 1;
      if (now >= measureFrom && now <= stopAt) {
        deliveriesInWindow += 1;
        const sentAt = sentAtOf(message);
        if (sentAt !== null) latency.record(now - sentAt);
      }
      const record = records.get(message.clientMsgId);
      if (record) {
        record.received += 1;
        maybeRelease(record);
      }
    });
  }
  // One lane, the sender (in one worker only; the others just count for the measured
  // stretch). A window stuck on a lost delivery would stall it; the time bound ends it anyway.
  const { started: sent, stuck } = await closedLoop({
    lanes: fan.sender ? [fan.sender] : [],
    window,
    stopAt,
    limit: maxMessages,
    drainMs: Math.min(timeoutMs, 5_000),
    now: clock,
    start: sendOne,
  });
  for (const socket of fan.receivers) socket.off('message');
  return {
    windowSeconds: (stopAt - measureFrom) / 1000,
    receivers: localReceivers,
    deliveries,
    deliveriesInWindow,
    sent,
    stored,
    stuck,
    latency: latency.encode(),
    errors,
  };
}

// ---------------------------------------------------------------------------------- IPC

const ops = {
  'pairs.setup': pairsSetup,
  'pairs.throughput': pairsThroughput,
  'pairs.latency': pairsLatency,
  'pairs.teardown': pairsTeardown,
  'connections.open': connectionsOpen,
  'connections.close': connectionsClose,
  'drain.run': drainRun,
  'fanout.setup': fanoutSetup,
  'fanout.run': fanoutRun,
  'fanout.teardown': fanoutTeardown,
};

serveOps(ops);
