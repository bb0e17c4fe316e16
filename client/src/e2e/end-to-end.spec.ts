import sodium from 'libsodium-wrappers';
import { beforeAll, describe, expect, it } from 'vitest';

import type { WireMessage } from '../protocol.js';
import type { StoredDeviceKey, StoredSend } from '../storage/storage.js';
import { EndToEnd, type KeyChange } from './end-to-end.js';
import { envelopeRecipients, fingerprint, fromBase64, openEnvelope, sodiumReady, toBase64 } from './envelope.js';

const pair = () => {
  const made = sodium.crypto_box_keypair();
  return { publicKey: made.publicKey, secretKey: made.privateKey };
};

/** An EndToEnd for alice/phone over a fake service: conversations and device keys in maps. */
function setup(options: { maxMessageBytes?: number; stored?: StoredDeviceKey } = {}) {
  const conversations = new Map<string, { encryption: 'server' | 'e2e'; members: string[] }>();
  const keys = new Map<string, Map<string, ReturnType<typeof pair>>>();
  const calls: string[] = [];
  const changes: KeyChange[] = [];
  let saved: StoredDeviceKey | undefined = options.stored;
  let clock = 0;
  const e2e = new EndToEnd({
    deviceId: 'phone',
    userId: () => 'alice',
    rest: <T>(method: 'GET' | 'PUT', path: string, body?: unknown): Promise<T> => {
      calls.push(`${method} ${path}`);
      const conversation = /^\/v1\/conversations\/(.+)$/.exec(path);
      if (conversation) {
        const found = conversations.get(conversation[1])!;
        return Promise.resolve({
          encryption: found.encryption,
          members: found.members.map((userId) => ({ userId })),
        } as T);
      }
      const user = /^\/v1\/users\/(.+)\/devices\/keys$/.exec(path);
      if (user) {
        const devices = [...(keys.get(user[1]) ?? new Map<string, ReturnType<typeof pair>>())].map(
          ([deviceId, key]) => ({
            deviceId,
            publicKey: toBase64(key.publicKey),
          }),
        );
        return Promise.resolve(devices as T);
      }
      return Promise.resolve(body as T);
    },
    loadKey: () => Promise.resolve(saved),
    saveKey: (key) => {
      saved = key;
      return Promise.resolve();
    },
    maxMessageBytes: () => options.maxMessageBytes ?? 65_536,
    onKeyChange: (change) => changes.push(change),
    keyMaxAgeMs: 60_000,
    now: () => clock,
    onError: (error) => {
      throw error;
    },
  });
  const device = (userId: string, deviceId: string) => {
    const key = pair();
    if (!keys.has(userId)) keys.set(userId, new Map());
    keys.get(userId)!.set(deviceId, key);
    return key;
  };
  const entry = (clientMsgId: string, conversationId = 'c1'): StoredSend => ({
    clientMsgId,
    conversationId,
    createdAt: new Date(0).toISOString(),
    attempts: 0,
    order: 1,
    body: `secret ${clientMsgId}`,
    e2e: true,
  });
  return {
    e2e,
    conversations,
    calls,
    changes,
    device,
    entry,
    saved: () => saved,
    tick: (ms: number) => (clock += ms),
  };
}

const context = (clientMsgId: string, conversationId = 'c1') => ({
  conversationId,
  senderId: 'alice',
  senderDeviceId: 'phone',
  clientMsgId,
  contentType: 'text/plain',
});

describe('EndToEnd (the device side of e2e)', () => {
  beforeAll(async () => {
    await sodiumReady();
  });

  it('makes a key pair once, keeps it in the storage, and publishes it once', async () => {
    const t = setup();
    await t.e2e.publish();
    await t.e2e.publish();
    const saved = t.saved()!;
    expect(fromBase64(saved.secretKey)).toHaveLength(32);
    expect(t.calls).toEqual(['PUT /v1/devices/phone']);
    expect(t.e2e.fingerprint()).toBe(fingerprint(fromBase64(saved.publicKey)));

    const again = setup({ stored: saved });
    await again.e2e.ready();
    expect(again.e2e.fingerprint()).toBe(t.e2e.fingerprint());
  });

  it('seals to every keyed device of every member and to itself; recipientDevices leaves itself out', async () => {
    const t = setup();
    t.conversations.set('c1', { encryption: 'e2e', members: ['alice', 'bob'] });
    const laptop = t.device('alice', 'laptop');
    t.device('alice', 'phone'); // its own published key: the local one is used
    const bob = t.device('bob', 'phone');
    await t.e2e.ready();

    const sealed = (await t.e2e.seal(t.entry('m1')))!;
    expect(sealed.recipientDevices).toEqual(['alice/laptop', 'bob/phone']);
    const envelope = fromBase64(sealed.ciphertext);
    expect(envelopeRecipients(envelope)).toEqual(['alice/laptop', 'bob/phone', 'alice/phone']);
    expect(openEnvelope(envelope, context('m1'), { id: 'bob/phone', keyPair: bob })).toBe('secret m1');
    expect(openEnvelope(envelope, context('m1'), { id: 'alice/laptop', keyPair: laptop })).toBe('secret m1');
    // Its own copy opens too, as the 'message' a peer would get.
    const message: WireMessage = {
      id: 'x',
      conversationId: 'c1',
      seq: 1,
      senderId: 'alice',
      senderDeviceId: 'phone',
      clientMsgId: 'm1',
      contentType: 'text/plain',
      ciphertext: sealed.ciphertext,
      createdAt: new Date(0).toISOString(),
    };
    expect(t.e2e.open(message)).toMatchObject({ body: 'secret m1', e2e: true });
    expect(t.e2e.open({ ...message, clientMsgId: 'm2' })).toMatchObject({ e2e: true, undecryptable: true });
    expect(t.e2e.open({ ...message, ciphertext: undefined, body: 'plain' })).toEqual({
      ...message,
      ciphertext: undefined,
      body: 'plain',
    });
  });

  it('leaves a server-mode conversation to its body', async () => {
    const t = setup();
    t.conversations.set('s1', { encryption: 'server', members: ['alice'] });
    expect(await t.e2e.seal(t.entry('m1', 's1'))).toBeUndefined();
  });

  it('uses its caches, and reads again after a membership event or devices_changed', async () => {
    const t = setup();
    t.conversations.set('c1', { encryption: 'e2e', members: ['alice', 'bob'] });
    t.device('bob', 'phone');
    await t.e2e.seal(t.entry('m1'));
    await t.e2e.seal(t.entry('m2'));
    expect(t.calls).toEqual([
      'GET /v1/conversations/c1',
      'GET /v1/users/alice/devices/keys',
      'GET /v1/users/bob/devices/keys',
    ]);

    t.calls.length = 0;
    t.conversations.set('c1', { encryption: 'e2e', members: ['alice', 'bob', 'carol'] });
    t.device('carol', 'phone');
    t.e2e.onMembership({ conversationId: 'c1', userId: 'carol', change: 'added' });
    expect((await t.e2e.seal(t.entry('m3')))!.recipientDevices).toEqual(['bob/phone', 'carol/phone']);
    expect(t.calls.sort()).toEqual([
      'GET /v1/conversations/c1',
      'GET /v1/users/alice/devices/keys',
      'GET /v1/users/bob/devices/keys',
      'GET /v1/users/carol/devices/keys',
    ]);

    t.calls.length = 0;
    t.device('bob', 'tablet');
    await t.e2e.devicesChanged('c1', { missing: ['bob/tablet'], extra: [] });
    expect(t.calls.sort()).toEqual(['GET /v1/conversations/c1', 'GET /v1/users/bob/devices/keys']);
    expect((await t.e2e.seal(t.entry('m4')))!.recipientDevices).toEqual(['bob/phone', 'bob/tablet', 'carol/phone']);
  });

  it('reads keys again once they are older than keyMaxAgeMs, and reports a changed key', async () => {
    const t = setup();
    t.conversations.set('c1', { encryption: 'e2e', members: ['alice', 'bob'] });
    const old = t.device('bob', 'phone');
    await t.e2e.seal(t.entry('m1'));
    const reinstalled = t.device('bob', 'phone');

    t.tick(59_000);
    const stale = (await t.e2e.seal(t.entry('m2')))!;
    expect(openEnvelope(fromBase64(stale.ciphertext), context('m2'), { id: 'bob/phone', keyPair: old })).toBe(
      'secret m2',
    );
    expect(t.changes).toEqual([]);

    t.tick(2_000);
    const fresh = (await t.e2e.seal(t.entry('m3')))!;
    expect(openEnvelope(fromBase64(fresh.ciphertext), context('m3'), { id: 'bob/phone', keyPair: reinstalled })).toBe(
      'secret m3',
    );
    expect(t.changes).toEqual([
      {
        userId: 'bob',
        deviceId: 'phone',
        fingerprint: fingerprint(reinstalled.publicKey),
        previousFingerprint: fingerprint(old.publicKey),
      },
    ]);
  });

  it('remembers the fingerprints it saw with its key: a key changed while it was not running is reported', async () => {
    const first = setup();
    first.conversations.set('c1', { encryption: 'e2e', members: ['alice', 'bob'] });
    const old = first.device('bob', 'phone');
    await first.e2e.seal(first.entry('m1'));
    await Promise.resolve();
    expect(first.saved()?.peers).toEqual({ 'bob/phone': fingerprint(old.publicKey) });

    // The next run of the app, on the same storage; bob reinstalled meanwhile.
    const next = setup({ stored: first.saved() });
    next.conversations.set('c1', { encryption: 'e2e', members: ['alice', 'bob'] });
    const reinstalled = next.device('bob', 'phone');
    await next.e2e.seal(next.entry('m2'));
    expect(next.changes).toEqual([
      {
        userId: 'bob',
        deviceId: 'phone',
        fingerprint: fingerprint(reinstalled.publicKey),
        previousFingerprint: fingerprint(old.publicKey),
      },
    ]);
    await Promise.resolve();
    expect(next.saved()?.peers).toEqual({ 'bob/phone': fingerprint(reinstalled.publicKey) });
    expect(next.saved()?.secretKey).toBe(first.saved()?.secretKey);
  });

  it('refuses an envelope over maxMessageBytes with payload_too_large', async () => {
    const t = setup({ maxMessageBytes: 400 });
    t.conversations.set('c1', { encryption: 'e2e', members: ['alice', 'bob'] });
    for (const deviceId of ['a', 'b', 'c', 'd']) t.device('bob', deviceId);
    await expect(t.e2e.seal(t.entry('m1'))).rejects.toMatchObject({
      code: 'payload_too_large',
      details: { devices: 5, maxMessageBytes: 400 },
    });
  });
});
