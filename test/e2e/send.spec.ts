import { randomUUID } from 'node:crypto';

import type { Socket } from 'socket.io-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { PageData, SendData, WireError } from '@messaging-service/client/protocol';
import { startTestApp, type TestApp } from '../support/app.js';
import { connect, dataOf, type TestClient } from '../support/clients.js';
import { createConversation, userId } from '../support/fixtures.js';

describe('send and history over a real socket', () => {
  let service: TestApp;
  const open: TestClient[] = [];
  const client = async (user: string, deviceId = 'phone') => {
    const c = await connect(service.url, user, { deviceId });
    open.push(c);
    return c;
  };

  beforeAll(async () => {
    service = await startTestApp({ MAX_MESSAGE_BYTES: '1024' });
  });

  afterAll(async () => {
    for (const c of open) c.close();
    await service.close();
  });

  it('stores a message and delivers it live to the other members, not back to the sending socket', async () => {
    const alice = userId('alice');
    const bob = userId('bob');
    const conversationId = await createConversation(service, alice, [bob]);
    const alicePhone = await client(alice, 'phone');
    const aliceLaptop = await client(alice, 'laptop');
    const bobPhone = await client(bob, 'phone');

    const reply = await alicePhone.request<SendData>('send', { conversationId, clientMsgId: 'm1', body: 'hello bob' });
    const { message, duplicate } = dataOf(reply);
    expect(duplicate).toBe(false);
    expect(message).toMatchObject({
      conversationId,
      seq: 1,
      senderId: alice,
      senderDeviceId: 'phone',
      clientMsgId: 'm1',
      contentType: 'text/plain',
      body: 'hello bob',
    });
    expect(message.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(new Date(message.createdAt).toISOString()).toBe(message.createdAt);

    expect((await bobPhone.waitForMessages(1))[0]).toEqual(message);
    expect((await aliceLaptop.waitForMessages(1))[0]).toEqual(message);
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(alicePhone.messages).toEqual([]);
  });

  it('makes a resent clientMsgId return the original, storing and delivering nothing new', async () => {
    const alice = userId('alice');
    const bob = userId('bob');
    const conversationId = await createConversation(service, alice, [bob]);
    const sender = await client(alice);
    const receiver = await client(bob);
    const replies = await Promise.all(
      Array.from({ length: 5 }, () =>
        sender.request<SendData>('send', { conversationId, clientMsgId: 'same', body: 'once' }),
      ),
    );
    const ids = new Set(replies.map((r) => dataOf(r).message.id));
    expect(ids.size).toBe(1);
    expect(replies.filter((r) => !dataOf(r).duplicate)).toHaveLength(1);
    await receiver.waitForMessages(1);
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(receiver.messages).toHaveLength(1);
    const history = dataOf(await receiver.request<PageData>('history', { conversationId }));
    expect(history.messages).toHaveLength(1);
    const unacked = dataOf(await receiver.request<PageData>('get-unacked', {}));
    expect(unacked.messages.map((m) => m.id)).toEqual([...ids]);
  });

  it('gives 20 concurrent senders x 50 messages seq 1..1000 with no gap, seen in order by every device', async () => {
    const users = Array.from({ length: 20 }, (_, i) => userId(`sender${i}`));
    const reader = userId('reader');
    const conversationId = await createConversation(service, reader, users);
    const readerClient = await client(reader);
    const senders = await Promise.all(users.map((u) => client(u)));
    await Promise.all(
      senders.map(async (s, i) => {
        for (let n = 0; n < 50; n++) {
          dataOf(await s.request('send', { conversationId, clientMsgId: `s${i}-${n}`, body: `${i}:${n}` }));
        }
      }),
    );
    const received = await readerClient.waitForMessages(1000, 30_000);
    expect(received.map((m) => m.seq)).toEqual(Array.from({ length: 1000 }, (_, i) => i + 1));
    // Each sender sees everyone else's messages in seq order too.
    for (const s of senders.slice(0, 3)) {
      await s.waitForMessages(950, 30_000);
      const seqs = s.messages.map((m) => m.seq);
      expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
    }
  });

  it('pages history by seq in both directions', async () => {
    const alice = userId('alice');
    const conversationId = await createConversation(service, alice, []);
    const c = await client(alice);
    for (let n = 1; n <= 7; n++)
      dataOf(await c.request('send', { conversationId, clientMsgId: `h${n}`, body: `m${n}` }));

    const latest = dataOf(await c.request<PageData>('history', { conversationId, limit: 3 }));
    expect(latest.messages.map((m) => m.seq)).toEqual([5, 6, 7]);
    expect(latest.hasMore).toBe(true);
    const before = dataOf(await c.request<PageData>('history', { conversationId, beforeSeq: 5, limit: 3 }));
    expect(before.messages.map((m) => m.body)).toEqual(['m2', 'm3', 'm4']);
    const first = dataOf(await c.request<PageData>('history', { conversationId, beforeSeq: 2 }));
    expect(first).toMatchObject({ hasMore: false });
    expect(first.messages.map((m) => m.seq)).toEqual([1]);
    const after = dataOf(await c.request<PageData>('history', { conversationId, afterSeq: 5 }));
    expect(after).toMatchObject({ hasMore: false });
    expect(after.messages.map((m) => m.seq)).toEqual([6, 7]);
    const window = dataOf(await c.request<PageData>('history', { conversationId, afterSeq: 2, beforeSeq: 5 }));
    expect(window.messages.map((m) => m.seq)).toEqual([3, 4]);
  });

  it('stores e2e ciphertext as given and returns it as base64', async () => {
    const alice = userId('alice');
    const bob = userId('bob');
    const conversationId = await createConversation(service, alice, [bob], { kind: 'direct', encryption: 'e2e' });
    const sender = await client(alice);
    const ciphertext = Buffer.from('opaque-bytes-\u0000\u0001').toString('base64');
    const { message } = dataOf(
      await sender.request<SendData>('send', {
        conversationId,
        clientMsgId: 'e1',
        ciphertext,
        contentType: 'application/octet-stream',
      }),
    );
    expect(message).toMatchObject({ ciphertext, contentType: 'application/octet-stream' });
    expect(message).not.toHaveProperty('body');
    const page = dataOf(await sender.request<PageData>('history', { conversationId }));
    expect(page.messages[0].ciphertext).toBe(ciphertext);

    const wrongField = await sender.request('send', { conversationId, clientMsgId: 'e2', body: 'plain' });
    expect(wrongField).toMatchObject({ ok: false, error: { code: 'bad_request' } });
  });

  describe('errors', () => {
    let alice: string;
    let conversationId: string;
    let c: TestClient;

    beforeAll(async () => {
      alice = userId('alice');
      conversationId = await createConversation(service, alice, []);
      c = await client(alice);
    });

    const errorOf = async (event: string, payload?: unknown): Promise<WireError> => {
      const reply = await c.request(event, payload);
      if (reply.ok) throw new Error(`expected an error for ${event}`);
      return reply.error;
    };

    it('answers bad_request listing each problem', async () => {
      const error = await errorOf('send', { conversationId: 'nope', clientMsgId: 'bad id!' });
      expect(error.code).toBe('bad_request');
      const problems = (error.details as { problems: { path: string }[] }).problems.map((p) => p.path);
      expect(problems).toEqual(expect.arrayContaining(['conversationId', 'clientMsgId']));
      expect((await errorOf('send', 'a string')).code).toBe('bad_request');
      expect((await errorOf('send', [1, 2])).code).toBe('bad_request');
      expect((await errorOf('send', { conversationId, clientMsgId: 'x' })).code).toBe('bad_request'); // no body
      expect((await errorOf('send', { conversationId, clientMsgId: 'x', body: 'b', ciphertext: 'AAAA' })).code).toBe(
        'bad_request',
      );
      expect((await errorOf('history', { conversationId, limit: 0 })).code).toBe('bad_request');
      expect((await errorOf('history', { conversationId, limit: 101 })).code).toBe('bad_request');
      expect((await errorOf('ack', { messageIds: [] })).code).toBe('bad_request');
      expect((await errorOf('get-unacked', { limit: 'ten' })).code).toBe('bad_request');
    });

    it('answers not_found for a conversation that does not exist and forbidden for a non-member', async () => {
      expect((await errorOf('send', { conversationId: randomUUID(), clientMsgId: 'x', body: 'b' })).code).toBe(
        'not_found',
      );
      const other = await createConversation(service, userId('carol'), []);
      expect((await errorOf('send', { conversationId: other, clientMsgId: 'x', body: 'b' })).code).toBe('forbidden');
      expect((await errorOf('history', { conversationId: other })).code).toBe('forbidden');
    });

    it('answers payload_too_large past maxMessageBytes and maxBatch', async () => {
      expect(c.session.limits).toEqual({ maxMessageBytes: 1024, maxBatch: 100 });
      expect((await errorOf('send', { conversationId, clientMsgId: 'big', body: 'é'.repeat(513) })).code).toBe(
        'payload_too_large',
      );
      const ids = Array.from({ length: 101 }, () => randomUUID());
      expect((await errorOf('ack', { messageIds: ids })).code).toBe('payload_too_large');
      // Exactly at the limit is fine.
      dataOf(await c.request('send', { conversationId, clientMsgId: 'edge', body: 'é'.repeat(512) }));
    });

    it('answers unknown_event, and uses an error event when a failing request has no ack', async () => {
      expect((await errorOf('shout', { loud: true })).code).toBe('unknown_event');
      (c.socket as unknown as Socket).emit('send', { conversationId: 'nope' });
      const event = await c.waitForEvent<{ code: string; event: string }>('error', (e) => e.event === 'send');
      expect(event.code).toBe('bad_request');
      (c.socket as unknown as Socket).emit('nonsense');
      expect((await c.waitForEvent<{ code: string }>('error', (e) => e.code === 'unknown_event')).code).toBe(
        'unknown_event',
      );
      expect(c.socket.connected).toBe(true);
    });

    it('rejects a clientMsgId reused for another conversation as a conflict', async () => {
      const second = await createConversation(service, alice, []);
      dataOf(await c.request('send', { conversationId, clientMsgId: 'reused', body: 'a' }));
      expect((await errorOf('send', { conversationId: second, clientMsgId: 'reused', body: 'b' })).code).toBe(
        'conflict',
      );
    });

    it('answers ping with the given t and the server time', async () => {
      const reply = dataOf(await c.request<{ t: unknown; serverTime: string }>('ping', { t: 42 }));
      expect(reply.t).toBe(42);
      expect(Math.abs(Date.parse(reply.serverTime) - Date.now())).toBeLessThan(5_000);
    });
  });
});
