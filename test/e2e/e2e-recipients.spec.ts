import { randomBytes } from 'node:crypto';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { MembershipPayload, PageData, SendData } from '@messaging-service/client/protocol';
import { parseEnv } from '../../src/config/config.parser.js';
import { serveTestApp, testEnvironment } from '../support/app.js';
import { connect, dataOf, mintToken, type TestClient } from '../support/clients.js';
import { createConversation, userId } from '../support/fixtures.js';
import { httpCall } from '../support/http.js';

type Instance = Awaited<ReturnType<typeof serveTestApp>>;

const ciphertext = () => randomBytes(48).toString('base64');

// PROTOCOL.md section 1 (`send`'s recipientDevices, `membership` to every device) and
// section 3 (`devices_changed`): what the service owes a client that encrypts end to end.
describe('what the service owes an end-to-end client', () => {
  let first: Instance;
  let second: Instance;
  const open: TestClient[] = [];
  const client = async (instance: Instance, user: string, deviceId = 'phone') => {
    const c = await connect(instance.url, user, { deviceId });
    open.push(c);
    return c;
  };
  /** Publishes a device's key over REST (registering the device). */
  const publishKey = async (user: string, deviceId: string) => {
    const reply = await httpCall(first.url, 'PUT', `/v1/devices/${deviceId}`, await mintToken(user), {
      platform: 'web',
      publicKey: randomBytes(32).toString('base64'),
    });
    expect(reply.status, JSON.stringify(reply.body)).toBeLessThan(300);
  };

  beforeAll(async () => {
    // Two instances on one database and Redis, as behind a load balancer.
    const { env, dropDatabase } = await testEnvironment();
    first = await serveTestApp(parseEnv(env), () => Promise.resolve());
    second = await serveTestApp(parseEnv(env), dropDatabase);
  });

  afterAll(async () => {
    for (const c of open) c.close();
    await first.stop();
    await second.close();
  });

  it('refuses an e2e send sealed to a stale device list with devices_changed, storing nothing; the corrected resend is stored once', async () => {
    const [alice, bob, carol] = [userId('alice'), userId('bob'), userId('carol')];
    const conversationId = await createConversation(first, alice, [bob], { encryption: 'e2e' });
    await publishKey(alice, 'phone');
    await publishKey(alice, 'laptop');
    await publishKey(bob, 'phone');
    const bobTablet = await client(second, bob, 'tablet'); // known, but no key: not a recipient
    const sender = await client(first, alice, 'phone');
    const payload = { conversationId, clientMsgId: 'e2e-1', ciphertext: ciphertext() };

    const stale = await sender.request<SendData>('send', {
      ...payload,
      recipientDevices: [`${bob}/phone`, `${carol}/phone`],
    });
    expect(stale).toEqual({
      ok: false,
      error: {
        code: 'devices_changed',
        message: expect.any(String) as string,
        details: { missing: [`${alice}/laptop`], extra: [`${carol}/phone`] },
      },
    });
    const empty = dataOf(await sender.request<PageData>('history', { conversationId }));
    expect(empty.messages).toEqual([]);

    const current = [`${alice}/laptop`, `${bob}/phone`];
    const stored = dataOf(await sender.request<SendData>('send', { ...payload, recipientDevices: current }));
    expect(stored).toMatchObject({ duplicate: false, message: { seq: 1, clientMsgId: 'e2e-1' } });
    const again = dataOf(await sender.request<SendData>('send', { ...payload, recipientDevices: current }));
    expect(again).toEqual({ duplicate: true, message: stored.message });
    expect(dataOf(await sender.request<PageData>('history', { conversationId })).messages).toHaveLength(1);
    // The keyless device still gets the message (it just cannot open it).
    expect((await bobTablet.waitForMessages(1))[0]?.id).toBe(stored.message.id);

    // A send without the list is stored as before.
    const plain = await sender.request<SendData>('send', {
      conversationId,
      clientMsgId: 'e2e-2',
      ciphertext: ciphertext(),
    });
    expect(plain.ok).toBe(true);
  });

  it('sees a new key and a removed member at once, on every instance (no stale cache)', async () => {
    const [alice, bob] = [userId('alice'), userId('bob')];
    const conversationId = await createConversation(first, alice, [bob], { encryption: 'e2e' });
    await publishKey(bob, 'phone');
    // Sent through the second instance, whose caches must hear of the changes made on the first.
    const sender = await client(second, alice, 'phone');
    const send = (clientMsgId: string, recipientDevices: string[]) =>
      sender.request<SendData>('send', { conversationId, clientMsgId, ciphertext: ciphertext(), recipientDevices });
    expect((await send('k1', [`${bob}/phone`])).ok).toBe(true);

    await publishKey(bob, 'watch');
    expect(await send('k2', [`${bob}/phone`])).toMatchObject({
      ok: false,
      error: { code: 'devices_changed', details: { missing: [`${bob}/watch`], extra: [] } },
    });
    expect((await send('k2', [`${bob}/phone`, `${bob}/watch`])).ok).toBe(true);

    const removed = await httpCall(
      first.url,
      'DELETE',
      `/v1/conversations/${conversationId}/members/${bob}`,
      await mintToken(alice),
    );
    expect(removed.status).toBe(200);
    expect(await send('k3', [`${bob}/phone`, `${bob}/watch`])).toMatchObject({
      ok: false,
      error: { code: 'devices_changed', details: { missing: [], extra: [`${bob}/phone`, `${bob}/watch`] } },
    });
    expect((await send('k3', [])).ok).toBe(true);
  });

  it('answers the same over REST (409), and refuses recipientDevices in a server-encrypted conversation', async () => {
    const [alice, bob] = [userId('alice'), userId('bob')];
    const e2e = await createConversation(first, alice, [bob], { encryption: 'e2e' });
    const server = await createConversation(first, alice, [bob]);
    await publishKey(bob, 'phone');
    const token = await mintToken(alice);
    const stale = await httpCall(first.url, 'POST', `/v1/conversations/${e2e}/messages`, token, {
      clientMsgId: 'rest-1',
      ciphertext: ciphertext(),
      recipientDevices: [],
    });
    expect(stale.status).toBe(409);
    expect(stale.body.error).toMatchObject({
      code: 'devices_changed',
      details: { missing: [`${bob}/phone`], extra: [] },
    });

    const socket = await client(first, alice, 'phone');
    const wrongMode = await socket.request('send', {
      conversationId: server,
      clientMsgId: 's-1',
      body: 'hi',
      recipientDevices: [`${bob}/phone`],
    });
    expect(wrongMode).toMatchObject({ ok: false, error: { code: 'bad_request' } });
    const malformed = await socket.request('send', {
      conversationId: e2e,
      clientMsgId: 's-2',
      ciphertext: ciphertext(),
      recipientDevices: ['no-slash'],
    });
    expect(malformed).toMatchObject({ ok: false, error: { code: 'bad_request' } });
  });

  it('tells every connected device of every member, joined or not and on every instance, of a removal and an addition', async () => {
    const [alice, bob, carol, dave] = [userId('alice'), userId('bob'), userId('carol'), userId('dave')];
    const conversationId = await createConversation(first, alice, [bob, carol]);
    // None of these sockets joins the conversation; they sit on the other instance.
    const carolPhone = await client(second, carol, 'phone');
    const bobPhone = await client(second, bob, 'phone');
    const davePhone = await client(second, dave, 'phone');
    const token = await mintToken(alice);

    const removed = await httpCall(first.url, 'DELETE', `/v1/conversations/${conversationId}/members/${bob}`, token);
    expect(removed.status).toBe(200);
    const removal: MembershipPayload = { conversationId, userId: bob, change: 'removed' };
    expect(await carolPhone.waitForEvent('membership')).toEqual(removal);
    expect(await bobPhone.waitForEvent('membership')).toEqual(removal);

    const added = await httpCall(first.url, 'POST', `/v1/conversations/${conversationId}/members`, token, {
      userIds: [dave],
    });
    expect(added.status).toBe(201);
    const addition: MembershipPayload = { conversationId, userId: dave, change: 'added' };
    expect(await carolPhone.waitForEvent('membership', (p: MembershipPayload) => p.change === 'added')).toEqual(
      addition,
    );
    expect(await davePhone.waitForEvent('membership')).toEqual(addition);
    // A user no longer a member hears nothing more of it.
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(bobPhone.events.filter((e) => e.event === 'membership')).toHaveLength(1);
  });
});
