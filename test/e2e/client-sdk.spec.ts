import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

import {
  ClientError,
  MessagingClient,
  memoryStorage,
  type ClientStorage,
  type Message,
  type StateChange,
} from '@messaging-service/client';

import type { Namespace } from 'socket.io';

import { RealtimeService } from '../../src/realtime/realtime.service.js';
import { rooms } from '../../src/realtime/realtime.types.js';
import { startTestApp, type TestApp } from '../support/app.js';
import { connect, mintToken } from '../support/clients.js';
import { createConversation, userId } from '../support/fixtures.js';

/** Polls `check` until it holds (bounded), failing with `what`. */
async function until(check: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

describe('client SDK against the service', () => {
  let service: TestApp;
  const clients: MessagingClient[] = [];

  beforeAll(async () => {
    service = await startTestApp();
  });
  afterEach(async () => {
    await Promise.all(clients.splice(0).map((client) => client.close()));
  });
  afterAll(async () => {
    await service.close();
  });

  function client(
    user: string,
    options: Partial<ConstructorParameters<typeof MessagingClient>[0]> = {},
  ): MessagingClient & { received: Message[]; states: StateChange[]; errors: ClientError[] } {
    const created = new MessagingClient({
      url: service.url,
      deviceId: 'phone',
      token: () => mintToken(user),
      reconnect: { minDelayMs: 20, maxDelayMs: 200 },
      ...options,
    });
    const extended = Object.assign(created, {
      received: [] as Message[],
      states: [] as StateChange[],
      errors: [] as ClientError[],
    });
    created.on('message', (message) => void extended.received.push(message));
    created.on('state', (change) => void extended.states.push(change));
    created.on('error', (error) => void extended.errors.push(error));
    clients.push(created);
    return extended;
  }

  it('connects, sends pipelined messages and delivers each once, in seq order', async () => {
    const [a, b] = [userId('a'), userId('b')];
    const conversationId = await createConversation(service, a, [b]);
    const alice = client(a);
    const bob = client(b);
    const session = await alice.connect();
    expect(session).toMatchObject({ userId: a, deviceId: 'phone' });
    await bob.connect();

    const sent = await Promise.all(Array.from({ length: 50 }, (_, i) => alice.send(conversationId, { body: `m${i}` })));
    // Pipelined over one socket, stored in call order (PROTOCOL.md section 2).
    expect(sent.map((message) => message.body)).toEqual(Array.from({ length: 50 }, (_, i) => `m${i}`));
    expect(sent.map((message) => message.seq)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));

    await until(() => bob.received.length === 50, '50 messages at bob');
    expect(bob.received.map((message) => message.seq)).toEqual(sent.map((message) => message.seq));
    expect(await alice.outbox()).toEqual([]);
    expect(alice.metrics()).toMatchObject({ state: 'connected', connects: 1, sent: 50, outboxDepth: 0 });
    expect(bob.metrics().received).toBe(50);
  });

  it('resolves a resend of a stored clientMsgId with the stored message and delivers it once', async () => {
    const [a, b] = [userId('a'), userId('b')];
    const conversationId = await createConversation(service, a, [b]);
    const alice = client(a);
    const bob = client(b);
    await Promise.all([alice.connect(), bob.connect()]);
    const first = await alice.send(conversationId, { body: 'once' }, { clientMsgId: 'fixed-id-1' });
    const again = await alice.send(conversationId, { body: 'once' }, { clientMsgId: 'fixed-id-1' });
    expect(again.id).toBe(first.id);
    await until(() => bob.received.length === 1, 'the message at bob');
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(bob.received).toHaveLength(1);
  });

  it('rejects a permanent error and drops it from the outbox', async () => {
    const [a, b, stranger] = [userId('a'), userId('b'), userId('c')];
    const conversationId = await createConversation(service, a, [b]);
    const outsider = client(stranger);
    await outsider.connect();
    const failure = outsider.send(conversationId, { body: 'let me in' });
    await expect(failure).rejects.toMatchObject({ code: 'forbidden' });
    await expect(failure).rejects.toBeInstanceOf(ClientError);
    expect(await outsider.outbox()).toEqual([]);
    await expect(outsider.send(conversationId, { body: 'x' }, { clientMsgId: 'bad id!' })).rejects.toMatchObject({
      code: 'bad_request',
    });
  });

  it('drains the offline queue after connecting, acks it, and reports synced', async () => {
    const [a, b] = [userId('a'), userId('b')];
    const conversationId = await createConversation(service, a, [b]);
    // Bob's device is known (first connection) and then goes away.
    const bobFirst = await connect(service.url, b, { deviceId: 'phone' });
    bobFirst.close();
    const alice = client(a);
    await alice.connect();
    await Promise.all(Array.from({ length: 230 }, (_, i) => alice.send(conversationId, { body: `offline ${i}` })));

    const bob = client(b);
    const synced = new Promise<{ delivered: number }>((resolve) => bob.on('synced', resolve));
    await bob.connect();
    expect((await synced).delivered).toBe(230);
    expect(bob.received.map((message) => message.seq)).toEqual(Array.from({ length: 230 }, (_, i) => i + 1));
    // Everything was acked: a fresh connection of the same device finds the queue empty.
    await bob.close();
    const check = await connect(service.url, b, { deviceId: 'phone' });
    expect(check.session.unacked).toBe(0);
    check.close();
  });

  it('with autoAck off, moves to the next page only after the app acked the previous one', async () => {
    const [a, b] = [userId('a'), userId('b')];
    const conversationId = await createConversation(service, a, [b]);
    const bobFirst = await connect(service.url, b, { deviceId: 'tablet' });
    bobFirst.close();
    const alice = client(a);
    await alice.connect();
    await Promise.all(Array.from({ length: 150 }, (_, i) => alice.send(conversationId, { body: `n${i}` })));

    const bob = client(b, { deviceId: 'tablet', autoAck: false });
    let synced = false;
    bob.on('synced', () => void (synced = true));
    await bob.connect();
    await until(() => bob.received.length === 100, 'the first page');
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(bob.received).toHaveLength(100);
    expect(synced).toBe(false);
    await bob.ack(bob.received.map((message) => message.id));
    await until(() => synced, 'synced after the second page');
    expect(bob.received.map((message) => message.seq)).toEqual(Array.from({ length: 150 }, (_, i) => i + 1));
  });

  it('never emits a message twice for one storage, across clients and restarts', async () => {
    const [a, b] = [userId('a'), userId('b')];
    const conversationId = await createConversation(service, a, [b]);
    const storage: ClientStorage = memoryStorage();
    const alice = client(a);
    await alice.connect();
    const bob1 = client(b, { storage, autoAck: false });
    await bob1.connect();
    await Promise.all(Array.from({ length: 10 }, (_, i) => alice.send(conversationId, { body: `r${i}` })));
    await until(() => bob1.received.length === 10, 'ten messages');
    // Not acked: the queue redelivers them to the next client on the same storage.
    await bob1.close();
    const bob2 = client(b, { storage });
    const synced = new Promise<{ delivered: number }>((resolve) => bob2.on('synced', resolve));
    await bob2.connect();
    expect((await synced).delivered).toBe(0);
    expect(bob2.received).toEqual([]);
    expect(bob2.metrics().duplicatesDropped).toBe(10);
    await alice.send(conversationId, { body: 'r10' });
    await until(() => bob2.received.length === 1, 'the next message');
    expect(bob2.received[0]?.seq).toBe(11);
  });

  it('fills a gap from history before emitting later messages', async () => {
    const [a, b] = [userId('a'), userId('b')];
    const conversationId = await createConversation(service, a, [b]);
    const alice = client(a);
    await alice.connect();
    const storage = memoryStorage();
    const bob = client(b, { storage });
    await bob.connect();
    await alice.send(conversationId, { body: 'g1' });
    await until(() => bob.received.length === 1, 'g1');
    await bob.close();
    // Two messages that bob's queue then loses (acked by another client of the same device),
    // so that only history has them.
    await alice.send(conversationId, { body: 'g2' });
    await alice.send(conversationId, { body: 'g3' });
    const raw = await connect(service.url, b, { deviceId: 'phone' });
    const page = await raw.request<{ messages: Message[] }>('get-unacked', {});
    expect(page.ok).toBe(true);
    if (page.ok) await raw.request('ack', { messageIds: page.data.messages.map((message) => message.id) });
    raw.close();

    const bob2 = client(b, { storage });
    await bob2.connect();
    await alice.send(conversationId, { body: 'g4' });
    await until(() => bob2.received.length === 3, 'g2..g4');
    expect(bob2.received.map((message) => message.body)).toEqual(['g2', 'g3', 'g4']);
    expect(bob2.metrics().gapsFilled).toBe(2);
  });

  it('relays typing with coalescing, emits unknown events, and isolates throwing listeners', async () => {
    const [a, b] = [userId('a'), userId('b')];
    const conversationId = await createConversation(service, a, [b]);
    const alice = client(a);
    const bob = client(b);
    await Promise.all([alice.connect(), bob.connect()]);
    await Promise.all([alice.join(conversationId), bob.join(conversationId)]);
    const typing: boolean[] = [];
    bob.on('typing', () => {
      throw new Error('a broken listener');
    });
    bob.on('typing', (event) => void typing.push(event.isTyping));
    alice.typing(conversationId, true);
    alice.typing(conversationId, true);
    await until(() => typing.length === 1, 'typing true');
    alice.typing(conversationId, false);
    await until(() => typing.length === 2, 'typing false');
    expect(typing).toEqual([true, false]);
    expect(bob.errors.some((error) => error.code === 'listener_error')).toBe(true);

    // A server event this SDK does not know (say, from a newer service) reaches the app.
    const unknown: [string, unknown][] = [];
    bob.on('unknownEvent', (name, payload) => void unknown.push([name, payload]));
    const realtime: unknown = service.app.get(RealtimeService);
    const { namespace } = realtime as { namespace: Namespace };
    namespace.to(rooms.user(b)).emit('announcement', { text: 'maintenance at noon' });
    await until(() => unknown.length === 1, 'the unknown event');
    expect(unknown[0]).toEqual(['announcement', { text: 'maintenance at noon' }]);
  });

  it('answers ping with a round-trip time and keeps rttMs current', async () => {
    const a = userId('a');
    const alice = client(a, { heartbeatMs: 50 });
    await alice.connect();
    const pong = await alice.ping();
    expect(pong.rttMs).toBeGreaterThanOrEqual(0);
    expect(Date.parse(pong.serverTime)).not.toBeNaN();
    await until(() => alice.metrics().rttMs !== undefined, 'heartbeat rtt');
  });

  it('rejects connect() for good on a refused string token, ending closed', async () => {
    const alice = client(userId('a'), { token: 'not-a-jwt' });
    await expect(alice.connect()).rejects.toMatchObject({ code: 'unauthorized' });
    expect(alice.state).toBe('closed');
    expect(alice.states.at(-1)).toMatchObject({ state: 'closed', error: { code: 'unauthorized' } });
  });

  it('closes for good when the same device connects elsewhere (session_replaced)', async () => {
    const a = userId('a');
    const first = client(a);
    await first.connect();
    const second = client(a);
    await second.connect();
    await until(() => first.state === 'closed', 'the replaced client to close');
    expect(first.states.at(-1)).toMatchObject({ state: 'closed', error: { code: 'session_replaced' } });
    expect(second.state).toBe('connected');
  });
});
