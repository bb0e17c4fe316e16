// Scaffolding for the end-to-end specs of the client SDK (test/e2e/client-*.spec.ts): two
// users in one direct conversation, SDK clients that record what they saw, a paced stream
// of sends, and the exactly-once-in-order checks every scenario ends with.
import { expect } from 'vitest';

import {
  MessagingClient,
  type ClientError,
  type Message,
  type MessagingClientOptions,
  type StateChange,
} from '@messaging-service/client';

import { mintToken } from './clients.js';
import { userId } from './fixtures.js';
import { httpCall } from './http.js';

/** Short backoff, so that a healed network is used again within half a second. */
const FAST_RECONNECT = { minDelayMs: 50, maxDelayMs: 500 } as const;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `check` until it holds; fails after `timeoutMs` with `what` (a function: evaluated then). */
export async function waitFor(
  check: () => boolean | Promise<boolean>,
  what: string | (() => string),
  timeoutMs = 15_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${typeof what === 'string' ? what : what()}`);
    }
    await sleep(20);
  }
}

/** `promise`, or a failure naming `what` (evaluated at the deadline) after `timeoutMs`. */
async function withDeadline<T>(promise: Promise<T>, timeoutMs: number, what: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms: ${what()}`)), timeoutMs);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** An SDK client with everything it emitted recorded. */
export interface RecordingClient {
  client: MessagingClient;
  userId: string;
  received: Message[];
  states: StateChange[];
  errors: ClientError[];
  /** How many times the token provider was called (0 with a string token). */
  tokenCalls(): number;
  /** One line for failure messages: state, metrics, the last states and errors. */
  describe(): string;
}

export type RecordingClientOptions = Partial<Omit<MessagingClientOptions, 'url'>> & {
  /** Lifetime of the tokens the default provider mints (default one hour). */
  tokenTtlSec?: number;
};

/** Clients made for one test, closed together. */
export class ClientPool {
  private readonly open: MessagingClient[] = [];

  /**
   * A client of `user` on `url` (not connected yet), with a token provider minting fresh
   * tokens and the short reconnect backoff, unless `options` says otherwise.
   */
  create(url: string, user: string, options: RecordingClientOptions = {}): RecordingClient {
    const { tokenTtlSec, ...clientOptions } = options;
    let tokenCalls = 0;
    const client = new MessagingClient({
      url,
      deviceId: 'phone',
      token: () => {
        tokenCalls += 1;
        return mintToken(user, { ttlSec: tokenTtlSec ?? 3600 });
      },
      reconnect: FAST_RECONNECT,
      ...clientOptions,
    });
    this.open.push(client);
    const recording: RecordingClient = {
      client,
      userId: user,
      received: [],
      states: [],
      errors: [],
      tokenCalls: () => tokenCalls,
      describe: () =>
        JSON.stringify({
          user,
          state: client.state,
          metrics: client.metrics(),
          lastStates: recording.states.slice(-5),
          lastErrors: recording.errors.slice(-5).map((error) => `${error.code}: ${error.message}`),
        }),
    };
    client.on('message', (message) => void recording.received.push(message));
    client.on('state', (change) => void recording.states.push(change));
    client.on('error', (error) => void recording.errors.push(error));
    return recording;
  }

  async closeAll(): Promise<void> {
    await Promise.allSettled(this.open.splice(0).map((client) => client.close()));
  }
}

/** Creates a direct conversation of `creator` and `other` over REST; returns its id. */
async function createDirectConversation(baseUrl: string, creator: string, other: string): Promise<string> {
  const reply = await httpCall(baseUrl, 'POST', '/v1/conversations', await mintToken(creator), {
    kind: 'direct',
    memberIds: [other],
  });
  expect(reply.status, `create conversation: ${JSON.stringify(reply.body)}`).toBe(201);
  return reply.body.data.id as string;
}

/** Every message of the conversation as stored, in seq order, read over REST as `user`. */
export async function storedMessages(baseUrl: string, user: string, conversationId: string): Promise<Message[]> {
  const token = await mintToken(user);
  const all: Message[] = [];
  for (let afterSeq = 0; ;) {
    const reply = await httpCall(
      baseUrl,
      'GET',
      `/v1/conversations/${conversationId}/messages?afterSeq=${afterSeq}&limit=100`,
      token,
    );
    expect(reply.status, `history: ${JSON.stringify(reply.body)}`).toBe(200);
    const page = reply.body.data as Message[];
    all.push(...page);
    if (!reply.body.hasMore || page.length === 0) return all;
    afterSeq = Math.max(...page.map((message) => message.seq));
  }
}

/** Two users with one direct conversation and one client each (A sends, B receives). */
export interface DirectChat {
  /** Where the conversation was created (REST checks go there unless told otherwise). */
  serviceUrl: string;
  conversationId: string;
  a: RecordingClient;
  b: RecordingClient;
  pool: ClientPool;
}

/**
 * Users a and b, their direct conversation (created over REST on `serviceUrl`), and a
 * connected client for each on `clientUrl` (default `serviceUrl`: a proxy may sit between).
 */
export async function startDirectChat(options: {
  serviceUrl: string;
  clientUrl?: string;
  clientOptions?: RecordingClientOptions;
}): Promise<DirectChat> {
  const [alice, bob] = [userId('a'), userId('b')];
  const conversationId = await createDirectConversation(options.serviceUrl, alice, bob);
  const pool = new ClientPool();
  const url = options.clientUrl ?? options.serviceUrl;
  const a = pool.create(url, alice, { deviceId: 'phone-a', ...options.clientOptions });
  const b = pool.create(url, bob, { deviceId: 'phone-b', ...options.clientOptions });
  try {
    await Promise.all([a.client.connect(), b.client.connect()]);
  } catch (error) {
    await pool.closeAll();
    throw error;
  }
  return { serviceUrl: options.serviceUrl, conversationId, a, b, pool };
}

/** A paced stream of sends from one client; see sendStream(). */
export interface SendStream {
  /** The clientMsgIds, in the order send() was called. */
  clientMsgIds: string[];
  /** send() calls made so far. */
  called(): number;
  /** Sends resolved so far. */
  resolved(): number;
  /** Every send's message in call order, once all resolved (rejects on the first rejection). */
  all: Promise<Message[]>;
}

/**
 * Calls `send` `count` times, `batch` calls every `intervalMs` (not waiting for replies),
 * with clientMsgIds `<prefix>-0000`, `<prefix>-0001`…
 */
export function sendStream(
  client: MessagingClient,
  conversationId: string,
  options: { count: number; batch: number; intervalMs: number; prefix?: string },
): SendStream {
  const prefix = options.prefix ?? `s${Math.random().toString(36).slice(2, 8)}`;
  const clientMsgIds = Array.from({ length: options.count }, (_, i) => `${prefix}-${String(i).padStart(4, '0')}`);
  let called = 0;
  let resolved = 0;
  const all = (async () => {
    const sends: Promise<Message>[] = [];
    for (let start = 0; start < options.count; start += options.batch) {
      if (start > 0) await sleep(options.intervalMs);
      for (let i = start; i < Math.min(options.count, start + options.batch); i += 1) {
        const sent = client.send(conversationId, { body: `#${i}` }, { clientMsgId: clientMsgIds[i] });
        called += 1;
        sends.push(sent);
        sent.then(
          () => void (resolved += 1),
          () => undefined, // reported through `all`
        );
      }
    }
    return Promise.all(sends);
  })();
  all.catch(() => undefined); // awaited by the test; this only avoids an unhandled rejection meanwhile
  return { clientMsgIds, called: () => called, resolved: () => resolved, all };
}

/** Sends of the stream on the wire without a reply yet (first transmissions only). */
export function sendsInFlight(client: MessagingClient, stream: SendStream): number {
  return client.metrics().sent - stream.resolved();
}

/** Lists the values that occur more than once. */
function repeated<T>(values: T[]): T[] {
  const seen = new Set<T>();
  const twice = new Set<T>();
  for (const value of values) (seen.has(value) ? twice : seen).add(value);
  return [...twice];
}

/** The seqs from 1 to `count` missing from `seqs` (at most 20, for messages). */
function missingSeqs(seqs: number[], count: number): number[] {
  const have = new Set(seqs);
  const missing: number[] = [];
  for (let seq = 1; seq <= count && missing.length < 20; seq += 1) if (!have.has(seq)) missing.push(seq);
  return missing;
}

/**
 * Every stream's `perSender` sends resolved, each with its own message, in the order
 * send() was called (strictly increasing seqs). Returns each sender's messages.
 */
export async function expectSendsResolvedInOrder(
  senders: Iterable<readonly [RecordingClient, SendStream]>,
  perSender: number,
  nameOf: (client: RecordingClient) => string | undefined,
): Promise<Map<RecordingClient, Message[]>> {
  const sent = new Map<RecordingClient, Message[]>();
  for (const [device, stream] of senders) {
    await waitFor(
      () => stream.resolved() === perSender,
      () => `${perSender} sends resolved, ${stream.resolved()} are: ${device.describe()}`,
      30_000,
    );
    const messages = await stream.all;
    expect(
      messages.map((m) => m.clientMsgId),
      'each send resolves with its own message',
    ).toEqual(stream.clientMsgIds);
    const seqs = messages.map((m) => m.seq);
    expect(
      seqs.filter((seq, i) => i > 0 && seq <= seqs[i - 1]),
      `${nameOf(device)}: seqs follow the order send() was called`,
    ).toEqual([]);
    sent.set(device, messages);
  }
  return sent;
}

/**
 * What a receiving device of a multi-sender drill must end with: `expected` messages,
 * each once, in strictly increasing seq, none of its own (`own`: the seqs it sent), each
 * the stored message of its seq, and its client never closed.
 */
export function expectReceivedOnceInOrder(
  device: RecordingClient,
  got: readonly Message[],
  name: string | undefined,
  {
    expected,
    own,
    storedIdBySeq,
  }: { expected: number; own: ReadonlySet<number>; storedIdBySeq: ReadonlyMap<number, string> },
): void {
  expect(got.length, `${name}: messages received`).toBe(expected);
  expect(new Set(got.map((m) => m.id)).size, `${name}: distinct ids received`).toBe(got.length);
  const seqs = got.map((m) => m.seq);
  expect(
    seqs.filter((seq, i) => i > 0 && seq <= seqs[i - 1]),
    `${name}: seqs out of order`,
  ).toEqual([]);
  expect(
    seqs.filter((seq) => own.has(seq)),
    `${name}: its own messages`,
  ).toEqual([]);
  expect(
    got.filter((m) => storedIdBySeq.get(m.seq) !== m.id).map((m) => m.seq),
    `${name}: messages that differ from the stored ones`,
  ).toEqual([]);
  expect(closedStates(device), `${name} never closed`).toEqual([]);
}

/**
 * The outcome every scenario must reach: every one of A's sends resolved (within
 * `sendTimeoutMs`); B's 'message' listener saw each of them exactly once, by id and by
 * clientMsgId, in strictly increasing seq without gaps; the service stored each once;
 * A's outbox is empty. Returns A's messages in call order.
 */
export async function expectAllDeliveredOnceInOrder(
  chat: DirectChat,
  stream: SendStream,
  options: { sendsMs?: number; deliveryMs?: number; restUrl?: string } = {},
): Promise<Message[]> {
  const count = stream.clientMsgIds.length;
  const sent = await withDeadline(
    stream.all,
    options.sendsMs ?? 60_000,
    () => `only ${stream.resolved()} of ${count} sends resolved; A: ${chat.a.describe()}`,
  );

  // A's side: one stored message per clientMsgId, seqs in the order send() was called (SDK.md "Sending").
  expect(
    sent.map((message) => message.clientMsgId),
    'each send resolves with its own message',
  ).toEqual(stream.clientMsgIds);
  expect(repeated(sent.map((message) => message.id)), 'two sends resolved with the same message id').toEqual([]);
  expect(
    sent.map((message) => message.seq),
    'A: seqs follow the order send() was called (1..count, no gap)',
  ).toEqual(Array.from({ length: count }, (_, i) => i + 1));

  // B's side.
  const received = () => chat.b.received.filter((message) => message.conversationId === chat.conversationId);
  await waitFor(
    () => received().length >= count,
    () =>
      `B to receive ${count} messages: it has ${received().length}, missing seqs ${JSON.stringify(
        missingSeqs(
          received().map((message) => message.seq),
          count,
        ),
      )}; B: ${chat.b.describe()}`,
    options.deliveryMs ?? 30_000,
  );
  // A late duplicate would show up within a few acks' time.
  await sleep(300);
  const got = received();
  expect(repeated(got.map((message) => message.id)), 'B saw these message ids more than once').toEqual([]);
  expect(repeated(got.map((message) => message.clientMsgId)), 'B saw these clientMsgIds more than once').toEqual([]);
  expect(got.length, 'B received exactly one message per send').toBe(count);
  expect(
    got.map((message) => message.seq),
    'B: seqs strictly increasing from 1 without gaps',
  ).toEqual(Array.from({ length: count }, (_, i) => i + 1));
  const byClientMsgId = new Map(sent.map((message) => [message.clientMsgId, message.id]));
  expect(
    got.filter((message) => byClientMsgId.get(message.clientMsgId) !== message.id).map((message) => message.seq),
    'B: messages whose id differs from the one A got for the same clientMsgId',
  ).toEqual([]);

  // The service's side: stored once each.
  const stored = await storedMessages(options.restUrl ?? chat.serviceUrl, chat.a.userId, chat.conversationId);
  expect(stored.length, 'messages stored in the conversation').toBe(count);
  expect(new Set(stored.map((message) => message.clientMsgId)), 'stored clientMsgIds').toEqual(
    new Set(stream.clientMsgIds),
  );

  expect(await chat.a.client.outbox(), "A's outbox once every send resolved").toEqual([]);
  return sent;
}

/** Whether the client ever went to 'closed' (it must not while the test runs). */
export function closedStates(client: RecordingClient): StateChange[] {
  return client.states.filter((change) => change.state === 'closed');
}
