import { randomUUID } from 'node:crypto';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { conversationReply } from '../../src/conversations/conversations.schemas.js';
import { RealtimeService } from '../../src/realtime/realtime.service.js';
import { RedisService } from '../../src/redis/redis.service.js';
import { rooms } from '../../src/realtime/realtime.types.js';
import type { MembershipPayload, PageData, WireError } from '@messaging-service/client/protocol';
import { httpCall, type HttpReply } from '../support/http.js';
import { startTestApp, type TestApp } from '../support/app.js';
import { connect, dataOf, mintToken, type TestClient } from '../support/clients.js';
import { createConversation, userId } from '../support/fixtures.js';

type Reply = HttpReply;

describe('REST conversation members', () => {
  let service: TestApp;
  let serviceToken: string;
  const open: TestClient[] = [];

  const call = (method: string, path: string, token: string | null, body?: unknown): Promise<Reply> =>
    httpCall(service.url, method, path, token, body);
  const as = (user: string) => mintToken(user);
  const client = async (user: string, deviceId = 'phone') => {
    const c = await connect(service.url, user, { deviceId });
    open.push(c);
    return c;
  };
  const send = async (user: string, conversationId: string, clientMsgId: string) => {
    const reply = await call('POST', `/v1/conversations/${conversationId}/messages`, await as(user), {
      clientMsgId,
      body: clientMsgId,
    });
    expect(reply.status).toBe(201);
    return reply.body.data.message as { id: string; seq: number };
  };
  const socketsInRoom = async (conversationId: string) =>
    (await service.app.get(RealtimeService).server!.in(rooms.conversation(conversationId)).fetchSockets()).map(
      (s) => s.data.userId,
    );
  const joinRoom = async (user: string, conversationId: string) => {
    service.app.get(RealtimeService).server!.in(rooms.user(user)).socketsJoin(rooms.conversation(conversationId));
    await expect.poll(async () => (await socketsInRoom(conversationId)).includes(user)).toBe(true);
  };
  const errorOf = async (c: TestClient, event: string, payload: unknown): Promise<WireError> => {
    const reply = await c.request(event, payload);
    if (reply.ok) throw new Error(`expected ${event} to fail`);
    return reply.error;
  };

  beforeAll(async () => {
    service = await startTestApp();
    serviceToken = await mintToken('directory-service', { claims: { scope: 'service' } });
  });

  afterAll(async () => {
    for (const c of open) c.close();
    await service.close();
  });

  describe('POST /v1/conversations/:id/members', () => {
    it('adds members who then receive the conversation’s messages from that moment, live and queued', async () => {
      const alice = userId('alice');
      const bob = userId('bob');
      const carol = userId('carol');
      const id = await createConversation(service, alice, [bob]);
      await send(alice, id, 'before');

      const carolPhone = await client(carol, 'phone');
      const carolTablet = await client(carol, 'tablet');
      carolTablet.close(); // known, now offline
      const aliceSocket = await client(alice, 'laptop');
      await joinRoom(alice, id);

      const reply = await call('POST', `/v1/conversations/${id}/members`, await as(bob), { userIds: [carol] });
      expect(reply.status).toBe(201);
      const { data } = conversationReply.parse(reply.body);
      expect(data.members.map((m) => [m.userId, m.role])).toEqual([
        [alice, 'owner'],
        [bob, 'member'],
        [carol, 'member'],
      ]);
      const added: MembershipPayload = { conversationId: id, userId: carol, change: 'added' };
      expect(await carolPhone.waitForEvent('membership')).toEqual(added);
      expect(await aliceSocket.waitForEvent('membership')).toEqual(added);

      const after = await send(alice, id, 'after');
      expect((await carolPhone.waitForMessages(1))[0]).toMatchObject({ id: after.id, seq: 2 });
      // Even when Redis loses the queues, the rebuild from PostgreSQL has it: the add gave carol's devices cursors.
      await service.app.get(RedisService).client.flushdb();
      const tablet = await client(carol, 'tablet');
      expect(tablet.session.unacked).toBe(1);
      const queued = dataOf(await tablet.request<PageData>('get-unacked', {}));
      expect(queued.messages.map((m) => m.id)).toEqual([after.id]);
      // What came before the add is readable with history.
      const history = dataOf(await carolPhone.request<PageData>('history', { conversationId: id }));
      expect(history.messages.map((m) => m.seq)).toEqual([1, 2]);
    });

    it('lets a service token add without naming a user', async () => {
      const alice = userId('alice');
      const id = await createConversation(service, alice, []);
      const dave = userId('dave');
      const reply = await call('POST', `/v1/conversations/${id}/members`, serviceToken, { userIds: [dave, dave] });
      expect(reply.status).toBe(201);
      expect((reply.body.data.members as { userId: string }[]).map((m) => m.userId)).toEqual([alice, dave]);
    });

    it('answers 409 for a member already present (adding no one) and for a direct conversation', async () => {
      const alice = userId('alice');
      const bob = userId('bob');
      const id = await createConversation(service, alice, [bob]);
      const erin = userId('erin');
      const clash = await call('POST', `/v1/conversations/${id}/members`, await as(alice), { userIds: [erin, bob] });
      expect(clash.status).toBe(409);
      expect(clash.body.error).toMatchObject({ code: 'conflict', details: { userIds: [bob] } });
      const state = await call('GET', `/v1/conversations/${id}`, await as(alice));
      expect((state.body.data.members as { userId: string }[]).map((m) => m.userId)).toEqual([alice, bob]);

      const direct = await createConversation(service, alice, [bob], { kind: 'direct' });
      const grow = await call('POST', `/v1/conversations/${direct}/members`, await as(alice), { userIds: [erin] });
      expect(grow.status).toBe(409);
      expect(grow.body.error.code).toBe('conflict');
    });

    it('answers 400, 401, 403 and 404', async () => {
      const alice = userId('alice');
      const id = await createConversation(service, alice, []);
      const token = await as(alice);
      const empty = await call('POST', `/v1/conversations/${id}/members`, token, { userIds: [] });
      expect(empty.status).toBe(400);
      expect(empty.body.error.details.problems).toEqual([{ path: 'userIds', message: expect.any(String) }]);
      expect((await call('POST', `/v1/conversations/${id}/members`, token, { userIds: [''] })).status).toBe(400);
      expect((await call('POST', `/v1/conversations/${id}/members`, null, { userIds: ['x'] })).status).toBe(401);
      const outsider = await call('POST', `/v1/conversations/${id}/members`, await as(userId('mallory')), {
        userIds: ['mallory-friend'],
      });
      expect(outsider.status).toBe(403);
      expect(outsider.body.error.code).toBe('forbidden');
      const missing = await call('POST', `/v1/conversations/${randomUUID()}/members`, token, { userIds: ['x'] });
      expect(missing.status).toBe(404);
    });
  });

  describe('DELETE /v1/conversations/:id/members/:userId', () => {
    it('cuts a removed member off at once: no further messages, streams or queued entries; requests forbidden', async () => {
      const alice = userId('alice');
      const bob = userId('bob');
      const id = await createConversation(service, alice, [bob]);
      const other = await createConversation(service, alice, [bob]); // bob stays in this one

      const bobPhone = await client(bob, 'phone');
      const bobTablet = await client(bob, 'tablet');
      bobTablet.close(); // offline: its queue fills
      const aliceSocket = await client(alice, 'laptop');
      await joinRoom(bob, id);
      await joinRoom(alice, id);

      const first = await send(alice, id, 'm1');
      const kept = await send(alice, other, 'k1');
      await bobPhone.waitForMessages(2);

      const removed = await call('DELETE', `/v1/conversations/${id}/members/${bob}`, await as(alice));
      expect(removed.status).toBe(200);
      expect(removed.body).toEqual({ data: { conversationId: id, userId: bob } });
      const change: MembershipPayload = { conversationId: id, userId: bob, change: 'removed' };
      expect(await bobPhone.waitForEvent('membership', (p: MembershipPayload) => p.change === 'removed')).toEqual(
        change,
      );
      expect(await aliceSocket.waitForEvent('membership', (p: MembershipPayload) => p.change === 'removed')).toEqual(
        change,
      );
      expect(await socketsInRoom(id)).toEqual([alice]);

      await send(alice, id, 'm2');
      await send(alice, id, 'm3');
      const keptAfter = await send(alice, other, 'k2');
      // A message of the conversation bob kept arrives: everything sent after it in the other did too, or never will.
      await expect.poll(() => bobPhone.messages.some((m) => m.id === keptAfter.id)).toBe(true);
      // The conversation's streams (receipts here) still reach alice's joined socket, not bob's.
      expect((await call('POST', `/v1/conversations/${id}/read`, await as(alice), { seq: 3 })).status).toBe(200);
      await aliceSocket.waitForEvent('receipt', (r: { conversationId: string }) => r.conversationId === id);
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(bobPhone.messages.filter((m) => m.conversationId === id).map((m) => m.id)).toEqual([first.id]);
      expect(bobPhone.events.filter((e) => e.event === 'receipt')).toEqual([]);

      expect((await errorOf(bobPhone, 'send', { conversationId: id, clientMsgId: 'x', body: 'b' })).code).toBe(
        'forbidden',
      );
      expect((await errorOf(bobPhone, 'history', { conversationId: id })).code).toBe('forbidden');
      expect((await call('GET', `/v1/conversations/${id}`, await as(bob))).status).toBe(403);

      // The offline device's queue lost the conversation's entries, not the other's.
      const tablet = await client(bob, 'tablet');
      const queued = dataOf(await tablet.request<PageData>('get-unacked', {}));
      expect(queued.messages.map((m) => m.id)).toEqual([kept.id, keptAfter.id]);
    });

    it('lets a member leave; only the owner or a service removes others', async () => {
      const alice = userId('alice');
      const bob = userId('bob');
      const carol = userId('carol');
      const id = await createConversation(service, alice, [bob, carol]);

      const notOwner = await call('DELETE', `/v1/conversations/${id}/members/${carol}`, await as(bob));
      expect(notOwner.status).toBe(403);
      expect(notOwner.body.error.code).toBe('forbidden');
      const serviceForBob = await call(
        'DELETE',
        `/v1/conversations/${id}/members/${carol}?userId=${bob}`,
        serviceToken,
      );
      expect(serviceForBob.status).toBe(403);

      expect((await call('DELETE', `/v1/conversations/${id}/members/${bob}`, await as(bob))).status).toBe(200);
      expect((await call('DELETE', `/v1/conversations/${id}/members/${carol}`, serviceToken)).status).toBe(200);
      const state = await call('GET', `/v1/conversations/${id}`, await as(alice));
      expect((state.body.data.members as { userId: string }[]).map((m) => m.userId)).toEqual([alice]);

      // The owner leaving hands ownership to the longest-standing member.
      const group = await createConversation(service, alice, [bob, carol]);
      expect((await call('DELETE', `/v1/conversations/${group}/members/${alice}`, await as(alice))).status).toBe(200);
      const after = await call('GET', `/v1/conversations/${group}`, await as(bob));
      expect((after.body.data.members as { role: string }[]).filter((m) => m.role === 'owner')).toHaveLength(1);
    });

    it('answers 403, 404 and 409', async () => {
      const alice = userId('alice');
      const bob = userId('bob');
      const id = await createConversation(service, alice, [bob]);
      const token = await as(alice);
      expect((await call('DELETE', `/v1/conversations/${id}/members/nobody`, token)).status).toBe(404);
      expect((await call('DELETE', `/v1/conversations/${randomUUID()}/members/${bob}`, token)).status).toBe(404);
      expect((await call('DELETE', `/v1/conversations/${id}/members/${bob}`, await as('outsider'))).status).toBe(403);
      expect((await call('DELETE', `/v1/conversations/nope/members/${bob}`, token)).status).toBe(400);
      expect((await call('DELETE', `/v1/conversations/${id}/members/${bob}`, null)).status).toBe(401);
      const direct = await createConversation(service, alice, [bob], { kind: 'direct' });
      const leaveDirect = await call('DELETE', `/v1/conversations/${direct}/members/${bob}`, await as(bob));
      expect(leaveDirect.status).toBe(409);
    });
  });
});
