import { randomUUID } from 'node:crypto';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { conversationListReply, conversationReply } from '../../src/conversations/conversations.schemas.js';
import { RealtimeService } from '../../src/realtime/realtime.service.js';
import { rooms } from '../../src/realtime/realtime.types.js';
import type { ReceiptPayload } from '@messaging-service/client/protocol';
import { httpCall, type HttpReply } from '../support/http.js';
import { startTestApp, type TestApp } from '../support/app.js';
import { connect, mintToken, type TestClient } from '../support/clients.js';
import { createConversation, userId } from '../support/fixtures.js';

type Reply = HttpReply;

describe('REST conversations', () => {
  let service: TestApp;
  let serviceToken: string;
  const open: TestClient[] = [];

  const call = (method: string, path: string, token: string | null, body?: unknown): Promise<Reply> =>
    httpCall(service.url, method, path, token, body);
  const as = async (user: string) => mintToken(user);
  /** Puts the user's sockets in the conversation's room, as the socket `join` event does. */
  const joinRoom = async (user: string, conversationId: string) => {
    const server = service.app.get(RealtimeService).server!;
    server.in(rooms.user(user)).socketsJoin(rooms.conversation(conversationId));
    await expect
      .poll(async () => (await server.in(rooms.conversation(conversationId)).fetchSockets()).length)
      .toBeGreaterThan(0);
  };
  const problemPaths = (reply: Reply) => (reply.body.error.details.problems as { path: string }[]).map((p) => p.path);

  beforeAll(async () => {
    service = await startTestApp();
    serviceToken = await mintToken('billing-service', { claims: { scope: 'service' } });
  });

  afterAll(async () => {
    for (const c of open) c.close();
    await service.close();
  });

  describe('POST /v1/conversations', () => {
    it('creates a group with the caller as owner and member, 201', async () => {
      const alice = userId('alice');
      const bob = userId('bob');
      const reply = await call('POST', '/v1/conversations', await as(alice), {
        kind: 'group',
        memberIds: [bob],
        title: 'Team',
      });
      expect(reply.status).toBe(201);
      const { data } = conversationReply.parse(reply.body);
      expect(data).toMatchObject({ kind: 'group', title: 'Team', encryption: 'server', lastSeq: 0 });
      expect(data.id).toMatch(/^[0-9a-f-]{36}$/);
      expect(data.members.map((m) => [m.userId, m.role, m.readSeq])).toEqual([
        [alice, 'owner', 0],
        [bob, 'member', 0],
      ]);
      expect(new Date(data.createdAt).toISOString()).toBe(data.createdAt);
    });

    it('returns the existing direct conversation of a pair with 200, whoever creates it', async () => {
      const alice = userId('alice');
      const bob = userId('bob');
      const first = await call('POST', '/v1/conversations', await as(alice), {
        kind: 'direct',
        memberIds: [bob],
        encryption: 'e2e',
      });
      expect(first.status).toBe(201);
      expect(first.body.data.encryption).toBe('e2e');
      const again = await call('POST', '/v1/conversations', await as(bob), { kind: 'direct', memberIds: [alice, bob] });
      expect(again.status).toBe(200);
      expect(again.body.data.id).toBe(first.body.data.id);
      const byService = await call('POST', '/v1/conversations', serviceToken, {
        kind: 'direct',
        memberIds: [bob, alice],
      });
      expect(byService.status).toBe(200);
      expect(byService.body.data.id).toBe(first.body.data.id);
    });

    it('lets a service token create for a named user, or with no user at all', async () => {
      const alice = userId('alice');
      const bob = userId('bob');
      const named = await call('POST', '/v1/conversations', serviceToken, {
        kind: 'group',
        memberIds: [bob],
        userId: alice,
      });
      expect(named.status).toBe(201);
      expect(named.body.data.members).toEqual(
        expect.arrayContaining([
          expect.objectContaining({ userId: alice, role: 'owner' }),
          expect.objectContaining({ userId: bob, role: 'member' }),
        ]),
      );
      const unnamed = await call('POST', '/v1/conversations', serviceToken, { kind: 'group', memberIds: [bob, alice] });
      expect(unnamed.status).toBe(201);
      expect((unnamed.body.data.members as { userId: string }[]).map((m) => m.userId).sort()).toEqual(
        [alice, bob].sort(),
      );
      expect((unnamed.body.data.members as { userId: string }[]).some((m) => m.userId === 'billing-service')).toBe(
        false,
      );
    });

    it('answers 400 listing each problem', async () => {
      const alice = await as(userId('alice'));
      const invalid = await call('POST', '/v1/conversations', alice, { kind: 'circle', memberIds: 'bob', title: 7 });
      expect(invalid.status).toBe(400);
      expect(invalid.body.error).toMatchObject({ code: 'bad_request', requestId: expect.any(String) });
      expect(problemPaths(invalid)).toEqual(expect.arrayContaining(['kind', 'memberIds', 'title']));
      expect(invalid.body.error.details.problems[0]).toEqual({ path: expect.any(String), message: expect.any(String) });

      const threeInDirect = await call('POST', '/v1/conversations', alice, { kind: 'direct', memberIds: ['b', 'c'] });
      expect(threeInDirect.status).toBe(400);
      expect(problemPaths(threeInDirect)).toEqual(['memberIds']);
      expect((await call('POST', '/v1/conversations', alice, [1, 2])).status).toBe(400);
      expect((await call('POST', '/v1/conversations', serviceToken, { kind: 'group', memberIds: [] })).status).toBe(
        400,
      );
    });

    it('answers 401 without a valid token, and 403 when a user token names another user', async () => {
      const body = { kind: 'group', memberIds: [] };
      const none = await call('POST', '/v1/conversations', null, body);
      expect(none.status).toBe(401);
      expect(none.body.error.code).toBe('unauthorized');
      expect(none.headers.get('www-authenticate')).toBe('Bearer');
      const forged = await call(
        'POST',
        '/v1/conversations',
        await mintToken('x', { secret: 'another-secret-another-secret-0123456789' }),
        body,
      );
      expect(forged.status).toBe(401);
      expect(forged.body.error.code).toBe('unauthorized');
      const expired = await call('POST', '/v1/conversations', await mintToken('x', { ttlSec: -120 }), body);
      expect(expired.status).toBe(401);
      expect(expired.body.error.code).toBe('token_expired');
      const basic = await fetch(`${service.url}/v1/conversations`, { headers: { authorization: 'Basic YTpi' } });
      expect(basic.status).toBe(401);

      const impersonating = await call('POST', '/v1/conversations', await as(userId('mallory')), {
        ...body,
        userId: 'alice',
      });
      expect(impersonating.status).toBe(403);
      expect(impersonating.body.error.code).toBe('forbidden');
    });
  });

  describe('GET /v1/conversations', () => {
    it('pages the caller’s conversations newest activity first with an opaque cursor', async () => {
      const alice = userId('alice');
      const ids: string[] = [];
      for (let i = 0; i < 5; i++) ids.push(await createConversation(service, alice, [userId('peer')]));
      await createConversation(service, userId('stranger'), []); // not alice's
      // Activity on the oldest moves it to the top.
      const sent = await call('POST', `/v1/conversations/${ids[0]}/messages`, await as(alice), {
        clientMsgId: 'bump',
        body: 'hi',
      });
      expect(sent.status).toBe(201);
      const expected = [ids[0], ids[4], ids[3], ids[2], ids[1]];

      const token = await as(alice);
      const seen: string[] = [];
      let cursor: string | null = null;
      let pages = 0;
      do {
        const query: string = cursor ? `?limit=2&cursor=${encodeURIComponent(cursor)}` : '?limit=2';
        const reply = await call('GET', `/v1/conversations${query}`, token);
        expect(reply.status).toBe(200);
        const page = conversationListReply.parse(reply.body);
        expect(page.data.length).toBeLessThanOrEqual(2);
        seen.push(...page.data.map((c) => c.id));
        cursor = page.nextCursor;
        pages++;
      } while (cursor !== null && pages < 10);
      expect(seen).toEqual(expected);
      expect(pages).toBe(3);

      const all = await call('GET', '/v1/conversations', token);
      expect((all.body.data as { id: string }[]).map((c) => c.id)).toEqual(expected);
      expect(all.body.nextCursor).toBeNull();
      expect(all.body.data[0]).toMatchObject({ id: ids[0], lastSeq: 1, readSeq: 0, kind: 'group' });
      expect(all.body.data[0]).not.toHaveProperty('members');

      const forAlice = await call('GET', `/v1/conversations?userId=${encodeURIComponent(alice)}`, serviceToken);
      expect((forAlice.body.data as { id: string }[]).map((c) => c.id)).toEqual(expected);
    });

    it('answers 400 for a bad cursor or limit, and for a service token naming no user', async () => {
      const token = await as(userId('alice'));
      const badCursor = await call('GET', '/v1/conversations?cursor=not-a-cursor', token);
      expect(badCursor.status).toBe(400);
      expect(problemPaths(badCursor)).toEqual(['cursor']);
      expect((await call('GET', '/v1/conversations?limit=0', token)).status).toBe(400);
      expect((await call('GET', '/v1/conversations?limit=101', token)).status).toBe(400);
      const notANumber = await call('GET', '/v1/conversations?limit=ten', token);
      expect(notANumber.status).toBe(400);
      expect(problemPaths(notANumber)).toEqual(['limit']);
      const unnamed = await call('GET', '/v1/conversations', serviceToken);
      expect(unnamed.status).toBe(400);
      expect(problemPaths(unnamed)).toEqual(['userId']);
      expect((await call('GET', '/v1/conversations', null)).status).toBe(401);
    });
  });

  describe('GET /v1/conversations/:id', () => {
    it('returns the conversation with its members to a member, 403 to anyone else, 404 when missing', async () => {
      const alice = userId('alice');
      const bob = userId('bob');
      const id = await createConversation(service, alice, [bob], { title: 'Plans' });
      const mine = await call('GET', `/v1/conversations/${id}`, await as(bob));
      expect(mine.status).toBe(200);
      expect(conversationReply.parse(mine.body).data).toMatchObject({ id, title: 'Plans', kind: 'group' });
      expect((mine.body.data.members as { userId: string }[]).map((m) => m.userId)).toEqual([alice, bob]);

      const other = await call('GET', `/v1/conversations/${id}`, await as(userId('mallory')));
      expect(other.status).toBe(403);
      expect(other.body.error.code).toBe('forbidden');
      const missing = await call('GET', `/v1/conversations/${randomUUID()}`, await as(alice));
      expect(missing.status).toBe(404);
      expect(missing.body.error.code).toBe('not_found');
      const malformed = await call('GET', '/v1/conversations/not-a-uuid', await as(alice));
      expect(malformed.status).toBe(400);
      expect(problemPaths(malformed)).toEqual(['id']);

      expect((await call('GET', `/v1/conversations/${id}`, serviceToken)).status).toBe(200);
      expect((await call('GET', `/v1/conversations/${id}?userId=${bob}`, serviceToken)).status).toBe(200);
      expect((await call('GET', `/v1/conversations/${id}?userId=outsider`, serviceToken)).status).toBe(403);
      expect((await call('GET', `/v1/conversations/${id}`, null)).status).toBe(401);
    });
  });

  describe('POST /v1/conversations/:id/read', () => {
    it('moves the read mark forward only and relays a read receipt to the conversation room', async () => {
      const alice = userId('alice');
      const bob = userId('bob');
      const id = await createConversation(service, alice, [bob]);
      const aliceToken = await as(alice);
      for (let n = 1; n <= 3; n++) {
        const sent = await call('POST', `/v1/conversations/${id}/messages`, aliceToken, {
          clientMsgId: `r${n}`,
          body: `m${n}`,
        });
        expect(sent.status).toBe(201);
      }
      const watcher = await connect(service.url, alice, { deviceId: 'watcher' });
      open.push(watcher);
      await joinRoom(alice, id);

      const bobToken = await as(bob);
      const read = await call('POST', `/v1/conversations/${id}/read`, bobToken, { seq: 2 });
      expect(read.status).toBe(200);
      expect(read.body).toEqual({ data: { readSeq: 2 } });
      const receipt = await watcher.waitForEvent<ReceiptPayload>('receipt', (r) => r.conversationId === id);
      expect(receipt).toEqual({ conversationId: id, userId: bob, status: 'read', seq: 2 });

      expect((await call('POST', `/v1/conversations/${id}/read`, bobToken, { seq: 1 })).body).toEqual({
        data: { readSeq: 2 },
      });
      expect((await call('POST', `/v1/conversations/${id}/read`, bobToken, { seq: 99 })).body).toEqual({
        data: { readSeq: 3 },
      });
      const viaService = await call('POST', `/v1/conversations/${id}/read`, serviceToken, { seq: 3, userId: alice });
      expect(viaService.body).toEqual({ data: { readSeq: 3 } });
      const state = await call('GET', `/v1/conversations/${id}`, bobToken);
      expect((state.body.data.members as { readSeq: number }[]).map((m) => m.readSeq)).toEqual([3, 3]);
    });

    it('answers 400, 403 and 404', async () => {
      const alice = userId('alice');
      const id = await createConversation(service, alice, []);
      const token = await as(alice);
      const negative = await call('POST', `/v1/conversations/${id}/read`, token, { seq: -1 });
      expect(negative.status).toBe(400);
      expect(problemPaths(negative)).toEqual(['seq']);
      expect((await call('POST', `/v1/conversations/${id}/read`, token, {})).status).toBe(400);
      expect((await call('POST', `/v1/conversations/${id}/read`, serviceToken, { seq: 1 })).status).toBe(400);
      expect((await call('POST', `/v1/conversations/${id}/read`, await as('outsider'), { seq: 1 })).status).toBe(403);
      expect((await call('POST', `/v1/conversations/${randomUUID()}/read`, token, { seq: 1 })).status).toBe(404);
    });
  });
});
