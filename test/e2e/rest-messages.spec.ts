import { randomUUID } from 'node:crypto';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { historyReply, sendReply } from '../../src/messages/messages.schemas.js';
import type { PageData } from '@messaging-service/client/protocol';
import { startTestApp, type TestApp } from '../support/app.js';
import { connect, dataOf, mintToken, type TestClient } from '../support/clients.js';
import { createConversation, userId } from '../support/fixtures.js';

interface Reply {
  status: number;
  body: any; // eslint-disable-line @typescript-eslint/no-explicit-any
}

describe('REST messages', () => {
  let service: TestApp;
  let serviceToken: string;
  const open: TestClient[] = [];

  const request = async (method: string, path: string, token: string | null, init: RequestInit = {}) => {
    const headers = new Headers(init.headers);
    if (token !== null) headers.set('authorization', `Bearer ${token}`);
    const response = await fetch(`${service.url}${path}`, { ...init, method, headers });
    const text = await response.text();
    const reply: Reply = { status: response.status, body: text ? JSON.parse(text) : undefined };
    return reply;
  };
  const call = (method: string, path: string, token: string | null, body?: unknown) =>
    request(method, path, token, {
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  const as = (user: string) => mintToken(user);
  const client = async (user: string, deviceId = 'phone') => {
    const c = await connect(service.url, user, { deviceId });
    open.push(c);
    return c;
  };
  const problemPaths = (reply: Reply) => (reply.body.error.details.problems as { path: string }[]).map((p) => p.path);

  beforeAll(async () => {
    service = await startTestApp({ MAX_MESSAGE_BYTES: '1024' });
    serviceToken = await mintToken('notifier', { claims: { scope: 'service' } });
  });

  afterAll(async () => {
    for (const c of open) c.close();
    await service.close();
  });

  describe('POST /v1/conversations/:id/messages', () => {
    it('stores a message through the shared send path and delivers it live to every member device', async () => {
      const alice = userId('alice');
      const bob = userId('bob');
      const id = await createConversation(service, alice, [bob]);
      const bobPhone = await client(bob);
      const alicePhone = await client(alice);

      const reply = await call('POST', `/v1/conversations/${id}/messages`, await as(alice), {
        clientMsgId: 'rest-1',
        body: 'hello over REST',
      });
      expect(reply.status).toBe(201);
      const { data } = sendReply.parse(reply.body);
      expect(data.duplicate).toBe(false);
      expect(data.message).toMatchObject({
        conversationId: id,
        seq: 1,
        senderId: alice,
        senderDeviceId: '@rest',
        clientMsgId: 'rest-1',
        contentType: 'text/plain',
        body: 'hello over REST',
      });
      expect((await bobPhone.waitForMessages(1))[0]).toEqual(data.message);
      // The sender's own devices get it too: none of them sent it.
      expect((await alicePhone.waitForMessages(1))[0]).toEqual(data.message);

      const again = await call('POST', `/v1/conversations/${id}/messages`, await as(alice), {
        clientMsgId: 'rest-1',
        body: 'hello over REST',
      });
      expect(again.status).toBe(200);
      expect(again.body.data).toEqual({ message: data.message, duplicate: true });
      await new Promise((resolve) => setTimeout(resolve, 150));
      expect(bobPhone.messages).toHaveLength(1);
    });

    it('lets a service token send on behalf of a member, reaching the conversation’s sockets live', async () => {
      const alice = userId('alice');
      const bob = userId('bob');
      const id = await createConversation(service, alice, [bob]);
      const bobPhone = await client(bob);
      const aliceOffline = await client(alice, 'tablet');
      aliceOffline.close();

      const reply = await call('POST', `/v1/conversations/${id}/messages`, serviceToken, {
        clientMsgId: 'order-shipped-42',
        body: 'Your order has shipped',
        contentType: 'text/markdown',
        senderId: alice,
      });
      expect(reply.status).toBe(201);
      const message = reply.body.data.message;
      expect(message).toMatchObject({ senderId: alice, senderDeviceId: '@rest', contentType: 'text/markdown' });
      expect((await bobPhone.waitForMessages(1))[0]).toEqual(message);
      // Alice's offline device finds it in its queue.
      const tablet = await client(alice, 'tablet');
      expect(dataOf(await tablet.request<PageData>('get-unacked', {})).messages).toEqual([message]);
    });

    it('sends e2e ciphertext as given', async () => {
      const alice = userId('alice');
      const bob = userId('bob');
      const id = await createConversation(service, alice, [bob], { kind: 'direct', encryption: 'e2e' });
      const ciphertext = Buffer.from('sealed-by-the-client').toString('base64');
      const reply = await call('POST', `/v1/conversations/${id}/messages`, await as(bob), {
        clientMsgId: 'e',
        ciphertext,
      });
      expect(reply.status).toBe(201);
      expect(reply.body.data.message.ciphertext).toBe(ciphertext);
      expect(reply.body.data.message).not.toHaveProperty('body');
      const plain = await call('POST', `/v1/conversations/${id}/messages`, await as(bob), {
        clientMsgId: 'p',
        body: 'x',
      });
      expect(plain.status).toBe(400);
      expect(problemPaths(plain)).toEqual(['body']);
    });

    it('answers 400, 401, 403, 404, 409 and 413', async () => {
      const alice = userId('alice');
      const id = await createConversation(service, alice, []);
      const token = await as(alice);
      const path = `/v1/conversations/${id}/messages`;

      const invalid = await call('POST', path, token, { clientMsgId: 'bad id!', body: 5, contentType: 'nope' });
      expect(invalid.status).toBe(400);
      expect(problemPaths(invalid).sort()).toEqual(['body', 'clientMsgId', 'contentType']);
      expect((await call('POST', path, token, { clientMsgId: 'no-body' })).status).toBe(400);
      const unnamed = await call('POST', path, serviceToken, { clientMsgId: 'svc', body: 'x' });
      expect(unnamed.status).toBe(400);
      expect(problemPaths(unnamed)).toEqual(['senderId']);
      const malformed = await request('POST', path, token, {
        headers: { 'content-type': 'application/json' },
        body: '{"clientMsgId": "x", ',
      });
      expect(malformed.status).toBe(400);
      expect(malformed.body.error.code).toBe('bad_request');

      expect((await call('POST', path, null, { clientMsgId: 'x', body: 'x' })).status).toBe(401);
      const impersonating = await call('POST', path, await as(userId('mallory')), {
        clientMsgId: 'x',
        body: 'x',
        senderId: alice,
      });
      expect(impersonating.status).toBe(403);
      const outsider = await call('POST', path, await as(userId('mallory')), { clientMsgId: 'x', body: 'x' });
      expect(outsider.status).toBe(403);
      expect(outsider.body.error.code).toBe('forbidden');
      const forOutsider = await call('POST', path, serviceToken, { clientMsgId: 'x', body: 'x', senderId: 'outsider' });
      expect(forOutsider.status).toBe(403);
      const missing = await call('POST', `/v1/conversations/${randomUUID()}/messages`, token, {
        clientMsgId: 'x',
        body: 'x',
      });
      expect(missing.status).toBe(404);
      expect(missing.body.error.code).toBe('not_found');

      const second = await createConversation(service, alice, []);
      expect((await call('POST', path, token, { clientMsgId: 'reused', body: 'a' })).status).toBe(201);
      const reused = await call('POST', `/v1/conversations/${second}/messages`, token, {
        clientMsgId: 'reused',
        body: 'b',
      });
      expect(reused.status).toBe(409);
      expect(reused.body.error.code).toBe('conflict');

      const tooLong = await call('POST', path, token, { clientMsgId: 'big', body: 'é'.repeat(513) });
      expect(tooLong.status).toBe(413);
      expect(tooLong.body.error.code).toBe('payload_too_large');
      expect((await call('POST', path, token, { clientMsgId: 'edge', body: 'é'.repeat(512) })).status).toBe(201);
      const hugeBody = await call('POST', path, token, { clientMsgId: 'huge', body: 'x'.repeat(200 * 1024) });
      expect(hugeBody.status).toBe(413);
      expect(hugeBody.body.error).toMatchObject({ code: 'payload_too_large', requestId: expect.any(String) });
    });
  });

  describe('GET /v1/conversations/:id/messages', () => {
    it('pages history by seq in both directions with hasMore', async () => {
      const alice = userId('alice');
      const bob = userId('bob');
      const id = await createConversation(service, alice, [bob]);
      const token = await as(alice);
      for (let n = 1; n <= 7; n++) {
        expect(
          (await call('POST', `/v1/conversations/${id}/messages`, token, { clientMsgId: `h${n}`, body: `m${n}` }))
            .status,
        ).toBe(201);
      }
      const page = async (query: string, as = token) => {
        const reply = await call('GET', `/v1/conversations/${id}/messages${query}`, as);
        expect(reply.status).toBe(200);
        return historyReply.parse(reply.body);
      };
      const latest = await page('?limit=3');
      expect(latest.data.map((m) => m.seq)).toEqual([5, 6, 7]);
      expect(latest.hasMore).toBe(true);
      expect((await page('?beforeSeq=5&limit=3')).data.map((m) => m.body)).toEqual(['m2', 'm3', 'm4']);
      const after = await page('?afterSeq=5');
      expect(after).toMatchObject({ hasMore: false });
      expect(after.data.map((m) => m.seq)).toEqual([6, 7]);
      expect((await page('?afterSeq=2&beforeSeq=5')).data.map((m) => m.seq)).toEqual([3, 4]);
      expect((await page('')).data).toHaveLength(7);
      expect((await page(`?userId=${bob}&limit=1`, serviceToken)).data.map((m) => m.seq)).toEqual([7]);
    });

    it('answers 400, 401, 403 and 404', async () => {
      const alice = userId('alice');
      const id = await createConversation(service, alice, []);
      const token = await as(alice);
      const bad = await call('GET', `/v1/conversations/${id}/messages?limit=0&beforeSeq=-1`, token);
      expect(bad.status).toBe(400);
      expect(problemPaths(bad).sort()).toEqual(['beforeSeq', 'limit']);
      expect((await call('GET', `/v1/conversations/${id}/messages?limit=abc`, token)).status).toBe(400);
      expect((await call('GET', `/v1/conversations/${id}/messages`, serviceToken)).status).toBe(400);
      expect((await call('GET', `/v1/conversations/${id}/messages`, null)).status).toBe(401);
      expect((await call('GET', `/v1/conversations/${id}/messages`, await as('outsider'))).status).toBe(403);
      expect((await call('GET', `/v1/conversations/${randomUUID()}/messages`, token)).status).toBe(404);
    });
  });
});
