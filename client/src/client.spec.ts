import { createServer as createHttpServer } from 'node:http';
import { createServer as createTcpServer, type AddressInfo } from 'node:net';

import { Server, type Socket as ServerSocket } from 'socket.io';
import { afterEach, describe, expect, it, vi } from 'vitest';

import { MessagingClient, type ClientEvents, type MessagingClientOptions, type StateChange } from './client.js';
import { ClientError } from './errors.js';
import type { SessionPayload, WireMessage } from './protocol.js';
import { memoryStorage } from './storage/memory.js';
import type { ClientStorage } from './storage/storage.js';

const DEVICE_ID = 'test-device';
const FAST_RECONNECT = { minDelayMs: 20, maxDelayMs: 80 };

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `check` until it holds; fails naming `what` after `timeoutMs`. */
async function waitUntil(check: () => boolean, what: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}

/** A loopback port nothing listens on (it was bound, then released). */
async function closedPort(): Promise<number> {
  const server = createTcpServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

function sessionPayload(overrides: Partial<SessionPayload> = {}): SessionPayload {
  return {
    userId: 'me',
    deviceId: DEVICE_ID,
    sessionId: 'session-1',
    serverTime: new Date().toISOString(),
    tokenExpiresAt: new Date(Date.now() + 3_600_000).toISOString(),
    unacked: 0,
    limits: { maxMessageBytes: 64 * 1024, maxBatch: 100 },
    ...overrides,
  };
}

function wireMessage(seq: number, overrides: Partial<WireMessage> = {}): WireMessage {
  return {
    id: `m-${seq}`,
    conversationId: 'conv-1',
    seq,
    senderId: 'alice',
    senderDeviceId: 'alice-phone',
    clientMsgId: `cm-${seq}`,
    contentType: 'text/plain',
    body: `hello ${seq}`,
    createdAt: new Date().toISOString(),
    ...overrides,
  };
}

interface FakeServer {
  url: string;
  io: Server;
  /** Sockets that completed the handshake, oldest first. */
  sockets: ServerSocket[];
  close(): Promise<void>;
}

/**
 * A tiny Socket.IO server with the /v1 namespace: `onConnection` runs for each socket
 * that passed the (optional) middleware, before anything is emitted to it.
 */
async function startServer(onConnection: (socket: ServerSocket, index: number) => void): Promise<FakeServer> {
  const http = createHttpServer();
  const io = new Server(http);
  const sockets: ServerSocket[] = [];
  io.of('/v1').on('connection', (socket) => {
    sockets.push(socket);
    onConnection(socket, sockets.length - 1);
  });
  await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
  const { port } = http.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    io,
    sockets,
    close: () => new Promise<void>((resolve) => void io.close(() => resolve())),
  };
}

type AnyAck = (reply: unknown) => void;

/** Answers the requests a connecting client makes: ping, get-unacked (empty), ack, join, auth. */
function answerBasics(socket: ServerSocket, except: string[] = []): void {
  const handlers: Record<string, (payload: Record<string, unknown>, ack: AnyAck) => void> = {
    ping: (payload, ack) => ack({ ok: true, data: { t: payload.t, serverTime: new Date().toISOString() } }),
    'get-unacked': (_payload, ack) => ack({ ok: true, data: { messages: [], hasMore: false } }),
    ack: (payload, ack) => ack({ ok: true, data: { acked: (payload.messageIds as string[]).length } }),
    auth: (_payload, ack) =>
      ack({ ok: true, data: { tokenExpiresAt: new Date(Date.now() + 3_600_000).toISOString() } }),
  };
  for (const [event, handler] of Object.entries(handlers)) {
    if (!except.includes(event)) socket.on(event, handler);
  }
}

const opened: MessagingClient[] = [];
const servers: FakeServer[] = [];

function makeClient(options: Partial<MessagingClientOptions> & { url: string }) {
  const client = new MessagingClient({ deviceId: DEVICE_ID, token: 'token', reconnect: FAST_RECONNECT, ...options });
  opened.push(client);
  const states: StateChange[] = [];
  const errors: ClientError[] = [];
  const received: WireMessage[] = [];
  const synced: Parameters<ClientEvents['synced']>[0][] = [];
  client.on('state', (change) => void states.push(change));
  client.on('error', (error) => void errors.push(error));
  client.on('message', (message) => void received.push(message));
  client.on('synced', (event) => void synced.push(event));
  return { client, states, errors, received, synced };
}

afterEach(async () => {
  for (const client of opened.splice(0)) await client.close();
  for (const server of servers.splice(0)) await server.close();
});

describe('MessagingClient without a server', () => {
  it.each(['', 'has space', 'ümlaut', 'x'.repeat(65), 'a/b'])('refuses the deviceId %j', (deviceId) => {
    expect(() => new MessagingClient({ url: 'http://127.0.0.1:1', deviceId, token: 't' })).toThrow(
      expect.objectContaining({ name: 'ClientError', code: 'bad_request' }),
    );
  });

  it('accepts a deviceId of 64 URL-safe characters and starts idle', () => {
    const client = new MessagingClient({ url: 'http://127.0.0.1:1', deviceId: 'a-_9'.repeat(16), token: 't' });
    opened.push(client);
    expect(client.state).toBe('idle');
    expect(client.metrics()).toMatchObject({ state: 'idle', connects: 0, reconnects: 0, outboxDepth: 0 });
  });

  const invalidSends: [string, string, unknown, { clientMsgId?: string }][] = [
    ['both body and ciphertext', 'conv-1', { body: 'a', ciphertext: 'b' }, {}],
    ['neither body nor ciphertext', 'conv-1', {}, {}],
    ['a body that is not a string', 'conv-1', { body: 42 }, {}],
    ['a clientMsgId with a space', 'conv-1', { body: 'a' }, { clientMsgId: 'not valid' }],
    ['a clientMsgId over 64 characters', 'conv-1', { body: 'a' }, { clientMsgId: 'x'.repeat(65) }],
    ['an empty clientMsgId', 'conv-1', { body: 'a' }, { clientMsgId: '' }],
    ['an empty conversationId', '', { body: 'a' }, {}],
  ];
  it.each(invalidSends)(
    'rejects a send with %s as bad_request, leaving the outbox alone',
    async (_, conv, content, opts) => {
      const memory = memoryStorage();
      let writes = 0;
      const storage: ClientStorage = {
        ...memory,
        putOutbox: (entries) => {
          writes++;
          return memory.putOutbox(entries);
        },
      };
      const { client } = makeClient({ url: 'http://127.0.0.1:1', storage });

      const sent = client.send(conv, content as { body: string }, opts);

      await expect(sent).rejects.toBeInstanceOf(ClientError);
      await expect(sent).rejects.toMatchObject({ code: 'bad_request' });
      expect(await client.outbox()).toEqual([]);
      expect(writes).toBe(0);
      expect(client.metrics().outboxDepth).toBe(0);
    },
  );

  it('keeps a send made before connect() in the outbox with attempts 0, for the next client too', async () => {
    const storage = memoryStorage();
    const { client } = makeClient({ url: 'http://127.0.0.1:1', storage });

    const sent = client.send('conv-1', { body: 'hi' }, { clientMsgId: 'first-send' });
    const outcome = sent.catch((error: unknown) => error);
    const generated = client.send('conv-1', { ciphertext: 'c2VjcmV0' }).catch((error: unknown) => error);

    await expect.poll(() => client.outbox(), { timeout: 2_000 }).toHaveLength(2);
    const entries = await client.outbox();
    expect(entries[0]).toEqual({
      clientMsgId: 'first-send',
      conversationId: 'conv-1',
      createdAt: expect.any(String),
      attempts: 0,
    });
    expect(Date.parse(entries[0].createdAt)).not.toBeNaN();
    expect(entries[1].clientMsgId).toMatch(/^[A-Za-z0-9_-]{1,64}$/);
    expect(client.metrics().outboxDepth).toBe(2);

    await client.close();
    expect(await outcome).toMatchObject({ code: 'closed' });
    expect(await generated).toMatchObject({ code: 'closed' });

    const next = new MessagingClient({ url: 'http://127.0.0.1:1', deviceId: DEVICE_ID, token: 't', storage });
    opened.push(next);
    expect((await next.outbox()).map((entry) => entry.clientMsgId)).toEqual(['first-send', entries[1].clientMsgId]);
    expect(next.metrics().outboxDepth).toBe(2);
  });

  it("goes 'reconnecting' with attempts 0, 1, 2… and full-jitter delays while nothing listens", async () => {
    const port = await closedPort();
    const { client, states } = makeClient({ url: `http://127.0.0.1:${port}` });

    const connecting = client.connect().catch((error: unknown) => error);
    await waitUntil(() => states.filter((s) => s.state === 'reconnecting').length >= 4, '4 reconnect attempts');

    expect(states[0]).toEqual({ state: 'connecting' });
    const retries = states.filter((s) => s.state === 'reconnecting');
    expect(retries.slice(0, 4).map((s) => s.attempt)).toEqual([0, 1, 2, 3]);
    for (const retry of retries) {
      const ceiling = Math.min(FAST_RECONNECT.maxDelayMs, FAST_RECONNECT.minDelayMs * 2 ** retry.attempt!);
      expect(retry.delayMs).toBeGreaterThanOrEqual(0);
      expect(retry.delayMs).toBeLessThan(ceiling);
    }
    expect(client.metrics().connects).toBe(0);

    await client.close();
    expect(await connecting).toMatchObject({ code: 'closed' });
  });

  it("retries at once on the browser's 'online' event instead of waiting out the backoff", async () => {
    const port = await closedPort();
    // A browser's window, as far as the SDK uses it.
    const window = new EventTarget();
    (globalThis as { window?: EventTarget }).window = window;
    // The backoff's draw, fixed so that the scheduled retry is 30 s away.
    const random = vi.spyOn(Math, 'random').mockReturnValue(0.5);
    try {
      const { client, states } = makeClient({
        url: `http://127.0.0.1:${port}`,
        reconnect: { minDelayMs: 60_000, maxDelayMs: 60_000 },
      });
      const connecting = client.connect().catch((error: unknown) => error);
      const retries = () => states.filter((s) => s.state === 'reconnecting');
      await waitUntil(() => retries().length === 1, 'the first scheduled retry');
      expect(retries()[0]?.delayMs).toBe(30_000);
      window.dispatchEvent(new Event('online'));
      await waitUntil(() => retries().length === 2, 'a retry right after online', 2_000);
      expect(retries()[1]?.attempt).toBe(1);
      await client.close();
      expect(await connecting).toMatchObject({ code: 'closed' });
    } finally {
      random.mockRestore();
      delete (globalThis as { window?: EventTarget }).window;
    }
  });

  it("closes for good: state 'closed', and connect() afterwards rejects with 'closed'", async () => {
    const { client, states } = makeClient({ url: 'http://127.0.0.1:1' });

    await client.close();

    expect(client.state).toBe('closed');
    expect(states).toEqual([{ state: 'closed' }]);
    await expect(client.connect()).rejects.toMatchObject({ code: 'closed' });
    await expect(client.send('conv-1', { body: 'late' })).rejects.toMatchObject({ code: 'closed' });
    await client.close(); // twice is fine
    expect(states).toHaveLength(1);
  });
});

describe('MessagingClient with a server', () => {
  async function serve(onConnection: (socket: ServerSocket, index: number) => void): Promise<FakeServer> {
    const server = await startServer(onConnection);
    servers.push(server);
    return server;
  }

  it("drains the offline queue page by page, acking before the next page, then emits 'synced'", async () => {
    let queue = [wireMessage(1), wireMessage(2), wireMessage(3)];
    const pages: number[] = [];
    const server = await serve((socket) => {
      answerBasics(socket, ['get-unacked', 'ack']);
      socket.on('get-unacked', (payload: { limit: number }, ack: AnyAck) => {
        pages.push(queue.length);
        ack({ ok: true, data: { messages: queue.slice(0, payload.limit), hasMore: queue.length > payload.limit } });
      });
      socket.on('ack', (payload: { messageIds: string[] }, ack: AnyAck) => {
        queue = queue.filter((m) => !payload.messageIds.includes(m.id));
        ack({ ok: true, data: { acked: payload.messageIds.length } });
      });
      socket.emit('session', sessionPayload({ unacked: 3, limits: { maxMessageBytes: 65_536, maxBatch: 2 } }));
    });
    const { client, received, synced, states } = makeClient({ url: server.url });
    let receivedAtSynced = -1;
    client.on('synced', () => void (receivedAtSynced = received.length));

    const session = await client.connect();

    expect(session).toMatchObject({ userId: 'me', sessionId: 'session-1' });
    expect(states.map((s) => s.state)).toEqual(['connecting', 'connected']);
    await waitUntil(() => synced.length === 1, "'synced'");
    expect(received.map((m) => m.seq)).toEqual([1, 2, 3]);
    expect(receivedAtSynced).toBe(3);
    expect(synced[0]).toMatchObject({ delivered: 3 });
    // The second page was asked for only once the first one was acked.
    expect(pages).toEqual([3, 1]);
    await waitUntil(() => queue.length === 0, 'the last page to be acked');
    expect(client.metrics()).toMatchObject({ state: 'connected', connects: 1, reconnects: 0, received: 3 });
  });

  it('sends what was queued before connect() once connected, and empties the outbox', async () => {
    const sends: string[] = [];
    const server = await serve((socket) => {
      answerBasics(socket);
      socket.on('send', (payload: { conversationId: string; clientMsgId: string; body: string }, ack: AnyAck) => {
        sends.push(payload.clientMsgId);
        const message = wireMessage(sends.length, {
          ...payload,
          id: `stored-${payload.clientMsgId}`,
          senderId: 'me',
          senderDeviceId: DEVICE_ID,
        });
        ack({ ok: true, data: { message, duplicate: false } });
      });
      socket.emit('session', sessionPayload());
    });
    const { client, received } = makeClient({ url: server.url });
    const first = client.send('conv-1', { body: 'one' }, { clientMsgId: 'one' });
    const second = client.send('conv-1', { body: 'two' }, { clientMsgId: 'two' });
    await expect.poll(() => client.outbox(), { timeout: 2_000 }).toHaveLength(2);

    await client.connect();

    await expect(first).resolves.toMatchObject({ id: 'stored-one', seq: 1 });
    await expect(second).resolves.toMatchObject({ id: 'stored-two', seq: 2 });
    expect(sends).toEqual(['one', 'two']);
    await expect.poll(() => client.outbox(), { timeout: 2_000 }).toEqual([]);
    expect(client.metrics()).toMatchObject({ sent: 2, resent: 0, outboxDepth: 0 });
    expect(received).toEqual([]); // own messages are never emitted
  });

  it('drops a connection whose heartbeat goes unanswered for heartbeatTimeoutMs, and reconnects', async () => {
    const pingsOnFirst: number[] = [];
    const disconnectReasons: string[] = [];
    const server = await serve((socket, index) => {
      // The first connection is half-open: it never answers a ping.
      answerBasics(socket, index === 0 ? ['ping'] : []);
      if (index === 0) socket.on('ping', () => void pingsOnFirst.push(Date.now()));
      socket.on('disconnect', (reason) => void disconnectReasons.push(reason));
      socket.emit('session', sessionPayload({ sessionId: `session-${index + 1}` }));
    });
    const { client, states } = makeClient({ url: server.url, heartbeatMs: 50, heartbeatTimeoutMs: 300 });

    await client.connect();
    await waitUntil(() => client.metrics().reconnects === 1, 'a reconnect');

    expect(pingsOnFirst.length).toBeGreaterThanOrEqual(1);
    expect(disconnectReasons[0]).toBe('client namespace disconnect');
    expect(states.map((s) => s.state)).toEqual(['connecting', 'connected', 'reconnecting', 'connected']);
    // The new connection answers: its pings keep rttMs current and it stays up.
    await waitUntil(() => client.metrics().rttMs !== undefined, 'a ping round trip');
    expect(client.metrics()).toMatchObject({ state: 'connected', connects: 2, reconnects: 1 });
  });

  it("closes for good on a 'session_replaced' error event, with that error", async () => {
    const server = await serve((socket) => {
      answerBasics(socket);
      socket.emit('session', sessionPayload());
      socket.emit('error', { code: 'session_replaced', message: 'signed in on another connection' });
    });
    const { client, states, errors } = makeClient({ url: server.url });

    await client.connect();
    await waitUntil(() => client.state === 'closed', "state 'closed'");

    const closed = states.at(-1)!;
    expect(closed.state).toBe('closed');
    expect(closed.error).toBeInstanceOf(ClientError);
    expect(closed.error).toMatchObject({ code: 'session_replaced' });
    expect(errors.map((e) => e.code)).toContain('session_replaced');
    await expect(client.connect()).rejects.toMatchObject({ code: 'closed' });
    // No retry follows: the backoff here is at most 80 ms.
    await sleep(300);
    expect(server.sockets).toHaveLength(1);
    expect(states.some((s) => s.state === 'reconnecting')).toBe(false);
  });

  it("rides out a server shutting down: 'unavailable' and 'io server disconnect' are transient, and the sends go again with the same clientMsgId", async () => {
    const sendsBySocket: string[][] = [];
    const disconnectReasons: string[] = [];
    const server = await serve((socket, index) => {
      const sends: string[] = [];
      sendsBySocket.push(sends);
      answerBasics(socket);
      socket.on('disconnect', (reason) => void disconnectReasons.push(reason));
      socket.on('send', (payload: { conversationId: string; clientMsgId: string; body: string }, ack: AnyAck) => {
        sends.push(payload.clientMsgId);
        if (index === 0) {
          // What a draining instance does: the request is answered, then the socket is closed.
          ack({ ok: false, error: { code: 'unavailable', message: 'the service is shutting down' } });
          socket.disconnect(true);
          return;
        }
        const message = wireMessage(sends.length, {
          ...payload,
          id: `stored-${payload.clientMsgId}`,
          senderId: 'me',
          senderDeviceId: DEVICE_ID,
        });
        ack({ ok: true, data: { message, duplicate: false } });
      });
      socket.emit('session', sessionPayload({ sessionId: `session-${index + 1}` }));
    });
    let handshakes = 0;
    server.io.of('/v1').use((_socket, next) => {
      // The first reconnect still finds the instance draining.
      if (++handshakes === 2) {
        next(Object.assign(new Error('unavailable'), { data: { code: 'unavailable', message: 'shutting down' } }));
      } else {
        next();
      }
    });
    const { client, states, errors } = makeClient({ url: server.url });

    await client.connect();
    const first = client.send('conv-1', { body: 'one' }, { clientMsgId: 'one' });
    const second = client.send('conv-1', { body: 'two' }, { clientMsgId: 'two' });

    await expect(first).resolves.toMatchObject({ id: 'stored-one' });
    await expect(second).resolves.toMatchObject({ id: 'stored-two' });
    expect(disconnectReasons[0]).toBe('server namespace disconnect');
    expect(handshakes).toBe(3);
    expect(sendsBySocket[0][0]).toBe('one');
    expect(sendsBySocket[1]).toEqual(['one', 'two']);
    expect(states.map((s) => s.state)).toEqual([
      'connecting',
      'connected',
      'reconnecting',
      'reconnecting',
      'connected',
    ]);
    expect(errors.filter((e) => e.code === 'closed')).toEqual([]);
    expect(client.metrics()).toMatchObject({ state: 'connected', reconnects: 1, outboxDepth: 0 });
    expect(client.metrics().resent).toBeGreaterThanOrEqual(1);
  });

  it("asks a token provider once more after an 'unauthorized' handshake, then closes with that error", async () => {
    const server = await serve(() => undefined);
    const tokensSeen: unknown[] = [];
    server.io.of('/v1').use((socket, next) => {
      tokensSeen.push((socket.handshake.auth as { token?: unknown }).token);
      next(Object.assign(new Error('unauthorized'), { data: { code: 'unauthorized', message: 'no' } }));
    });
    let provided = 0;
    const { client, states } = makeClient({ url: server.url, token: () => `token-${++provided}` });

    const refused = await client.connect().catch((error: unknown) => error);

    expect(refused).toBeInstanceOf(ClientError);
    expect(refused).toMatchObject({ code: 'unauthorized' });
    expect(provided).toBe(2);
    expect(tokensSeen).toEqual(['token-1', 'token-2']);
    expect(client.state).toBe('closed');
    expect(states.at(-1)).toMatchObject({ state: 'closed', error: { code: 'unauthorized' } });
    expect(states.filter((s) => s.state === 'reconnecting')).toHaveLength(1);
  });

  it("gives up at once on an 'unauthorized' handshake with a string token", async () => {
    const server = await serve(() => undefined);
    let handshakes = 0;
    server.io.of('/v1').use((_socket, next) => {
      handshakes++;
      next(Object.assign(new Error('unauthorized'), { data: { code: 'unauthorized', message: 'no' } }));
    });
    const { client } = makeClient({ url: server.url, token: 'refused-token' });

    await expect(client.connect()).rejects.toMatchObject({ code: 'unauthorized' });
    expect(handshakes).toBe(1);
    expect(client.state).toBe('closed');
  });

  it("refreshes a provider's token over 'auth' before tokenExpiresAt, on the same connection", async () => {
    const authRequests: { token: string; at: number; expiresAt: number }[] = [];
    let expiresAt = 0;
    const server = await serve((socket) => {
      answerBasics(socket, ['auth']);
      socket.on('auth', (payload: { token: string }, ack: AnyAck) => {
        authRequests.push({ token: payload.token, at: Date.now(), expiresAt });
        expiresAt = Date.now() + 1_200;
        ack({ ok: true, data: { tokenExpiresAt: new Date(expiresAt).toISOString() } });
      });
      expiresAt = Date.now() + 1_200;
      socket.emit('session', sessionPayload({ tokenExpiresAt: new Date(expiresAt).toISOString() }));
    });
    let provided = 0;
    const { client } = makeClient({ url: server.url, token: () => `token-${++provided}` });

    await client.connect();
    await waitUntil(() => authRequests.length >= 2, 'two token refreshes', 8_000);

    expect(authRequests.map((r) => r.token).slice(0, 2)).toEqual(['token-2', 'token-3']);
    for (const request of authRequests) expect(request.at).toBeLessThan(request.expiresAt);
    expect(server.sockets).toHaveLength(1);
    expect(client.metrics()).toMatchObject({ state: 'connected', connects: 1, reconnects: 0 });
  });
});
