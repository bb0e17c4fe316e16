import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { JoinData, PresencePayload, ReceiptPayload, TypingPayload } from '@messaging-service/client/protocol';
import { InstanceTopology } from '../../src/redis/instance-topology.service.js';
import { startTestApp, type TestApp } from '../support/app.js';
import { connect, dataOf, type TestClient } from '../support/clients.js';
import { createConversation, userId } from '../support/fixtures.js';
import { spawnBeside } from '../support/service-process.js';

/** Waits a little to show that something did NOT arrive. */
const settle = (ms = 300) => new Promise((resolve) => setTimeout(resolve, ms));

const TIMING = { TYPING_TIMEOUT_MS: '600', TYPING_COALESCE_MS: '300', PRESENCE_TTL_MS: '900' };

describe('conversation streams: join, presence, typing, read', () => {
  let service: TestApp;
  const open: TestClient[] = [];
  const client = async (user: string, deviceId = 'phone') => {
    const c = await connect(service.url, user, { deviceId });
    open.push(c);
    return c;
  };

  beforeAll(async () => {
    service = await startTestApp(TIMING);
  });

  afterAll(async () => {
    for (const c of open) c.close();
    await service.close();
  });

  it('answers join with lastSeq, readSeq, presence and flags, and resumed on a second join', async () => {
    const alice = userId('alice');
    const bob = userId('bob');
    const conversationId = await createConversation(service, alice, [bob]);
    const bobPhone = await client(bob, 'phone');
    await client(bob, 'tablet');
    const sender = await client(alice, 'laptop');
    for (let n = 0; n < 3; n++)
      dataOf(await sender.request('send', { conversationId, clientMsgId: `j${n}`, body: 'x' }));
    bobPhone.close();
    const bobAgain = await client(bob, 'phone');

    const first = dataOf(await bobAgain.request<JoinData>('join', { conversationId }));
    expect(first).toEqual({
      conversationId,
      lastSeq: 3,
      readSeq: 0,
      presence: [{ userId: alice, deviceIds: ['laptop'] }],
      flags: { hasBacklog: true, hasPresence: true, resumed: false },
    });
    const second = dataOf(await bobAgain.request<JoinData>('join', { conversationId }));
    expect(second.flags.resumed).toBe(true);

    const lonely = await createConversation(service, userId('carol'), []);
    expect(await bobAgain.request('join', { conversationId: lonely })).toMatchObject({
      ok: false,
      error: { code: 'forbidden' },
    });
    expect(dataOf(await bobAgain.request('leave', { conversationId }))).toEqual({});
    expect(await bobAgain.request('leave', { conversationId: lonely })).toMatchObject({
      ok: false,
      error: { code: 'forbidden' },
    });
  });

  it('sends presence online on a user first connect and offline when the last device goes', async () => {
    const alice = userId('alice');
    const bob = userId('bob');
    const conversationId = await createConversation(service, alice, [bob]);
    const watcher = await client(alice);
    dataOf(await watcher.request('join', { conversationId }));

    const online = watcher.waitForEvent<PresencePayload>('presence', (p) => p.userId === bob && p.status === 'online');
    const phone = await client(bob, 'phone');
    expect(await online).toEqual({ conversationId, userId: bob, status: 'online' });

    const tablet = await client(bob, 'tablet');
    phone.close();
    await settle();
    expect(
      watcher.events.filter((e) => e.event === 'presence' && (e.payload as PresencePayload).status === 'offline'),
    ).toEqual([]);

    const offline = watcher.waitForEvent<PresencePayload>(
      'presence',
      (p) => p.userId === bob && p.status === 'offline',
    );
    tablet.close();
    expect(await offline).toEqual({ conversationId, userId: bob, status: 'offline' });
  });

  it('relays typing to the other joined members, coalesces repeats and times out by itself', async () => {
    const alice = userId('alice');
    const bob = userId('bob');
    const conversationId = await createConversation(service, alice, [bob]);
    const typist = await client(alice);
    const reader = await client(bob);
    dataOf(await reader.request('join', { conversationId }));
    dataOf(await typist.request('join', { conversationId }));

    const reply = dataOf(await typist.request<{ expiresAt: string }>('typing', { conversationId, isTyping: true }));
    expect(Date.parse(reply.expiresAt) - Date.now()).toBeGreaterThan(300);
    for (let n = 0; n < 5; n++) dataOf(await typist.request('typing', { conversationId, isTyping: true }));
    const stopped = reader.waitForEvent<TypingPayload>('typing', (t) => !t.isTyping, 5_000);
    const end = await stopped;
    expect(end).toMatchObject({ conversationId, userId: alice, isTyping: false });
    const relays = reader.events.filter((e) => e.event === 'typing').map((e) => e.payload as TypingPayload);
    // Six requests within the coalescing window: one relay of true, then the timeout's false.
    expect(relays.map((t) => t.isTyping)).toEqual([true, false]);
    expect(typist.events.filter((e) => e.event === 'typing')).toEqual([]);
  });

  it('stops typing for the others at once when the typing user disconnects, and never stores it', async () => {
    const alice = userId('alice');
    const bob = userId('bob');
    const conversationId = await createConversation(service, alice, [bob]);
    const typist = await client(alice, 'typing-device');
    const reader = await client(bob);
    dataOf(await reader.request('join', { conversationId }));
    dataOf(await typist.request('typing', { conversationId, isTyping: true }));
    await reader.waitForEvent<TypingPayload>('typing', (t) => t.isTyping);
    const stopped = reader.waitForEvent<TypingPayload>('typing', (t) => !t.isTyping, 400);
    typist.close();
    expect((await stopped).userId).toBe(alice);
    const history = dataOf(await reader.request<{ messages: unknown[] }>('history', { conversationId }));
    expect(history.messages).toEqual([]);
  });

  it('moves the read mark forward only and relays read receipts to joined members', async () => {
    const alice = userId('alice');
    const bob = userId('bob');
    const conversationId = await createConversation(service, alice, [bob]);
    const sender = await client(alice);
    const reader = await client(bob);
    dataOf(await sender.request('join', { conversationId }));
    for (let n = 0; n < 5; n++)
      dataOf(await sender.request('send', { conversationId, clientMsgId: `r${n}`, body: 'x' }));

    const receipt = sender.waitForEvent<ReceiptPayload>('receipt', (r) => r.status === 'read');
    expect(dataOf(await reader.request('read', { conversationId, seq: 4 }))).toEqual({ readSeq: 4 });
    expect(await receipt).toEqual({ conversationId, userId: bob, status: 'read', seq: 4 });
    expect(dataOf(await reader.request('read', { conversationId, seq: 2 }))).toEqual({ readSeq: 4 });
    expect(dataOf(await reader.request<JoinData>('join', { conversationId })).readSeq).toBe(4);
    expect(await reader.request('read', { conversationId, seq: -1 })).toMatchObject({
      ok: false,
      error: { code: 'bad_request' },
    });
  });
});

describe('across instances', () => {
  it('delivers messages, presence and typing between sockets on two instances sharing PostgreSQL and Redis', async () => {
    const first = await startTestApp(TIMING);
    const second = await startTestApp({ ...TIMING, DATABASE_URL: first.databaseUrl, REDIS_URL: first.redisUrl });
    try {
      const alice = userId('alice');
      const bob = userId('bob');
      const conversationId = await createConversation(first, alice, [bob]);
      const a = await connect(first.url, alice);
      dataOf(await a.request('join', { conversationId }));
      const online = a.waitForEvent<PresencePayload>('presence', (p) => p.userId === bob && p.status === 'online');
      const b = await connect(second.url, bob);
      await online;
      dataOf(await b.request('join', { conversationId }));

      const { message } = dataOf(
        await a.request<{ message: unknown }>('send', { conversationId, clientMsgId: 'x1', body: 'hi' }),
      );
      expect((await b.waitForMessages(1))[0]).toEqual(message);
      const typing = a.waitForEvent<TypingPayload>('typing', (t) => t.userId === bob);
      dataOf(await b.request('typing', { conversationId, isTyping: true }));
      expect((await typing).isTyping).toBe(true);
      a.close();
      b.close();
    } finally {
      await second.close();
      await first.close();
    }
  });

  // On the Redis Cluster this failed two ways: the adapter's instance count missed a
  // subscriber on a node its client did not list (PubSubCensus), and the old socket's
  // `error` and disconnect, two publishes, could arrive in either order, losing the error
  // (RealtimeService.replaceSockets sends them as one server-side event).
  it('keeps one socket per device across instances', async () => {
    const first = await startTestApp(TIMING);
    const second = await startTestApp({ ...TIMING, DATABASE_URL: first.databaseUrl, REDIS_URL: first.redisUrl });
    try {
      const bob = userId('bob');
      const b = await connect(second.url, bob);
      const replaced = b.waitForEvent<{ code: string }>('error', (e) => e.code === 'session_replaced');
      const b2 = await connect(first.url, bob);
      expect((await replaced).code).toBe('session_replaced');
      b2.close();
    } finally {
      await second.close();
      await first.close();
    }
  });

  it('stops keeping broadcasts local as soon as a second instance joins', async () => {
    const first = await startTestApp(TIMING);
    try {
      const topology = first.app.get(InstanceTopology);
      const deadline = Date.now() + 10_000;
      while (!topology.alone && Date.now() < deadline) await settle(50);
      expect(topology.alone).toBe(true);

      const second = await startTestApp({ ...TIMING, DATABASE_URL: first.databaseUrl, REDIS_URL: first.redisUrl });
      try {
        // In one process the announcement is read a tick after the second app is up;
        // between processes a client's handshake takes far longer than that.
        const joined = Date.now();
        while (topology.alone && Date.now() - joined < 1_000) await settle(5);
        expect(topology.alone).toBe(false);
        const alice = userId('alice');
        const bob = userId('bob');
        const conversationId = await createConversation(first, alice, [bob]);
        const a = await connect(first.url, alice);
        const b = await connect(second.url, bob);
        const { message } = dataOf(
          await a.request<{ message: unknown }>('send', { conversationId, clientMsgId: 'j1', body: 'hi' }),
        );
        expect((await b.waitForMessages(1))[0]).toEqual(message);
        a.close();
        b.close();
      } finally {
        await second.close();
      }
    } finally {
      await first.close();
    }
  });

  it('takes the users of a SIGKILLed instance offline once their presence expires', async () => {
    const survivor = await startTestApp(TIMING);
    let doomed: Awaited<ReturnType<typeof spawnBeside>> | undefined;
    try {
      doomed = await spawnBeside(survivor, TIMING);
      const alice = userId('alice');
      const bob = userId('bob');
      const conversationId = await createConversation(survivor, alice, [bob]);
      const watcher = await connect(survivor.url, alice);
      dataOf(await watcher.request('join', { conversationId }));
      await connect(doomed.url, bob);
      await watcher.waitForEvent<PresencePayload>('presence', (p) => p.userId === bob && p.status === 'online');

      doomed.service.child.kill('SIGKILL');
      const offline = await watcher.waitForEvent<PresencePayload>(
        'presence',
        (p) => p.userId === bob && p.status === 'offline',
        10_000,
      );
      expect(offline).toEqual({ conversationId, userId: bob, status: 'offline' });
      watcher.close();
    } finally {
      doomed?.service.child.kill('SIGKILL');
      await survivor.close();
    }
  });
});
