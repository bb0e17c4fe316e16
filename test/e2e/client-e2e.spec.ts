import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

import {
  fileStorage,
  MessagingClient,
  memoryStorage,
  type ClientError,
  type ClientStorage,
  type KeyChange,
  type MembershipPayload,
  type Message,
} from '@messaging-service/client';

import { envelopeRecipients } from '../../client/src/e2e/envelope.js';
import { PrismaService } from '../../src/prisma/prisma.service.js';
import { RedisService } from '../../src/redis/redis.service.js';
import { startTestApp, type TestApp } from '../support/app.js';
import { connect, mintToken } from '../support/clients.js';
import { storedMessages, waitFor } from '../support/client-harness.js';
import { createConversation, userId } from '../support/fixtures.js';
import { httpCall } from '../support/http.js';

type Device = MessagingClient & {
  user: string;
  deviceId: string;
  received: Message[];
  errors: ClientError[];
  keyChanges: KeyChange[];
  memberships: MembershipPayload[];
};

// Issue #19, SDK.md "End-to-end encryption": SDK clients with `e2e: true` against the
// real service, three users and five devices in one e2e conversation.
describe('end-to-end encryption done by the SDK', () => {
  let service: TestApp;
  const devices: Device[] = [];
  /** Every body sent in this file: none may be readable by the service. */
  const plaintexts: string[] = [];

  beforeAll(async () => {
    service = await startTestApp();
  });
  afterEach(async () => {
    await Promise.all(devices.splice(0).map((device) => device.close()));
  });
  afterAll(async () => {
    await service.close();
  });

  async function device(user: string, deviceId: string, storage = memoryStorage()): Promise<Device> {
    const created = new MessagingClient({
      url: service.url,
      deviceId,
      token: () => mintToken(user),
      storage,
      reconnect: { minDelayMs: 20, maxDelayMs: 200 },
      e2e: true,
    });
    const extended = Object.assign(created, {
      user,
      deviceId,
      received: [] as Message[],
      errors: [] as ClientError[],
      keyChanges: [] as KeyChange[],
      memberships: [] as MembershipPayload[],
    });
    created.on('membership', (payload) => void extended.memberships.push(payload));
    created.on('message', (message) => void extended.received.push(message));
    created.on('error', (error) => void extended.errors.push(error));
    created.on('keyChange', (change) => void extended.keyChanges.push(change));
    devices.push(extended);
    await created.connect();
    return extended;
  }

  const secret = (text: string) => {
    const body = `${text} ${Math.random().toString(36).slice(2)}`;
    plaintexts.push(body);
    return body;
  };

  const receivedBy = (who: Device, clientMsgId: string) =>
    who.received.find((message) => message.clientMsgId === clientMsgId);

  async function storedEnvelope(reader: string, conversationId: string, seq: number): Promise<Uint8Array> {
    const reply = await httpCall(
      service.url,
      'GET',
      `/v1/conversations/${conversationId}/messages?afterSeq=${seq - 1}&limit=1`,
      await mintToken(reader),
    );
    const [message] = reply.body.data as [Message];
    expect(message.body).toBeUndefined();
    return new Uint8Array(Buffer.from(message.ciphertext ?? '', 'base64'));
  }

  it('publishes the key before connect resolves, so a device that never sent can read', async () => {
    const [alice, bob] = [userId('alice'), userId('bob')];
    const reader = await device(bob, 'phone');

    const keys = await httpCall(service.url, 'GET', `/v1/users/${bob}/devices/keys`, await mintToken(alice));
    expect(keys.body.data).toEqual([{ deviceId: 'phone', publicKey: expect.any(String) as string }]);
    const fingerprint = await reader.deviceKeyFingerprint();
    expect(fingerprint).toMatch(/^[0-9a-f]{4}( [0-9a-f]{4}){15}$/);
  });

  it('rejects connect() when the key cannot be published with a refused token, and needs a storage that keeps keys', async () => {
    const refused = new MessagingClient({ url: service.url, deviceId: 'phone', token: 'not-a-jwt', e2e: true });
    await expect(refused.connect()).rejects.toMatchObject({ code: 'unauthorized' });
    expect(refused.state).toBe('closed');

    const full = memoryStorage();
    const withoutKeys: ClientStorage = {
      load: () => full.load(),
      putOutbox: (entries) => full.putOutbox(entries),
      deleteOutbox: (ids) => full.deleteOutbox(ids),
      setHighWater: (marks) => full.setHighWater(marks),
    };
    expect(
      () => new MessagingClient({ url: service.url, deviceId: 'phone', token: 'x', storage: withoutKeys, e2e: true }),
    ).toThrow('e2e: true needs a storage with getDeviceKey and putDeviceKey');
  });

  it('three users, five devices: every member device and the sender\u2019s other device read; a device added later does not read what came before; a removed member gets no key for later messages; devices_changed is invisible to the app', async () => {
    const [alice, bob, carol] = [userId('alice'), userId('bob'), userId('carol')];
    const conversationId = await createConversation(service, alice, [bob, carol], { encryption: 'e2e' });
    const alicePhone = await device(alice, 'phone');
    const aliceLaptop = await device(alice, 'laptop');
    const bobPhone = await device(bob, 'phone');
    const bobWatch = await device(bob, 'watch');
    const carolPhone = await device(carol, 'phone');

    // 1. From alice's phone: every other device opens it, and so does the sender itself.
    const first = secret('hello from alice');
    const sent = await alicePhone.send(conversationId, { body: first }, { clientMsgId: 'e2e-1' });
    expect(sent).toMatchObject({ seq: 1, body: first, e2e: true });
    expect(sent.ciphertext).toBeDefined();
    for (const reader of [aliceLaptop, bobPhone, bobWatch, carolPhone]) {
      await waitFor(() => receivedBy(reader, 'e2e-1') !== undefined, `e2e-1 at ${reader.user}/${reader.deviceId}`);
      expect(receivedBy(reader, 'e2e-1'), `${reader.user}/${reader.deviceId}`).toMatchObject({
        body: first,
        e2e: true,
      });
      expect(receivedBy(reader, 'e2e-1')?.undecryptable).toBeUndefined();
    }
    // Sealed to exactly the five devices (the sender's own included), nobody else.
    expect(envelopeRecipients(await storedEnvelope(alice, conversationId, 1)).sort()).toEqual(
      [`${alice}/laptop`, `${alice}/phone`, `${bob}/phone`, `${bob}/watch`, `${carol}/phone`].sort(),
    );

    // 2. From bob's phone: his watch reads it too.
    const second = secret('bob answers');
    await bobPhone.send(conversationId, { body: second }, { clientMsgId: 'e2e-2' });
    for (const reader of [alicePhone, aliceLaptop, bobWatch, carolPhone]) {
      await waitFor(() => receivedBy(reader, 'e2e-2')?.body === second, `e2e-2 at ${reader.user}/${reader.deviceId}`);
    }

    // 3. Carol adds a tablet. No event tells alice's phone, whose key cache is now stale:
    // its next send is refused with devices_changed, sealed again and resent, unseen.
    const carolTablet = await device(carol, 'tablet');
    const third = secret('after the tablet');
    const third_ = await alicePhone.send(conversationId, { body: third }, { clientMsgId: 'e2e-3' });
    expect(third_).toMatchObject({ seq: 3, body: third, e2e: true });
    expect(alicePhone.errors).toEqual([]);
    expect(alicePhone.metrics().resent).toBe(1);
    await waitFor(() => receivedBy(carolTablet, 'e2e-3') !== undefined, 'e2e-3 at the tablet');
    expect(receivedBy(carolTablet, 'e2e-3')).toMatchObject({ body: third, e2e: true });
    // What came before the tablet's key existed is not for it.
    const tabletHistory = await carolTablet.history(conversationId, { afterSeq: 0 });
    expect(tabletHistory.messages.map((m) => [m.seq, m.e2e, m.undecryptable, m.body])).toEqual([
      [1, true, true, undefined],
      [2, true, true, undefined],
      [3, true, undefined, third],
    ]);
    // The sender reads its own history.
    const aliceHistory = await aliceLaptop.history(conversationId, { afterSeq: 0 });
    expect(aliceHistory.messages.map((m) => m.body)).toEqual([first, second, third]);

    // 4. Carol is removed: the membership event refreshes alice's member list, and later
    // messages are sealed to nobody of carol's.
    const removed = await httpCall(
      service.url,
      'DELETE',
      `/v1/conversations/${conversationId}/members/${carol}`,
      await mintToken(alice),
    );
    expect(removed.status).toBe(200);
    await waitFor(
      () => alicePhone.memberships.some((m) => m.userId === carol && m.change === 'removed'),
      'the membership event at alice',
    );
    const fourth = secret('carol is gone');
    const resentBefore = alicePhone.metrics().resent;
    const fourthSent = await alicePhone.send(conversationId, { body: fourth }, { clientMsgId: 'e2e-4' });
    expect(fourthSent).toMatchObject({ seq: 4, body: fourth });
    const recipients = envelopeRecipients(await storedEnvelope(alice, conversationId, 4));
    expect(recipients.sort()).toEqual([`${alice}/laptop`, `${alice}/phone`, `${bob}/phone`, `${bob}/watch`].sort());
    // The membership event refreshed the member list: no devices_changed round trip.
    expect(alicePhone.metrics().resent).toBe(resentBefore);
    await waitFor(() => receivedBy(bobWatch, 'e2e-4')?.body === fourth, 'e2e-4 at the watch');
    expect(receivedBy(carolPhone, 'e2e-4')).toBeUndefined();
    expect(receivedBy(carolTablet, 'e2e-4')).toBeUndefined();

    // What the service itself can read of them (its at-rest layer opened): envelopes only.
    const stored = await storedMessages(service.url, alice, conversationId);
    expect(stored).toHaveLength(4);
    for (const message of stored) {
      expect(message.body).toBeUndefined();
      const envelope = Buffer.from(message.ciphertext ?? '', 'base64');
      for (const plaintext of [first, second, third, fourth]) expect(envelope.includes(plaintext)).toBe(false);
    }

    for (const each of [alicePhone, aliceLaptop, bobPhone, bobWatch, carolPhone, carolTablet]) {
      expect(each.errors, `${each.user}/${each.deviceId}`).toEqual([]);
      expect(each.keyChanges).toEqual([]);
    }
  });

  it('keeps the key pair in a durable storage: after a restart the device has the same key and reads its history', async () => {
    const [alice, bob] = [userId('alice'), userId('bob')];
    const conversationId = await createConversation(service, alice, [bob], { encryption: 'e2e' });
    const dir = await mkdtemp(join(tmpdir(), 'e2e-key-'));
    try {
      const first = await device(bob, 'laptop', fileStorage(dir));
      const fingerprint = await first.deviceKeyFingerprint();
      const alicePhone = await device(alice, 'phone');
      const body = secret('before the restart');
      await alicePhone.send(conversationId, { body });
      await first.close();

      const restarted = await device(bob, 'laptop', fileStorage(dir));
      expect(await restarted.deviceKeyFingerprint()).toBe(fingerprint);
      const history = await restarted.history(conversationId, { afterSeq: 0 });
      expect(history.messages.map((m) => m.body)).toEqual([body]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('delivers what it cannot open as undecryptable, without a body, and still acks it', async () => {
    const [alice, bob] = [userId('alice'), userId('bob')];
    const conversationId = await createConversation(service, alice, [bob], { encryption: 'e2e' });
    const bobPhone = await device(bob, 'phone');
    // A raw socket, not the SDK: garbage that claims to be an envelope.
    const raw = await connect(service.url, alice, { deviceId: 'raw' });
    const garbage = Buffer.from([1, ...new Uint8Array(80)]).toString('base64');
    const reply = await raw.request('send', { conversationId, clientMsgId: 'junk', ciphertext: garbage });
    expect(reply).toMatchObject({ ok: true });
    raw.close();

    await waitFor(() => receivedBy(bobPhone, 'junk') !== undefined, 'the junk at bob');
    const junk = receivedBy(bobPhone, 'junk')!;
    expect(junk).toMatchObject({ e2e: true, undecryptable: true });
    expect(junk.body).toBeUndefined();
    // Acked: bob's offline queue drains.
    const redis = service.app.get(RedisService).client;
    await waitFor(async () => (await redis.zcard(`mq:{${bob}\u0000phone}:z`)) === 0, "bob's queue empty");
  });

  it('tells the app when a peer device key changes (trust on first use)', async () => {
    const [alice, bob] = [userId('alice'), userId('bob')];
    const conversationId = await createConversation(service, alice, [bob], { encryption: 'e2e' });
    const alicePhone = await device(alice, 'phone');
    const bobPhone = await device(bob, 'phone');
    const before = await bobPhone.deviceKeyFingerprint();
    await alicePhone.send(conversationId, { body: secret('first') });

    // Bob reinstalls: same device id, a new storage, so a new key.
    await bobPhone.close();
    const reinstalled = await device(bob, 'phone');
    const after = await reinstalled.deviceKeyFingerprint();
    expect(after).not.toBe(before);
    // Same userId/deviceId pairs, so the server's recipientDevices check does not notice:
    // alice's cache learns the new key at the next refresh, here a membership event.
    const carol = userId('carol');
    const added = await httpCall(
      service.url,
      'POST',
      `/v1/conversations/${conversationId}/members`,
      await mintToken(alice),
      { userIds: [carol] },
    );
    expect(added.status, JSON.stringify(added.body)).toBeLessThan(300);
    await waitFor(() => alicePhone.memberships.some((m) => m.userId === carol), 'the membership event at alice');
    const body = secret('to the new key');
    await alicePhone.send(conversationId, { body }, { clientMsgId: 'after-reinstall' });

    expect(alicePhone.keyChanges).toEqual([
      { userId: bob, deviceId: 'phone', fingerprint: after, previousFingerprint: before },
    ]);
    await waitFor(() => receivedBy(reinstalled, 'after-reinstall')?.body === body, 'read with the new key');
  });

  it('leaves nothing readable in PostgreSQL or Redis', async () => {
    expect(plaintexts.length).toBeGreaterThan(4);
    const rows = await service.app
      .get(PrismaService)
      .$queryRawUnsafe<{ ciphertext: Uint8Array; content_type: string }[]>(
        'SELECT ciphertext, content_type FROM messages',
      );
    expect(rows.length).toBeGreaterThan(0);
    const database = Buffer.concat(rows.map((row) => Buffer.from(row.ciphertext)));

    const redis = service.app.get(RedisService).client;
    const chunks: Buffer[] = [];
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'COUNT', 1000);
      cursor = next;
      for (const key of keys) {
        chunks.push(Buffer.from(key));
        const type = await redis.type(key);
        if (type === 'string') chunks.push((await redis.getBuffer(key)) ?? Buffer.alloc(0));
        else if (type === 'hash') chunks.push(...(await redis.hgetallBuffer(key).then((h) => Object.values(h))));
        else if (type === 'zset') chunks.push(...(await redis.zrangeBuffer(key, '0', '-1')));
        else if (type === 'list') chunks.push(...(await redis.lrangeBuffer(key, 0, -1)));
        else if (type === 'set') chunks.push(...(await redis.smembersBuffer(key)));
        else if (type === 'stream') chunks.push(Buffer.from(JSON.stringify(await redis.xrange(key, '-', '+'))));
      }
    } while (cursor !== '0');
    const cache = Buffer.concat(chunks);
    expect(cache.length).toBeGreaterThan(0);

    for (const plaintext of plaintexts) {
      // Whole, and any 8-byte piece of it (the random suffix makes those specific).
      const needle = Buffer.from(plaintext);
      expect(database.includes(needle), plaintext).toBe(false);
      expect(cache.includes(needle), plaintext).toBe(false);
      const tail = needle.subarray(needle.length - 8);
      expect(database.includes(tail)).toBe(false);
      expect(cache.includes(tail)).toBe(false);
    }
  });
});
