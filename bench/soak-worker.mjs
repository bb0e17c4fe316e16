// The soak scenario's load process, forked by bench/soak-scenario.mjs. It holds the clients
// of `pairs` one-to-one conversations (a sender and a receiver socket each, both joined to
// their conversation) and, for as long as asked, keeps a mixed load on the service:
//   sends       open loop at a fixed rate, round-robin over the pairs whose sender is online;
//               every `message` is acked by the socket that got it, as a client does
//   typing      a share of the online senders start typing on each tick
//   reconnects  on each tick a share of all sockets is dropped and reconnects after a
//               short random pause; a reconnected socket joins again and drains its
//               offline queue (get-unacked, ack), so nothing piles up in Redis
//   join/leave  a few online sockets leave their conversation and join it again
// At the end every receiver is online and drained, and the messages stored but never
// received are counted (`missing`, expected 0). IPC as in bench/load-worker.mjs:
//   parent → { id, op, args }      worker → { id, ok: true, result } | { id, ok: false, error }
import { io } from 'socket.io-client';

import { LatencyHistogram, clock } from './lib/stats.mjs';
import { ErrorTally, tokenFor } from './lib/load-common.mjs';
import { serveOps } from './lib/worker-ipc.mjs';

const BODY_PAD = 'x'.repeat(96);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Connects (websocket only, no automatic reconnection) and resolves at `session`. */
function connect(target, client, token, timeoutMs) {
  const socket = io(`${target.url}/v1`, {
    auth: { token, deviceId: client.deviceId },
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
    socket.once('connect_error', (error) => fail(new Error(error.message)));
    socket.once('session', (session) => {
      clearTimeout(timer);
      socket.off('connect_error');
      resolve({ socket, session });
    });
  });
}

/**
 * A request resolving `{ ok, data | error }`; `rate_limited` is retried after retryAfterMs.
 * Failures are counted in `errors`, except those of a socket the bench dropped itself.
 */
function request(socket, event, payload, timeoutMs, errors, attempt = 0) {
  return new Promise((resolve) => {
    socket.timeout(timeoutMs).emit(event, payload, (error, reply) => {
      if (!error && reply?.ok === false && reply.error?.code === 'rate_limited' && attempt < 20) {
        errors.rateLimited += 1;
        const wait = Number(reply.error.details?.retryAfterMs) || 100;
        setTimeout(() => resolve(request(socket, event, payload, timeoutMs, errors, attempt + 1)), wait);
        return;
      }
      const outcome = error
        ? { ok: false, error: { code: socket.connected ? 'timeout' : 'disconnected' } }
        : (reply ?? { ok: false, error: { code: 'empty' } });
      // A request cut short by the bench's own drop of the socket is not the service's error.
      if (!outcome.ok && outcome.error.code === 'disconnected') counts.cutByDrop += 1;
      else if (!outcome.ok) errors.add(outcome.error);
      resolve(outcome);
    });
  });
}

function sentAtOf(message) {
  const text = message?.body;
  if (typeof text !== 'string') return null;
  const time = Number(text.slice(0, text.indexOf('|')));
  return Number.isFinite(time) ? time : null;
}

// ------------------------------------------------------------------------------ state

let target = null;
let timeoutMs = 15_000;
/** Every client: { userId, deviceId, conversationId, role, socket, online }. */
let clients = [];
let pairs = [];
const errors = new ErrorTally();
const counts = {
  sent: 0,
  stored: 0,
  delivered: 0,
  drained: 0,
  acked: 0,
  duplicates: 0,
  typingSent: 0,
  typingReceived: 0,
  reconnects: 0,
  reconnectFailures: 0,
  joinLeaves: 0,
  skippedSenderOffline: 0,
  skippedInFlightCap: 0,
  /** Requests whose socket the bench dropped before the reply (sends among them are resent). */
  cutByDrop: 0,
  resent: 0,
  /** Sockets the service closed (not the bench's drops); they are brought back on the next tick. */
  serverDisconnects: 0,
};
const delivery = new LatencyHistogram();
const reconnectMs = new LatencyHistogram();
/** clientMsgId → { stored, received }; an entry leaves once both are true. */
const tracking = new Map();
let inFlight = 0;

function track(clientMsgId, step) {
  const entry = tracking.get(clientMsgId) ?? { stored: false, received: false };
  entry[step] = true;
  if (entry.stored && entry.received) tracking.delete(clientMsgId);
  else tracking.set(clientMsgId, entry);
}

/**
 * Messages reached `client` (live or from its queue): a receiver counts each once (a
 * redelivery after a drop is a duplicate); every socket acks what it got.
 */
function receive(client, messages, via) {
  const ids = [];
  for (const message of messages) {
    ids.push(message.id);
    if (client.role !== 'receiver') continue;
    if (client.seen.has(message.clientMsgId)) {
      counts.duplicates += 1;
      continue;
    }
    client.seen.add(message.clientMsgId);
    counts[via] += 1;
    track(message.clientMsgId, 'received');
    const sentAt = sentAtOf(message);
    if (via === 'delivered' && sentAt !== null) delivery.record(clock() - sentAt);
  }
  if (ids.length === 0) return Promise.resolve();
  return request(client.socket, 'ack', { messageIds: ids }, timeoutMs, errors).then((reply) => {
    if (reply.ok) counts.acked += ids.length;
  });
}

/** Connects `client`, joins its conversation and drains its offline queue. */
async function bringOnline(client) {
  const { socket, session } = await connect(target, client, await tokenFor(target, client.userId), timeoutMs);
  client.socket = socket;
  socket.on('message', (message) => void receive(client, [message], 'delivered'));
  socket.on('typing', () => (counts.typingReceived += 1));
  socket.on('disconnect', (reason) => {
    if (client.socket !== socket) return;
    client.online = false;
    if (reason !== 'io client disconnect') counts.serverDisconnects += 1;
  });
  client.online = true;
  await request(socket, 'join', { conversationId: client.conversationId }, timeoutMs, errors);
  const limit = session.limits?.maxBatch ?? 100;
  for (let page = 0; page < 1_000 && socket.connected; page += 1) {
    const reply = await request(socket, 'get-unacked', { limit }, timeoutMs, errors);
    if (!reply.ok || reply.data.messages.length === 0) break;
    await receive(client, reply.data.messages, 'drained');
    if (!reply.data.hasMore) break;
  }
}

async function setup(args) {
  target = args.target;
  timeoutMs = args.timeoutMs;
  pairs = args.pairs.map((spec) => {
    const pair = { conversationId: spec.conversationId, next: 0 };
    pair.sender = { ...spec.sender, conversationId: spec.conversationId, role: 'sender', seen: new BoundedSet(0) };
    pair.receiver = {
      ...spec.receiver,
      conversationId: spec.conversationId,
      role: 'receiver',
      seen: new BoundedSet(2_000),
    };
    return pair;
  });
  clients = pairs.flatMap((pair) => [pair.sender, pair.receiver]);
  let next = 0;
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (next < clients.length) await bringOnline(clients[next++]);
    }),
  );
  return { sockets: clients.length };
}

/** A Set that forgets its oldest entries beyond `capacity`. */
class BoundedSet extends Set {
  constructor(capacity) {
    super();
    this.capacity = capacity;
  }

  add(value) {
    super.add(value);
    if (this.size > this.capacity) this.delete(this.values().next().value);
    return this;
  }
}

// -------------------------------------------------------------------------------- run

/** One message; a send cut by a drop is resent with the same clientMsgId once the sender is back, as a client does. */
async function sendOne(pair, runId) {
  const clientMsgId = `${runId}-${pair.index}-${pair.next++}`;
  const sentAt = clock();
  const payload = { conversationId: pair.conversationId, clientMsgId, body: `${sentAt.toFixed(3)}|${BODY_PAD}` };
  counts.sent += 1;
  inFlight += 1;
  try {
    for (let attempt = 0; attempt < 5; attempt += 1) {
      if (attempt > 0) {
        counts.resent += 1;
        const until = clock() + timeoutMs;
        while (!pair.sender.online && clock() < until) await sleep(50);
      }
      const reply = await request(pair.sender.socket, 'send', payload, timeoutMs, errors);
      if (reply.ok) {
        counts.stored += 1;
        track(clientMsgId, 'stored');
        return;
      }
      if (reply.error.code !== 'disconnected') return;
    }
  } finally {
    inFlight -= 1;
  }
}

/** Drops the socket of `client` (if up), waits `pauseMs`, connects it again (retrying once a second). */
async function reconnect(client, pauseMs) {
  client.reconnecting = true;
  client.online = false;
  client.socket?.disconnect();
  await sleep(pauseMs);
  const started = clock();
  try {
    for (let attempt = 0; attempt < 10; attempt += 1) {
      try {
        await bringOnline(client);
        counts.reconnects += 1;
        reconnectMs.record(clock() - started);
        return;
      } catch (error) {
        counts.reconnectFailures += 1;
        errors.add({ code: `reconnect: ${error.message}`.slice(0, 60) });
        await sleep(1_000);
      }
    }
  } finally {
    client.reconnecting = false;
  }
}

function pick(list, count) {
  const copy = list.slice();
  for (let i = 0; i < Math.min(count, copy.length); i += 1) {
    const j = i + Math.floor(Math.random() * (copy.length - i));
    [copy[i], copy[j]] = [copy[j], copy[i]];
  }
  return copy.slice(0, count);
}

async function run(args) {
  const { rate, durationMs, runId, typingEveryMs, typingShare, reconnectEveryMs, reconnectShare } = args;
  const { reconnectPauseMs, joinLeaveEveryMs, joinLeavePerTick, maxInFlight } = args;
  pairs.forEach((pair, index) => (pair.index = index));
  const start = clock();
  const stopAt = start + durationMs;
  const pending = new Set();
  const background = (promise) => {
    pending.add(promise);
    void promise.finally(() => pending.delete(promise));
  };
  /** @param {number} ms @param {() => void} task */
  const every = (ms, task) => {
    const timer = setInterval(task, ms);
    return () => clearInterval(timer);
  };
  const online = (list) => list.filter((client) => client.online && !client.reconnecting);

  const stops = [
    every(typingEveryMs, () => {
      for (const sender of pick(online(pairs.map((pair) => pair.sender)), Math.ceil(pairs.length * typingShare))) {
        counts.typingSent += 1;
        background(
          request(
            sender.socket,
            'typing',
            { conversationId: sender.conversationId, isTyping: true },
            timeoutMs,
            errors,
          ),
        );
      }
    }),
    every(reconnectEveryMs, () => {
      const lost = clients.filter((client) => !client.online && !client.reconnecting);
      for (const client of [...lost, ...pick(online(clients), Math.round(clients.length * reconnectShare))]) {
        background(reconnect(client, Math.random() * reconnectPauseMs));
      }
    }),
    every(joinLeaveEveryMs, () => {
      for (const client of pick(online(clients), joinLeavePerTick)) {
        const { socket, conversationId } = client;
        background(
          request(socket, 'leave', { conversationId }, timeoutMs, errors)
            .then(() => request(socket, 'join', { conversationId }, timeoutMs, errors))
            .then(() => (counts.joinLeaves += 1)),
        );
      }
    }),
  ];

  // Sends: due = elapsed × rate, caught up on each 5 ms tick.
  let due = 0;
  let cursor = 0;
  let maxTickGapMs = 0;
  let lastTick = start;
  while (clock() < stopAt) {
    const now = clock();
    maxTickGapMs = Math.max(maxTickGapMs, now - lastTick);
    lastTick = now;
    const dueNow = Math.floor(((now - start) * rate) / 1000);
    for (; due < dueNow; due += 1) {
      const pair = pairs[cursor++ % pairs.length];
      if (!pair.sender.online) counts.skippedSenderOffline += 1;
      else if (inFlight >= maxInFlight) counts.skippedInFlightCap += 1;
      else void sendOne(pair, runId);
    }
    await sleep(5);
  }
  for (const stop of stops) stop();
  const sendingSeconds = (clock() - start) / 1000;

  // Wind down: the reconnects and requests under way finish, every socket is online again,
  // every receiver drains what is left in its queue; then count what never arrived.
  await Promise.race([Promise.allSettled([...pending]), sleep(timeoutMs + 5_000)]);
  const deadline = clock() + timeoutMs;
  while (inFlight > 0 && clock() < deadline) await sleep(20);
  for (const client of clients.filter((c) => !c.online)) await reconnect(client, 0);
  await sleep(500); // the last live deliveries
  for (const pair of pairs) {
    const client = pair.receiver;
    for (let page = 0; page < 1_000 && client.socket.connected; page += 1) {
      const reply = await request(client.socket, 'get-unacked', { limit: 100 }, timeoutMs, errors);
      if (!reply.ok || reply.data.messages.length === 0) break;
      await receive(client, reply.data.messages, 'drained');
      if (!reply.data.hasMore) break;
    }
  }
  const missing = [...tracking.values()].filter((entry) => entry.stored && !entry.received).length;
  return {
    sendingSeconds,
    sentPerSecond: counts.sent / sendingSeconds,
    maxTickGapMs,
    ...counts,
    missing,
    unansweredSends: inFlight,
    deliveryMs: delivery.encode(),
    reconnectMs: reconnectMs.encode(),
    errors,
  };
}

async function teardown() {
  for (const client of clients) client.socket?.close();
  await sleep(50);
  const closed = clients.length;
  clients = [];
  pairs = [];
  return { closed };
}

// ---------------------------------------------------------------------------------- IPC

const ops = { 'soak.setup': setup, 'soak.run': run, 'soak.teardown': teardown };

serveOps(ops);
