import { randomUUID } from 'node:crypto';

import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { PageData, ReceiptPayload, SendData, WireMessage } from '@messaging-service/client/protocol';
import { RedisService } from '../../src/redis/redis.service.js';
import { startTestApp, testEnvironment, type TestApp } from '../support/app.js';
import { connect, dataOf, type TestClient } from '../support/clients.js';
import { flushTestRedis, startPrivateRedis } from '../support/databases.js';
import { createConversation, userId } from '../support/fixtures.js';
import { freePort } from '../support/free-port.js';
import { pollStatus, spawnService } from '../support/service-process.js';

/** Sends `count` messages, `window` in flight at a time; returns them in seq order. */
async function sendMany(
  sender: TestClient,
  conversationId: string,
  count: number,
  window = 20,
): Promise<WireMessage[]> {
  const sent: WireMessage[] = [];
  for (let start = 0; start < count; start += window) {
    const batch = Array.from({ length: Math.min(window, count - start) }, (_, i) =>
      sender.request<SendData>('send', {
        conversationId,
        clientMsgId: `m${start + i}-${randomUUID().slice(0, 8)}`,
        body: `#${start + i}`,
      }),
    );
    for (const reply of await Promise.all(batch)) sent.push(dataOf(reply).message);
  }
  return sent.sort((a, b) => a.seq - b.seq);
}

/** Pages through the whole queue: read a page, ack it, repeat. Returns everything in order. */
async function drain(client: TestClient, limit = 100): Promise<WireMessage[]> {
  const all: WireMessage[] = [];
  for (;;) {
    const page = dataOf(await client.request<PageData>('get-unacked', { limit }));
    all.push(...page.messages);
    if (page.messages.length > 0) {
      dataOf(await client.request('ack', { messageIds: page.messages.map((m) => m.id) }));
    }
    if (!page.hasMore) return all;
  }
}

describe('per-device offline queue', () => {
  let service: TestApp;
  const open: TestClient[] = [];
  const client = async (user: string, deviceId: string) => {
    const c = await connect(service.url, user, { deviceId });
    open.push(c);
    return c;
  };

  beforeAll(async () => {
    service = await startTestApp();
  });

  afterAll(async () => {
    for (const c of open) c.close();
    await service.close();
  });

  it('queues for an offline device and hands it over through get-unacked after it connects', async () => {
    const alice = userId('alice');
    const bob = userId('bob');
    const conversationId = await createConversation(service, alice, [bob]);
    (await client(bob, 'phone')).close(); // bob's phone is known, then goes offline
    const sender = await client(alice, 'phone');
    const sent = await sendMany(sender, conversationId, 3);

    const bobPhone = await client(bob, 'phone');
    expect(bobPhone.session.unacked).toBe(3);
    const page = dataOf(await bobPhone.request<PageData>('get-unacked', {}));
    expect(page.hasMore).toBe(false);
    expect(page.messages).toEqual(sent);
    // get-unacked does not remove: asking again returns the same.
    expect(dataOf(await bobPhone.request<PageData>('get-unacked', {})).messages).toEqual(sent);
  });

  it('keeps a separate queue for each of three devices of one user', async () => {
    const alice = userId('alice');
    const bob = userId('bob');
    const conversationId = await createConversation(service, alice, [bob]);
    for (const device of ['phone', 'tablet', 'laptop']) (await client(bob, device)).close();
    const sender = await client(alice, 'phone');
    const sent = await sendMany(sender, conversationId, 4);

    const phone = await client(bob, 'phone');
    expect(dataOf(await phone.request<{ acked: number }>('ack', { messageIds: sent.map((m) => m.id) }))).toEqual({
      acked: 4,
    });
    expect(dataOf(await phone.request<PageData>('get-unacked', {})).messages).toEqual([]);

    const tablet = await client(bob, 'tablet');
    expect(tablet.session.unacked).toBe(4);
    dataOf(await tablet.request('ack', { messageIds: [sent[0].id] }));
    expect(dataOf(await tablet.request<PageData>('get-unacked', {})).messages.map((m) => m.seq)).toEqual([2, 3, 4]);

    const laptop = await client(bob, 'laptop');
    expect(dataOf(await laptop.request<PageData>('get-unacked', {})).messages).toEqual(sent);
  });

  it('after 100 sent and 60 acked, a reconnecting device gets exactly the other 40, in seq order', async () => {
    const alice = userId('alice');
    const bob = userId('bob');
    const conversationId = await createConversation(service, alice, [bob]);
    const bobPhone = await client(bob, 'phone');
    const sender = await client(alice, 'phone');
    const sent = await sendMany(sender, conversationId, 100);
    await bobPhone.waitForMessages(100);
    // Ack a scattered 60: every message whose seq is not a multiple of 5 or 3... simply the first 30 and the last 30.
    const acked = [...sent.slice(0, 30), ...sent.slice(70)];
    dataOf(await bobPhone.request('ack', { messageIds: acked.slice(0, 50).map((m) => m.id) }));
    dataOf(await bobPhone.request('ack', { messageIds: acked.slice(50).map((m) => m.id) }));
    bobPhone.close();

    const again = await client(bob, 'phone');
    expect(again.session.unacked).toBe(40);
    const rest = await drain(again, 15);
    expect(rest.map((m) => m.seq)).toEqual(sent.slice(30, 70).map((m) => m.seq));
    expect(dataOf(await again.request<PageData>('get-unacked', {}))).toEqual({ messages: [], hasMore: false });
  });

  it('rebuilds a connected device’s queue when Redis loses it: get-unacked still pages through all of it, in order', async () => {
    const alice = userId('alice');
    const bob = userId('bob');
    const conversationId = await createConversation(service, alice, [bob]);
    (await client(bob, 'phone')).close();
    const sender = await client(alice, 'phone');
    const sent = await sendMany(sender, conversationId, 30);
    const bobPhone = await client(bob, 'phone');
    expect(bobPhone.session.unacked).toBe(30);

    await flushTestRedis(service.app.get(RedisService).client);

    const first = dataOf(await bobPhone.request<PageData>('get-unacked', { limit: 10 }));
    expect(first.messages).toEqual(sent.slice(0, 10));
    expect(first.hasMore).toBe(true);
    dataOf(await bobPhone.request('ack', { messageIds: first.messages.map((m) => m.id) }));
    expect((await drain(bobPhone, 7)).map((m) => m.id)).toEqual(sent.slice(10).map((m) => m.id));
    expect(dataOf(await bobPhone.request<PageData>('get-unacked', {}))).toEqual({ messages: [], hasMore: false });
  });

  it('removes every message acked the instant it arrives live: 200 acks, each acked 1, nothing left queued', async () => {
    const alice = userId('alice');
    const bob = userId('bob');
    const conversationId = await createConversation(service, alice, [bob]);
    const bobPhone = await client(bob, 'phone');
    const sender = await client(alice, 'phone');
    // The live emit is not held back until the queue write's reply is in: an ack sent on
    // receipt must still find the entry (and count it), never overtake it.
    const ackReplies: ReturnType<typeof bobPhone.request<{ acked: number }>>[] = [];
    bobPhone.socket.on('message', (message: WireMessage) => {
      ackReplies.push(bobPhone.request<{ acked: number }>('ack', { messageIds: [message.id] }));
    });
    await sendMany(sender, conversationId, 200, 50);
    await bobPhone.waitForMessages(200);
    const replies = await Promise.all(ackReplies);
    expect(replies.map((reply) => dataOf(reply).acked)).toEqual(Array.from({ length: 200 }, () => 1));
    expect(dataOf(await bobPhone.request<PageData>('get-unacked', {}))).toEqual({ messages: [], hasMore: false });
  });

  it('treats acking twice or acking an unknown id as no error, and tells the sender delivered', async () => {
    const alice = userId('alice');
    const bob = userId('bob');
    const conversationId = await createConversation(service, alice, [bob]);
    const bobPhone = await client(bob, 'phone');
    const aliceLaptop = await client(alice, 'laptop');
    const sender = await client(alice, 'phone');
    const [first, second] = await sendMany(sender, conversationId, 2, 1);
    await bobPhone.waitForMessages(2);

    const receipt = aliceLaptop.waitForEvent<ReceiptPayload>('receipt', (r) => r.status === 'delivered');
    expect(
      dataOf(await bobPhone.request('ack', { messageIds: [first.id, second.id, randomUUID(), 'not-even-a-uuid'] })),
    ).toEqual({
      acked: 2,
    });
    expect(await receipt).toEqual({
      conversationId,
      userId: bob,
      status: 'delivered',
      seq: 2,
      messageIds: [first.id, second.id],
    });
    expect(await bobPhone.request('ack', { messageIds: [first.id] })).toEqual({ ok: true, data: { acked: 0 } });
  });

  it('queues only what is sent after a device is first known; earlier messages are read with history', async () => {
    const alice = userId('alice');
    const bob = userId('bob');
    const conversationId = await createConversation(service, alice, [bob]);
    const sender = await client(alice, 'phone');
    const before = await sendMany(sender, conversationId, 2);
    const bobNew = await client(bob, 'brand-new');
    expect(bobNew.session.unacked).toBe(0);
    const after = await sendMany(sender, conversationId, 1);
    await bobNew.waitForMessages(1);
    expect(dataOf(await bobNew.request<PageData>('get-unacked', {})).messages).toEqual(after);
    expect(dataOf(await bobNew.request<PageData>('history', { conversationId })).messages).toEqual([
      ...before,
      ...after,
    ]);
  });

  it('does not queue a message for the device that sent it, but does for its other devices', async () => {
    const alice = userId('alice');
    const conversationId = await createConversation(service, alice, []);
    (await client(alice, 'laptop')).close();
    const phone = await client(alice, 'phone');
    const sent = await sendMany(phone, conversationId, 2);
    expect(dataOf(await phone.request<PageData>('get-unacked', {})).messages).toEqual([]);
    const laptop = await client(alice, 'laptop');
    expect(dataOf(await laptop.request<PageData>('get-unacked', {})).messages).toEqual(sent);
  });
});

describe('offline queue bound', () => {
  it('keeps the newest OFFLINE_QUEUE_MAX entries; the device reads the gap with history', async () => {
    const service = await startTestApp({ OFFLINE_QUEUE_MAX: '5' });
    try {
      const alice = userId('alice');
      const bob = userId('bob');
      const conversationId = await createConversation(service, alice, [bob]);
      (await connect(service.url, bob, { deviceId: 'phone' })).close();
      const sender = await connect(service.url, alice, { deviceId: 'phone' });
      const sent = await sendMany(sender, conversationId, 8, 1);
      const bobPhone = await connect(service.url, bob, { deviceId: 'phone' });
      expect(bobPhone.session.unacked).toBe(5);
      const queued = dataOf(await bobPhone.request<PageData>('get-unacked', {})).messages;
      expect(queued.map((m) => m.seq)).toEqual([4, 5, 6, 7, 8]);
      const gap = dataOf(await bobPhone.request<PageData>('history', { conversationId, beforeSeq: queued[0].seq }));
      expect(gap.messages).toEqual(sent.slice(0, 3));
      sender.close();
      bobPhone.close();
    } finally {
      await service.close();
    }
  });
});

describe('PostgreSQL is the source of truth', () => {
  it('rebuilds queues after Redis loses everything (FLUSHALL) with 1,000 unacked: all 1,000 come back', async () => {
    const redis = await startPrivateRedis();
    // A Redis of its own to stop and start: a single server, in the cluster project too.
    const service = await startTestApp({ REDIS_URL: redis.url, REDIS_MODE: 'single' });
    try {
      const alice = userId('alice');
      const bob = userId('bob');
      const conversationId = await createConversation(service, alice, [bob]);
      (await connect(service.url, bob, { deviceId: 'phone' })).close();
      const sender = await connect(service.url, alice, { deviceId: 'phone' });
      const sent = await sendMany(sender, conversationId, 1000, 50);

      const admin = new Redis(redis.url);
      await admin.flushall();
      await admin.quit();

      const bobPhone = await connect(service.url, bob, { deviceId: 'phone' });
      expect(bobPhone.session.unacked).toBe(1000);
      const back = await drain(bobPhone, 100);
      expect(back.map((m) => m.id)).toEqual(sent.map((m) => m.id));
      sender.close();
      bobPhone.close();
    } finally {
      await service.close();
      await redis.stop();
    }
  });

  it('keeps 1,000 unacked messages across a SIGKILL of the server: all come back after restart', async () => {
    const { env, dropDatabase } = await testEnvironment({ MIGRATE_ON_START: 'false', LOG_LEVEL: 'warn' });
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const processEnv = { ...env, NODE_ENV: 'production', PORT: String(port) };
    let server = spawnService(processEnv);
    try {
      expect(await pollStatus(`${url}/health/ready`, (s) => s === 200)).toBe(200);
      const alice = userId('alice');
      const bob = userId('bob');
      // Conversations are created over the service layer in-process elsewhere; here the
      // server is another process, so create it through a short-lived in-process app on the same database.
      const creator = await startTestApp({ DATABASE_URL: env.DATABASE_URL, REDIS_URL: env.REDIS_URL });
      const conversationId = await createConversation(creator, alice, [bob]);
      await creator.app.close();

      (await connect(url, bob, { deviceId: 'phone' })).close();
      const sender = await connect(url, alice, { deviceId: 'phone' });
      const sent = await sendMany(sender, conversationId, 1000, 50);
      sender.close();

      server.child.kill('SIGKILL');
      await server.exited(10_000);
      server = spawnService(processEnv);
      expect(await pollStatus(`${url}/health/ready`, (s) => s === 200)).toBe(200);

      const bobPhone = await connect(url, bob, { deviceId: 'phone' });
      expect(bobPhone.session.unacked).toBe(1000);
      const back = await drain(bobPhone, 100);
      expect(back.map((m) => m.id)).toEqual(sent.map((m) => m.id));
      bobPhone.close();
    } finally {
      server.child.kill('SIGKILL');
      await dropDatabase();
    }
  });
});
