import { randomUUID } from 'node:crypto';

import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { ErrorCode } from '../../src/common/app-error.js';
import { RealtimeService } from '../../src/realtime/realtime.service.js';
import type { SendData, WireMessage } from '@messaging-service/client/protocol';
import { startTestApp, type TestApp } from '../support/app.js';
import { connect, dataOf, mintToken, type ClientSocket, type TestClient } from '../support/clients.js';
import { createConversation, userId } from '../support/fixtures.js';

/** The client events of the contract (PROTOCOL.md section 1). */
const CONTRACT_EVENTS = ['join', 'leave', 'send', 'typing', 'ack', 'get-unacked', 'read', 'history', 'auth', 'ping'];
/** Names socket.io-client refuses to emit (and the parser refuses to decode). */
const RESERVED_EVENTS = new Set([
  'connect',
  'connect_error',
  'disconnect',
  'disconnecting',
  'newListener',
  'removeListener',
]);
/** Every payload key any client event uses. */
const PAYLOAD_KEYS = [
  'conversationId',
  'clientMsgId',
  'body',
  'ciphertext',
  'contentType',
  'isTyping',
  'messageIds',
  'limit',
  'seq',
  'beforeSeq',
  'afterSeq',
  'token',
  't',
];
const CONTRACT_CODES = new Set<string>(Object.values(ErrorCode));
/**
 * Codes a request may be answered with while PostgreSQL and Redis are up: anything a
 * client sends is either served or refused for a reason; `internal` would mean an
 * unexpected throw on client input, and `session_replaced` is never a reply.
 */
const REQUEST_CODES = new Set<string>(
  [...CONTRACT_CODES].filter(
    (code) => code !== ErrorCode.Internal && code !== ErrorCode.Unavailable && code !== ErrorCode.SessionReplaced,
  ),
);
/** Room left under the transport's buffer limit for the frame's own envelope. */
const FRAME_MARGIN_BYTES = 4 * 1024;

/** The payloads of the `error` events a client got so far. */
const errorsOf = (c: TestClient) => c.events.filter((e) => e.event === 'error').map((e) => e.payload);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Fails unless `reply` is exactly `{ ok: true, data }` or `{ ok: false, error: { code, message, details? } }`. */
function expectWellFormedReply(reply: unknown, what: string): void {
  expect(isRecord(reply), `${what}: reply is an object`).toBe(true);
  const r = reply as Record<string, unknown>;
  if (r.ok === true) {
    expect(Object.keys(r).sort(), what).toEqual(['data', 'ok']);
    expect(isRecord(r.data), `${what}: data is an object`).toBe(true);
    return;
  }
  expect(r.ok, `${what}: ok is true or false`).toBe(false);
  expect(Object.keys(r).sort(), what).toEqual(['error', 'ok']);
  expectWellFormedError(r.error, what, ['code', 'message', 'details']);
}

function expectWellFormedError(error: unknown, what: string, allowedKeys: string[]): void {
  expect(isRecord(error), `${what}: error is an object`).toBe(true);
  const e = error as Record<string, unknown>;
  for (const key of Object.keys(e)) expect(allowedKeys, `${what}: unexpected error key`).toContain(key);
  expect(CONTRACT_CODES.has(e.code as string), `${what}: code ${String(e.code)} is a contract code`).toBe(true);
  expect(REQUEST_CODES.has(e.code as string), `${what}: ${JSON.stringify(e)}`).toBe(true);
  expect(typeof e.message, `${what}: message is a string`).toBe('string');
  expect((e.message as string).length).toBeGreaterThan(0);
  if ('details' in e) expect(isRecord(e.details), `${what}: details is an object`).toBe(true);
}

/** Sends one request with an ack; resolves with the reply, fails without one in time. */
function request(socket: ClientSocket, event: string, args: unknown[], timeoutMs = 10_000): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`no reply to "${event.slice(0, 40)}" within ${timeoutMs} ms`)),
      timeoutMs,
    );
    const emit = socket.emit.bind(socket) as (event: string, ...args: unknown[]) => void;
    emit(event, ...args, (reply: unknown) => {
      clearTimeout(timer);
      resolve(reply);
    });
  });
}

function emitWithoutAck(socket: ClientSocket, event: string, args: unknown[]): void {
  (socket.emit.bind(socket) as (event: string, ...args: unknown[]) => void)(event, ...args);
}

/** An array nested `depth` levels deep around `inner`. */
function nested(depth: number, inner: unknown): unknown {
  let value: unknown = inner;
  for (let level = 0; level < depth; level++) value = [value];
  return value;
}

/**
 * Counts the ack packets (ACK and BINARY_ACK) the socket receives, per ack id, straight
 * from the engine: socket.io-client calls a callback once at most and drops repeats, so
 * a second reply to one request is only visible here.
 */
function countAckPackets(socket: ClientSocket): Map<number, number> {
  const counts = new Map<number, number>();
  socket.io.engine.on('data', (data: unknown) => {
    if (typeof data !== 'string') return;
    const match = /^[36](?:\d+-)?\/v1,(\d+)/.exec(data);
    if (!match) return;
    const id = Number(match[1]);
    counts.set(id, (counts.get(id) ?? 0) + 1);
  });
  return counts;
}

/**
 * Two clients of another conversation sending to each other back and forth until
 * stopped; `stop` resolves with what each sent and the replies that were not ok.
 */
function startTraffic(a: TestClient, b: TestClient, conversationId: string) {
  let running = true;
  const sent: { from: TestClient; message: WireMessage }[] = [];
  const failures: unknown[] = [];
  const loop = (async () => {
    for (let n = 0; running; n++) {
      const from = n % 2 === 0 ? a : b;
      try {
        const reply = await from.request<SendData>('send', {
          conversationId,
          clientMsgId: `t${n}`,
          body: `traffic ${n}`,
        });
        if (reply.ok) sent.push({ from, message: reply.data.message });
        else failures.push(reply.error);
      } catch (error) {
        failures.push(String(error));
      }
      await sleep(15);
    }
  })();
  let stopped: Promise<{ sent: typeof sent; failures: unknown[] }> | undefined;
  return {
    /** Idempotent: the first call stops the loop, every call gets the same outcome. */
    stop: () =>
      (stopped ??= (async () => {
        running = false;
        await loop;
        return { sent, failures };
      })()),
  };
}

interface Request {
  event: string;
  args: unknown[];
  withAck: boolean;
}

describe('robustness against random and malformed requests', () => {
  let service: TestApp;
  let maxFrameBytes: number;
  let maxMessageBytes: number;
  const open: ClientSocket[] = [];

  let alice: string;
  let conversationId: string;
  /** A conversation the fuzzing user is not a member of. */
  let foreignConversationId: string;
  let fuzzer: TestClient;
  const fuzzerDisconnects: string[] = [];
  let ackPackets: Map<number, number>;
  let tokens: string[];

  let carol: TestClient;
  let dave: TestClient;
  let trafficConversationId: string;

  const client = async (user: string, deviceId: string): Promise<TestClient> => {
    const c = await connect(service.url, user, { deviceId });
    open.push(c.socket);
    return c;
  };

  beforeAll(async () => {
    service = await startTestApp();
    const namespace = service.app.get(RealtimeService).server;
    if (!namespace) throw new Error('the /v1 namespace is not attached');
    maxFrameBytes = namespace.server.engine.opts.maxHttpBufferSize ?? 1e6;
    maxMessageBytes = service.config.limits.maxMessageBytes;

    alice = userId('alice');
    const bob = userId('bob');
    conversationId = await createConversation(service, alice, [bob]);
    foreignConversationId = await createConversation(service, bob, []);
    fuzzer = await client(alice, 'fuzzer');
    fuzzer.socket.on('disconnect', (reason) => fuzzerDisconnects.push(reason));
    ackPackets = countAckPackets(fuzzer.socket);
    // Tokens that verify (alice's, long-lived, so a refresh never shortens the socket's life),
    // belong to someone else, or have expired.
    tokens = [
      await mintToken(alice, { ttlSec: 7_200 }),
      await mintToken(bob),
      await mintToken(alice, { ttlSec: -120 }),
    ];

    const carolId = userId('carol');
    const daveId = userId('dave');
    trafficConversationId = await createConversation(service, carolId, [daveId]);
    carol = await client(carolId, 'phone');
    dave = await client(daveId, 'phone');
  });

  afterAll(async () => {
    for (const socket of open) socket.disconnect();
    await service.close();
  });

  /** A payload within the transport limit: random JSON, odd values, right keys of the wrong type, huge and deep. */
  function payloadArbitraries(): { payload: fc.Arbitrary<unknown>; value: fc.Arbitrary<unknown> } {
    const oddScalar = fc.oneof(
      fc.constantFrom<unknown>(
        null,
        true,
        false,
        0,
        -1,
        0.5,
        1e300,
        -1e-300,
        2 ** 53,
        2 ** 53 + 2,
        Number.NaN,
        Number.POSITIVE_INFINITY,
        '',
        ' ',
        '\u0000',
        '\uD800',
        '__proto__',
        'null',
        'text/plain',
        'a'.repeat(65),
        'AAAA',
        '../../etc/passwd',
        "'; DROP TABLE messages; --",
        '{"conversationId":1}',
      ),
      fc.integer(),
      fc.double(),
      fc.string({ maxLength: 70 }),
      fc.string({ unit: 'binary', maxLength: 70 }),
      fc.uuid(),
      fc.constant(conversationId),
      fc.constant(randomUUID()),
      fc.constantFrom(...tokens),
    );
    const value = fc.oneof(
      { weight: 4, arbitrary: oddScalar },
      { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 3 }) },
      { weight: 1, arbitrary: fc.array(oddScalar, { maxLength: 120 }) },
      { weight: 1, arbitrary: fc.uint8Array({ maxLength: 512 }).map((bytes) => Buffer.from(bytes)) },
    );
    const rightKeys = fc.dictionary(fc.constantFrom(...PAYLOAD_KEYS, '__proto__', 'constructor', 'toString'), value, {
      maxKeys: 6,
    });
    const huge = fc
      .tuple(fc.constantFrom('a', 'é', '😀', '\u0000', '"', '\\'), fc.double({ min: 0, max: 1, noNaN: true }))
      .map(([unit, fraction]) => {
        // JSON-escaped size of one unit, so the frame stays under the transport limit.
        const unitBytes = Buffer.byteLength(JSON.stringify(unit)) - 2;
        const budget = maxFrameBytes - FRAME_MARGIN_BYTES;
        return unit.repeat(Math.max(1, Math.floor((fraction * budget) / unitBytes)));
      });
    const hugePayload = fc.oneof(
      huge,
      huge.map((body) => ({ conversationId, clientMsgId: 'huge', body })),
      huge.map((ciphertext) => ({ conversationId, clientMsgId: 'huge64', ciphertext })),
      huge.map((token) => ({ token })),
      huge.map((t) => ({ t })),
      huge.map((s) => ({ messageIds: [s] })),
      huge.map((s) => ({ [s.slice(0, 1_000)]: s.slice(0, 1_000) })),
      fc
        .integer({ min: 1, max: 5_000 })
        .map((count) => ({ messageIds: Array.from({ length: count }, () => randomUUID()) })),
    );
    const deep = fc
      .tuple(fc.integer({ min: 1, max: 2_000 }), fc.constantFrom(...PAYLOAD_KEYS, ''))
      .map(([depth, key]) => (key === '' ? nested(depth, 1) : { [key]: nested(depth, conversationId) }));
    const anything = fc.anything({
      maxDepth: 3,
      maxKeys: 5,
      withBoxedValues: true,
      withNullPrototype: true,
      withDate: true,
      withSparseArray: true,
      withTypedArray: true,
      stringUnit: 'binary',
      // BigInt has no JSON form; Map, Set and String objects would only arrive as {}.
      withBigInt: false,
      withMap: false,
      withSet: false,
      withObjectString: false,
    });
    const payload = fc.oneof(
      { weight: 4, arbitrary: rightKeys },
      { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 4 }) },
      { weight: 2, arbitrary: anything },
      { weight: 1, arbitrary: oddScalar },
      { weight: 1, arbitrary: hugePayload },
      { weight: 1, arbitrary: deep },
      { weight: 1, arbitrary: fc.uint8Array({ maxLength: 4_096 }).map((bytes) => Buffer.from(bytes)) },
    );
    return { payload, value };
  }

  /** A valid payload of the event, so that requests also reach past validation. */
  function validPayload(event: string): fc.Arbitrary<Record<string, unknown>> {
    const conversation = fc.constantFrom(conversationId, foreignConversationId, randomUUID());
    const clientMsgId = fc.stringMatching(/^[A-Za-z0-9_-]{1,64}$/);
    const seq = fc.nat({ max: 50 });
    const optional = { requiredKeys: [] as never[] };
    switch (event) {
      case 'join':
      case 'leave':
        return fc.record({ conversationId: conversation });
      case 'send':
        return fc.record(
          {
            conversationId: conversation,
            clientMsgId,
            body: fc.string({ unit: 'binary', maxLength: 200 }),
            contentType: fc.constantFrom('text/plain', 'application/json; charset=utf-8'),
          },
          { requiredKeys: ['conversationId', 'clientMsgId', 'body'] },
        );
      case 'typing':
        return fc.record({ conversationId: conversation, isTyping: fc.boolean() });
      case 'ack':
        return fc.record({ messageIds: fc.array(fc.uuid(), { minLength: 1, maxLength: 5 }) });
      case 'get-unacked':
        return fc.record({ limit: fc.integer({ min: 1, max: 100 }) }, optional);
      case 'read':
        return fc.record({ conversationId: conversation, seq });
      case 'history':
        return fc.record(
          { conversationId: conversation, beforeSeq: seq, afterSeq: seq, limit: fc.integer({ min: 1, max: 100 }) },
          { requiredKeys: ['conversationId'] },
        );
      case 'auth':
        return fc.record({ token: fc.constantFrom(...tokens) });
      default:
        return fc.record({ t: fc.jsonValue({ maxDepth: 2 }) }, optional);
    }
  }

  /** A valid payload with up to two keys set to odd values or removed: right keys, wrong types. */
  function nearValidPayload(event: string, value: fc.Arbitrary<unknown>): fc.Arbitrary<Record<string, unknown>> {
    const REMOVE = Symbol('remove');
    const mutation = fc.tuple(
      fc.constantFrom(...PAYLOAD_KEYS),
      fc.oneof({ weight: 4, arbitrary: value }, { weight: 1, arbitrary: fc.constant(REMOVE) }),
    );
    return fc.tuple(validPayload(event), fc.array(mutation, { maxLength: 2 })).map(([valid, mutations]) => {
      const payload: Record<string, unknown> = { ...valid };
      for (const [key, replacement] of mutations) {
        if (replacement === REMOVE) delete payload[key];
        else payload[key] = replacement;
      }
      return payload;
    });
  }

  function requestArbitrary(): fc.Arbitrary<Request> {
    const unknownName = fc
      .oneof(
        fc.string({ maxLength: 40 }),
        fc.string({ unit: 'binary', maxLength: 40 }),
        fc.constantFrom(
          'error',
          'session',
          'message',
          'receipt',
          '__proto__',
          'constructor',
          'toString',
          'hasOwnProperty',
          'SEND',
          'send ',
          'ping\u0000',
          'get_unacked',
          '',
          'x'.repeat(5_000),
        ),
      )
      .filter((name) => !RESERVED_EVENTS.has(name) && !CONTRACT_EVENTS.includes(name));
    const { payload, value } = payloadArbitraries();
    const argsOf = (first: fc.Arbitrary<unknown>) =>
      fc.oneof(
        { weight: 6, arbitrary: fc.tuple(first) },
        { weight: 1, arbitrary: fc.constant([]) },
        { weight: 1, arbitrary: fc.tuple(first, payload) },
        { weight: 1, arbitrary: fc.tuple(first, payload, payload) },
      );
    const contractRequest = fc.constantFrom(...CONTRACT_EVENTS).chain((event) =>
      fc.record({
        event: fc.constant(event),
        args: argsOf(
          fc.oneof(
            { weight: 3, arbitrary: nearValidPayload(event, value) },
            { weight: 1, arbitrary: validPayload(event) },
            { weight: 3, arbitrary: payload },
          ),
        ),
      }),
    );
    const unknownRequest = fc.record({ event: unknownName, args: argsOf(payload) });
    return fc
      .tuple(
        fc.oneof({ weight: 5, arbitrary: contractRequest }, { weight: 2, arbitrary: unknownRequest }),
        fc.integer({ min: 0, max: 9 }).map((n) => n < 8),
      )
      .map(([{ event, args }, withAck]): Request => ({ event, args: [...args], withAck }))
      .filter(({ event, args }) => {
        // Several huge payloads together could pass the transport limit, which closes the
        // connection by design; the JSON form overestimates binary and typed arrays.
        const json = JSON.stringify([event, ...args]) ?? '';
        return Buffer.byteLength(json) < maxFrameBytes - FRAME_MARGIN_BYTES;
      });
  }

  it('answers every request exactly once, well-formed, keeping every socket and other traffic intact', async () => {
    const traffic = startTraffic(carol, dave, trafficConversationId);
    const errorEvents: unknown[] = [];
    fuzzer.socket.on('error', (payload) => errorEvents.push(payload));
    const sentWithoutAck: string[] = [];
    let acked = 0;
    try {
      await fc.assert(
        fc.asyncProperty(fc.array(requestArbitrary(), { minLength: 1, maxLength: 6 }), async (requests) => {
          const replies = await Promise.all(
            requests.map((r) => {
              if (r.withAck) return request(fuzzer.socket, r.event, r.args);
              sentWithoutAck.push(r.event);
              emitWithoutAck(fuzzer.socket, r.event, r.args);
              return Promise.resolve(undefined);
            }),
          );
          requests.forEach((r, index) => {
            if (r.withAck) expectWellFormedReply(replies[index], `"${r.event.slice(0, 40)}"`);
          });
          acked += requests.filter((r) => r.withAck).length;
          expect(fuzzerDisconnects).toEqual([]);
          expect(fuzzer.socket.connected).toBe(true);
          expect((await fetch(`${service.url}/health/live`)).status).toBe(200);
        }),
        {
          numRuns: 400,
          timeout: 15_000,
          // Shrinking takes a round trip per step: report what it has before the test's timeout.
          interruptAfterTimeLimit: 35_000,
        },
      );

      // Exactly one ack packet per request with an ack, none twice.
      await sleep(200);
      expect([...ackPackets.values()].filter((count) => count !== 1)).toEqual([]);
      expect(ackPackets.size).toBe(acked);

      // Requests without an ack: only the failing ones answer, with an `error` event each;
      // an unknown event always fails.
      const unknownWithoutAck = sentWithoutAck.filter((name) => !CONTRACT_EVENTS.includes(name)).length;
      const unknownErrors = () =>
        errorEvents.filter(
          (e) =>
            isRecord(e) &&
            e.code === ErrorCode.UnknownEvent &&
            typeof e.event === 'string' &&
            !CONTRACT_EVENTS.includes(e.event),
        );
      for (let waited = 0; unknownErrors().length < unknownWithoutAck && waited < 5_000; waited += 50) await sleep(50);
      expect(unknownErrors()).toHaveLength(unknownWithoutAck);
      expect(errorEvents.length).toBeLessThanOrEqual(sentWithoutAck.length);
      for (const e of errorEvents) {
        expectWellFormedError(e, 'error event', ['code', 'message', 'details', 'event']);
        const name = (e as { event: unknown }).event;
        expect(typeof name).toBe('string');
        expect(sentWithoutAck.some((sent) => sent.startsWith(name as string))).toBe(true);
      }

      // The other conversation went on untouched: every send succeeded and was delivered.
      const { sent, failures } = await traffic.stop();
      expect(failures).toEqual([]);
      expect(sent.length).toBeGreaterThan(10);
      for (const [receiver, sender] of [
        [dave, carol],
        [carol, dave],
      ]) {
        const expected = sent.filter((s) => s.from === sender).map((s) => s.message.id);
        const deadline = Date.now() + 10_000;
        while (receiver.messages.length < expected.length && Date.now() < deadline) await sleep(20);
        expect(receiver.messages.map((m) => m.id)).toEqual(expected);
        expect(receiver.events.filter((e) => e.event === 'error')).toEqual([]);
        expect(receiver.socket.connected).toBe(true);
      }
      expect(fuzzer.socket.connected).toBe(true);
    } finally {
      await traffic.stop();
    }
  }, 60_000);

  it('answers a failing request without an ack by an error event { code, message, event }', async () => {
    const c = await client(alice, 'no-ack');
    const cases: [string, unknown[], string][] = [
      ['send', [{ conversationId: 'nope', clientMsgId: 'x', body: 'b' }], ErrorCode.BadRequest],
      ['history', ['not an object'], ErrorCode.BadRequest],
      ['ack', [{ messageIds: [] }], ErrorCode.BadRequest],
      ['auth', [{ token: 'garbage' }], ErrorCode.Unauthorized],
      ['send', [{ conversationId: randomUUID(), clientMsgId: 'x', body: 'b' }], ErrorCode.NotFound],
      ['no-such-event', [{ a: 1 }], ErrorCode.UnknownEvent],
      ['no-such-event-either', [], ErrorCode.UnknownEvent],
    ];
    for (const [event, args, code] of cases) {
      const before = errorsOf(c).length;
      emitWithoutAck(c.socket, event, args);
      for (let waited = 0; errorsOf(c).length === before && waited < 5_000; waited += 20) await sleep(20);
      expect(errorsOf(c)).toHaveLength(before + 1);
      const error = errorsOf(c)[before] as Record<string, unknown>;
      expect(error).toEqual({
        code,
        message: expect.any(String),
        event,
        ...('details' in error ? { details: error.details } : {}),
      });
      expectWellFormedError(error, event, ['code', 'message', 'details', 'event']);
    }
    // A request without an ack that succeeds is not answered at all.
    emitWithoutAck(c.socket, 'ping', [{ t: 1 }]);
    dataOf(await c.request('ping', {}));
    await sleep(200);
    expect(errorsOf(c)).toHaveLength(cases.length);
    expect(c.socket.connected).toBe(true);
  });

  it('survives binary payloads on every event', async () => {
    const c = await client(alice, 'binary');
    const disconnects: string[] = [];
    c.socket.on('disconnect', (reason) => disconnects.push(reason));
    const bytes = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    const big = Buffer.alloc(Math.floor((maxFrameBytes - FRAME_MARGIN_BYTES) / 2), 0xab);
    const payloads: unknown[][] = [
      [bytes],
      [big],
      [{ conversationId: bytes, clientMsgId: bytes, body: bytes, ciphertext: bytes, token: bytes }],
      [{ conversationId, clientMsgId: 'bin', body: bytes }],
      [{ conversationId, clientMsgId: 'bin2', ciphertext: big }],
      [{ messageIds: [bytes, bytes] }],
      [[bytes, { nested: [bytes] }]],
      [bytes, bytes, bytes],
      [new Uint8Array([1, 2, 3]), new Float64Array([1.5, Number.NaN])],
    ];
    for (const event of [...CONTRACT_EVENTS, 'binary-unknown']) {
      for (const args of payloads) {
        expectWellFormedReply(await request(c.socket, event, args), `${event} with binary`);
        emitWithoutAck(c.socket, event, args);
      }
    }
    const unsupported = await request(c.socket, 'send', [{ conversationId, clientMsgId: 'bin3', body: bytes }]);
    expect(unsupported).toMatchObject({ ok: false, error: { code: ErrorCode.BadRequest } });
    // ping echoes t, binary included.
    const echo = await request(c.socket, 'ping', [{ t: bytes }]);
    expectWellFormedReply(echo, 'ping');
    expect(Buffer.from((echo as { data: { t: Uint8Array } }).data.t)).toEqual(bytes);

    dataOf(await c.request('ping', {}));
    expect(disconnects).toEqual([]);
    expect(c.socket.connected).toBe(true);
    expect((await fetch(`${service.url}/health/live`)).status).toBe(200);
  });

  it('answers payload_too_large for a body just over maxMessageBytes, keeping the socket', async () => {
    const c = await client(alice, 'too-large');
    const reply = await c.request('send', {
      conversationId,
      clientMsgId: 'over',
      body: 'a'.repeat(maxMessageBytes + 1),
    });
    expect(reply).toMatchObject({ ok: false, error: { code: ErrorCode.PayloadTooLarge } });
    const multiByte = await c.request('send', {
      conversationId,
      clientMsgId: 'over2',
      body: 'é'.repeat(Math.floor(maxMessageBytes / 2) + 1),
    });
    expect(multiByte).toMatchObject({ ok: false, error: { code: ErrorCode.PayloadTooLarge } });
    dataOf(await c.request('send', { conversationId, clientMsgId: 'at-limit', body: 'a'.repeat(maxMessageBytes) }));
    expect(c.socket.connected).toBe(true);
  });

  it('closes only the one connection whose frame passes the transport limit', async () => {
    const victimId = userId('victim');
    const victim = await client(victimId, 'phone');
    const bystander = await client(alice, 'bystander');
    const gone = new Promise<string>((resolve) => victim.socket.once('disconnect', resolve));
    emitWithoutAck(victim.socket, 'ping', [{ t: 'x'.repeat(maxFrameBytes + 1) }]);
    expect(await gone).toBe('transport close');

    dataOf(await bystander.request('ping', {}));
    const { message } = dataOf(
      await carol.request<SendData>('send', {
        conversationId: trafficConversationId,
        clientMsgId: randomUUID(),
        body: 'after',
      }),
    );
    const deadline = Date.now() + 5_000;
    while (!dave.messages.some((m) => m.id === message.id) && Date.now() < deadline) await sleep(20);
    expect(dave.messages.map((m) => m.id)).toContain(message.id);
    // The closed client may connect again.
    const again = await client(victimId, 'phone');
    dataOf(await again.request('ping', {}));
  });
});
