import { createECDH, randomBytes } from 'node:crypto';

import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';

import { DeviceDirectory } from '../../src/devices/device-directory.service.js';
import { deviceKeysReply, deviceReply } from '../../src/devices/devices.schemas.js';
import type { PageData } from '@messaging-service/client/protocol';
import { RedisService } from '../../src/redis/redis.service.js';
import { httpCall, type HttpReply } from '../support/http.js';
import { startTestApp, type TestApp } from '../support/app.js';
import { connect, dataOf, mintToken, type TestClient } from '../support/clients.js';
import { createConversation, userId } from '../support/fixtures.js';

type Reply = HttpReply;
interface OpenApiObject {
  properties: Record<string, { description?: string }>;
  required?: string[];
}

const APNS_TOKEN = 'a1'.repeat(32);
const PUBLIC_KEY = Buffer.alloc(32, 7).toString('base64');
const FCM_TOKEN = `fcm-${'x'.repeat(20)}:APA91b${'y'.repeat(134)}`;

/** A PushSubscription's JSON as a browser makes it: a P-256 key pair and a 16-byte auth secret. */
function browserSubscription(endpoint = `https://push.example.net/send/${randomBytes(8).toString('hex')}`) {
  const ecdh = createECDH('prime256v1');
  ecdh.generateKeys();
  return {
    endpoint,
    expirationTime: null,
    keys: { p256dh: ecdh.getPublicKey().toString('base64url'), auth: randomBytes(16).toString('base64url') },
  };
}

describe('REST devices', () => {
  let service: TestApp;
  let serviceToken: string;
  const open: TestClient[] = [];

  const call = (method: string, path: string, token: string | null, body?: unknown): Promise<Reply> =>
    httpCall(service.url, method, path, token, body);
  const as = (user: string) => mintToken(user);
  const client = async (user: string, deviceId: string) => {
    const c = await connect(service.url, user, { deviceId });
    open.push(c);
    return c;
  };
  const problemPaths = (reply: Reply) => (reply.body.error.details.problems as { path: string }[]).map((p) => p.path);

  beforeAll(async () => {
    service = await startTestApp();
    serviceToken = await mintToken('push-service', { claims: { scope: 'service' } });
  });

  afterAll(async () => {
    for (const c of open) c.close();
    await service.close();
  });

  describe('PUT /v1/devices/:deviceId', () => {
    it('registers (201) then updates (200), keeping fields left out and clearing nulls', async () => {
      const alice = userId('alice');
      const token = await as(alice);
      const created = await call('PUT', '/v1/devices/iphone-1', token, {
        platform: 'ios',
        apnsToken: APNS_TOKEN,
        apnsTopic: 'com.example.chat',
        apnsEnvironment: 'sandbox',
        publicKey: PUBLIC_KEY,
      });
      expect(created.status).toBe(201);
      expect(deviceReply.parse(created.body).data).toMatchObject({
        userId: alice,
        deviceId: 'iphone-1',
        platform: 'ios',
        hasApnsToken: true,
        apnsTopic: 'com.example.chat',
        apnsEnvironment: 'sandbox',
        publicKey: PUBLIC_KEY,
      });
      expect(created.body.data).not.toHaveProperty('apnsToken');

      const updated = await call('PUT', '/v1/devices/iphone-1', token, {
        platform: 'ios',
        apnsEnvironment: 'production',
      });
      expect(updated.status).toBe(200);
      expect(updated.body.data).toMatchObject({
        apnsEnvironment: 'production',
        hasApnsToken: true,
        publicKey: PUBLIC_KEY,
      });
      const cleared = await call('PUT', '/v1/devices/iphone-1', token, {
        platform: 'ios',
        apnsToken: null,
        publicKey: null,
      });
      expect(cleared.body.data).toMatchObject({ hasApnsToken: false, publicKey: null, apnsTopic: 'com.example.chat' });

      const forBob = await call('PUT', '/v1/devices/web-1', serviceToken, { platform: 'web', userId: userId('bob') });
      expect(forBob.status).toBe(201);
    });

    it('gives a registered device the messages sent from then on in its queue', async () => {
      const alice = userId('alice');
      const bob = userId('bob');
      const id = await createConversation(service, alice, [bob]);
      const token = await as(alice);
      const send = async (clientMsgId: string) => {
        const reply = await call('POST', `/v1/conversations/${id}/messages`, token, { clientMsgId, body: clientMsgId });
        expect(reply.status).toBe(201);
        return reply.body.data.message.id as string;
      };
      await send('before');
      expect((await call('PUT', '/v1/devices/bob-ipad', await as(bob), { platform: 'ios' })).status).toBe(201);
      const after = await send('after');
      // Redis loses every queue: the device's is rebuilt from its delivery cursors in PostgreSQL.
      await service.app.get(RedisService).client.flushdb();
      const ipad = await client(bob, 'bob-ipad');
      expect(ipad.session.unacked).toBe(1);
      expect(dataOf(await ipad.request<PageData>('get-unacked', {})).messages.map((m) => m.id)).toEqual([after]);
    });

    it('answers 400 listing each problem, 401 and 403', async () => {
      const token = await as(userId('alice'));
      const invalid = await call('PUT', '/v1/devices/d1', token, {
        platform: 'symbian',
        apnsToken: 'not-hex',
        apnsEnvironment: 'staging',
        publicKey: 'not base64!',
      });
      expect(invalid.status).toBe(400);
      expect(problemPaths(invalid).sort()).toEqual(['apnsEnvironment', 'apnsToken', 'platform', 'publicKey']);
      const tinyKey = await call('PUT', '/v1/devices/d1', token, { platform: 'web', publicKey: 'AAAA' });
      expect(problemPaths(tinyKey)).toEqual(['publicKey']);
      const hugeKey = await call('PUT', '/v1/devices/d1', token, {
        platform: 'web',
        publicKey: Buffer.alloc(8192).toString('base64'),
      });
      expect(problemPaths(hugeKey)).toEqual(['publicKey']);
      const apnsOnAndroid = await call('PUT', '/v1/devices/d1', token, { platform: 'android', apnsToken: APNS_TOKEN });
      expect(problemPaths(apnsOnAndroid)).toEqual(['apnsToken']);
      const badId = await call('PUT', '/v1/devices/bad%20id', token, { platform: 'web' });
      expect(badId.status).toBe(400);
      expect(problemPaths(badId)).toEqual(['deviceId']);
      expect((await call('PUT', '/v1/devices/d1', serviceToken, { platform: 'web' })).status).toBe(400);
      expect((await call('PUT', '/v1/devices/d1', null, { platform: 'web' })).status).toBe(401);
      expect((await call('PUT', '/v1/devices/d1', token, { platform: 'web', userId: 'someone-else' })).status).toBe(
        403,
      );
    });
  });

  describe('PUT /v1/devices/:deviceId: what an update leaves out', () => {
    it('keeps the platform and the APNs token of a device that only publishes its key', async () => {
      const token = await as(userId('alice'));
      await call('PUT', '/v1/devices/iphone-key', token, { platform: 'ios', apnsToken: APNS_TOKEN });
      const keyed = await call('PUT', '/v1/devices/iphone-key', token, { publicKey: PUBLIC_KEY });
      expect(keyed.status).toBe(200);
      expect(keyed.body.data).toMatchObject({ platform: 'ios', hasApnsToken: true, publicKey: PUBLIC_KEY });
    });

    it('creates a device from its key alone, with no platform', async () => {
      const reply = await call('PUT', '/v1/devices/key-only', await as(userId('alice')), { publicKey: PUBLIC_KEY });
      expect(reply.status).toBe(201);
      expect(deviceReply.parse(reply.body).data).toMatchObject({
        platform: null,
        hasApnsToken: false,
        publicKey: PUBLIC_KEY,
      });
    });

    it('needs the platform once, before any push field', async () => {
      const alice = userId('alice');
      const token = await as(alice);
      const needsPlatform = [{ path: 'platform', message: 'needed once, before any push field' }];
      // Known from its key alone, from a socket alone, or not at all: no platform yet.
      expect((await call('PUT', '/v1/devices/no-platform', token, { publicKey: PUBLIC_KEY })).status).toBe(201);
      await client(alice, 'socket-only');
      for (const deviceId of ['no-platform', 'socket-only', 'unknown']) {
        const reply = await call('PUT', `/v1/devices/${deviceId}`, token, { apnsToken: APNS_TOKEN });
        expect(reply.status, deviceId).toBe(400);
        expect(reply.body.error.details.problems, deviceId).toEqual(needsPlatform);
      }
      // Clearing a push field needs no platform.
      const cleared = await call('PUT', '/v1/devices/socket-only', token, { apnsToken: null, publicKey: PUBLIC_KEY });
      expect(cleared.status).toBe(200);
      expect(cleared.body.data).toMatchObject({ platform: null, hasApnsToken: false, publicKey: PUBLIC_KEY });
      const set = await call('PUT', '/v1/devices/no-platform', token, { platform: 'ios', apnsToken: APNS_TOKEN });
      expect(set.body.data).toMatchObject({ platform: 'ios', hasApnsToken: true, publicKey: PUBLIC_KEY });
    });

    it('checks push fields against the stored platform when the body has none', async () => {
      const token = await as(userId('alice'));
      await call('PUT', '/v1/devices/stored-ios', token, { platform: 'ios' });
      const accepted = await call('PUT', '/v1/devices/stored-ios', token, {
        apnsToken: APNS_TOKEN,
        apnsEnvironment: 'production',
      });
      expect(accepted.status).toBe(200);
      expect(accepted.body.data).toMatchObject({ platform: 'ios', hasApnsToken: true, apnsEnvironment: 'production' });

      await call('PUT', '/v1/devices/stored-web', token, { platform: 'web' });
      const rejected = await call('PUT', '/v1/devices/stored-web', token, { apnsToken: APNS_TOKEN, apnsTopic: 'a.b' });
      expect(rejected.status).toBe(400);
      expect(rejected.body.error.details.problems).toEqual([
        { path: 'apnsToken', message: 'only for platform ios' },
        { path: 'apnsTopic', message: 'only for platform ios' },
      ]);
      // The body's platform wins over the stored one.
      const switched = await call('PUT', '/v1/devices/stored-ios', token, { platform: 'android', apnsTopic: 'a.b' });
      expect(switched.body.error.details.problems).toEqual([{ path: 'apnsTopic', message: 'only for platform ios' }]);
    });

    it('clears the APNs fields of a device that leaves ios', async () => {
      const token = await as(userId('alice'));
      await call('PUT', '/v1/devices/leaver', token, {
        platform: 'ios',
        apnsToken: APNS_TOKEN,
        apnsTopic: 'com.example.chat',
        apnsEnvironment: 'sandbox',
        publicKey: PUBLIC_KEY,
      });
      const web = await call('PUT', '/v1/devices/leaver', token, { platform: 'web' });
      expect(web.status).toBe(200);
      expect(web.body.data).toMatchObject({
        platform: 'web',
        hasApnsToken: false,
        apnsTopic: null,
        apnsEnvironment: null,
        publicKey: PUBLIC_KEY,
      });
      // Back on ios, the old token does not come back.
      const ios = await call('PUT', '/v1/devices/leaver', token, { platform: 'ios' });
      expect(ios.body.data).toMatchObject({ platform: 'ios', hasApnsToken: false, apnsTopic: null });
    });

    it('clears the public key on an explicit null, keeping the platform', async () => {
      const token = await as(userId('alice'));
      await call('PUT', '/v1/devices/unkeyed', token, { platform: 'android', publicKey: PUBLIC_KEY });
      const cleared = await call('PUT', '/v1/devices/unkeyed', token, { publicKey: null });
      expect(cleared.status).toBe(200);
      expect(cleared.body.data).toMatchObject({ platform: 'android', publicKey: null });
    });

    it('tells the device directory each time a key is set, replaced or cleared', async () => {
      const dave = userId('dave');
      const token = await as(dave);
      const changed = vi.spyOn(service.app.get(DeviceDirectory), 'changed');
      const put = async (body: object) => {
        changed.mockClear();
        await call('PUT', '/v1/devices/rekeyed', token, body);
        return changed.mock.calls;
      };
      try {
        expect(await put({ platform: 'web' }), 'created').toEqual([[dave]]);
        expect(await put({ platform: 'web' }), 'no key change').toEqual([]);
        // With the platform in each body, so that only the key changes.
        expect(await put({ platform: 'web', publicKey: PUBLIC_KEY }), 'set').toEqual([[dave]]);
        expect(await put({ platform: 'web', publicKey: PUBLIC_KEY }), 'same key').toEqual([]);
        const otherKey = Buffer.alloc(32, 8).toString('base64');
        expect(await put({ platform: 'web', publicKey: otherKey }), 'replaced').toEqual([[dave]]);
        expect(await put({ platform: 'android' }), 'key kept').toEqual([]);
        expect(await put({ platform: 'android', publicKey: null }), 'cleared').toEqual([[dave]]);
      } finally {
        changed.mockRestore();
      }
    });

    it('documents platform as optional and null as clearing a field', async () => {
      const response = await fetch(`${service.url}/docs-json`);
      const doc = (await response.json()) as {
        paths: Record<string, Record<string, { requestBody: { content: Record<string, { schema: OpenApiObject }> } }>>;
      };
      const body = doc.paths['/v1/devices/{deviceId}'].put.requestBody.content['application/json'].schema;
      expect(body.required ?? []).not.toContain('platform');
      for (const field of ['apnsToken', 'apnsTopic', 'apnsEnvironment', 'fcmToken', 'webPush', 'publicKey']) {
        expect(body.properties[field].description, field).toMatch(/left out keeps it; null clears it/);
      }
      expect(body.properties.platform.description).toMatch(/needed once, before any push field/);
    });
  });

  describe('PUT /v1/devices/:deviceId: Android and web push fields', () => {
    const stored = async (user: string, deviceId: string) => {
      const db = new pg.Client({ connectionString: service.databaseUrl });
      await db.connect();
      try {
        const { rows } = await db.query<Record<string, string | null>>(
          'SELECT fcm_token, web_push_endpoint, web_push_p256dh, web_push_auth FROM devices WHERE user_id = $1 AND device_id = $2',
          [user, deviceId],
        );
        return rows[0];
      } finally {
        await db.end();
      }
    };

    it('stores an android FCM token and a web subscription, and never echoes either', async () => {
      const alice = userId('alice');
      const token = await as(alice);
      const android = await call('PUT', '/v1/devices/pixel', token, { platform: 'android', fcmToken: FCM_TOKEN });
      expect(android.status).toBe(201);
      expect(deviceReply.parse(android.body).data).toMatchObject({
        platform: 'android',
        hasFcmToken: true,
        hasWebPush: false,
        hasApnsToken: false,
      });
      const subscription = browserSubscription();
      const web = await call('PUT', '/v1/devices/firefox', token, { platform: 'web', webPush: subscription });
      expect(web.status).toBe(201);
      expect(web.body.data).toMatchObject({ platform: 'web', hasWebPush: true, hasFcmToken: false });
      for (const reply of [android, web]) {
        const text = JSON.stringify(reply.body);
        for (const secret of [FCM_TOKEN, subscription.endpoint, subscription.keys.p256dh, subscription.keys.auth]) {
          expect(text).not.toContain(secret);
        }
        expect(reply.body.data).not.toHaveProperty('fcmToken');
        expect(reply.body.data).not.toHaveProperty('webPush');
      }
      expect(await stored(alice, 'pixel')).toMatchObject({ fcm_token: FCM_TOKEN, web_push_endpoint: null });
      expect(await stored(alice, 'firefox')).toEqual({
        fcm_token: null,
        web_push_endpoint: subscription.endpoint,
        web_push_p256dh: subscription.keys.p256dh,
        web_push_auth: subscription.keys.auth,
      });

      // Left out keeps them; null clears them.
      expect((await call('PUT', '/v1/devices/firefox', token, { publicKey: PUBLIC_KEY })).body.data).toMatchObject({
        hasWebPush: true,
      });
      expect((await call('PUT', '/v1/devices/firefox', token, { webPush: null })).body.data).toMatchObject({
        hasWebPush: false,
      });
      expect(await stored(alice, 'firefox')).toMatchObject({ web_push_endpoint: null, web_push_auth: null });
      expect((await call('PUT', '/v1/devices/pixel', token, { fcmToken: null })).body.data).toMatchObject({
        hasFcmToken: false,
      });
    });

    it('refuses each push field on another platform than its own', async () => {
      const token = await as(userId('alice'));
      const webPush = browserSubscription();
      const cases: [string, object, { path: string; message: string }[]][] = [
        ['android', { apnsToken: APNS_TOKEN }, [{ path: 'apnsToken', message: 'only for platform ios' }]],
        ['ios', { fcmToken: FCM_TOKEN }, [{ path: 'fcmToken', message: 'only for platform android' }]],
        ['web', { fcmToken: FCM_TOKEN }, [{ path: 'fcmToken', message: 'only for platform android' }]],
        ['ios', { webPush }, [{ path: 'webPush', message: 'only for platform web' }]],
        [
          'android',
          { webPush, apnsTopic: 'a.b' },
          [
            { path: 'apnsTopic', message: 'only for platform ios' },
            { path: 'webPush', message: 'only for platform web' },
          ],
        ],
      ];
      for (const [platform, fields, problems] of cases) {
        const reply = await call('PUT', `/v1/devices/misplaced-${platform}`, token, { platform, ...fields });
        expect(reply.status, JSON.stringify(fields)).toBe(400);
        expect(reply.body.error.code).toBe('bad_request');
        expect(reply.body.error.details.problems, JSON.stringify(fields)).toEqual(problems);
      }
      const noPlatform = await call('PUT', '/v1/devices/nowhere', token, { fcmToken: FCM_TOKEN, webPush });
      expect(noPlatform.body.error.details.problems).toEqual([
        { path: 'platform', message: 'needed once, before any push field' },
      ]);
      // Checked against the stored platform when the body has none.
      await call('PUT', '/v1/devices/stored-android', token, { platform: 'android' });
      expect(problemPaths(await call('PUT', '/v1/devices/stored-android', token, { webPush }))).toEqual(['webPush']);
      expect((await call('PUT', '/v1/devices/stored-android', token, { fcmToken: FCM_TOKEN })).status).toBe(200);
    });

    it('validates the subscription as a browser makes it: https endpoint, P-256 point, 16-byte secret', async () => {
      const token = await as(userId('alice'));
      const good = browserSubscription();
      const offCurve = Buffer.from(good.keys.p256dh, 'base64url');
      offCurve[64] ^= 1;
      const bad: [string, unknown][] = [
        ['webPush.endpoint', { ...good, endpoint: 'http://push.example.net/send/1' }],
        ['webPush.endpoint', { ...good, endpoint: 'not a url' }],
        ['webPush.endpoint', { ...good, endpoint: `https://push.example.net/${'a'.repeat(2_100)}` }],
        ['webPush.keys.p256dh', { ...good, keys: { ...good.keys, p256dh: offCurve.toString('base64url') } }],
        ['webPush.keys.p256dh', { ...good, keys: { ...good.keys, p256dh: Buffer.alloc(33, 2).toString('base64url') } }],
        ['webPush.keys.p256dh', { ...good, keys: { ...good.keys, p256dh: `${good.keys.p256dh}!` } }],
        ['webPush.keys.auth', { ...good, keys: { ...good.keys, auth: randomBytes(32).toString('base64url') } }],
        ['webPush.keys', { endpoint: good.endpoint }],
        ['webPush', 'https://push.example.net/send/1'],
      ];
      for (const [path, webPush] of bad) {
        const reply = await call('PUT', '/v1/devices/chrome', token, { platform: 'web', webPush });
        expect(reply.status, path).toBe(400);
        expect(problemPaths(reply), JSON.stringify(webPush).slice(0, 120)).toEqual([path]);
      }
      for (const fcmToken of ['short', 'has spaces in it, which tokens never do', 'x'.repeat(4_097)]) {
        const reply = await call('PUT', '/v1/devices/pixel-2', token, { platform: 'android', fcmToken });
        expect(problemPaths(reply)).toEqual(['fcmToken']);
      }
      expect((await call('PUT', '/v1/devices/chrome', token, { platform: 'web', webPush: good })).status).toBe(201);
    });

    it('clears the FCM token or the subscription of a device that leaves its platform', async () => {
      const alice = userId('alice');
      const token = await as(alice);
      await call('PUT', '/v1/devices/hopper', token, { platform: 'android', fcmToken: FCM_TOKEN });
      const web = await call('PUT', '/v1/devices/hopper', token, { platform: 'web', webPush: browserSubscription() });
      expect(web.body.data).toMatchObject({ platform: 'web', hasFcmToken: false, hasWebPush: true });
      const back = await call('PUT', '/v1/devices/hopper', token, { platform: 'android' });
      expect(back.body.data).toMatchObject({ platform: 'android', hasFcmToken: false, hasWebPush: false });
      expect(await stored(alice, 'hopper')).toEqual({
        fcm_token: null,
        web_push_endpoint: null,
        web_push_p256dh: null,
        web_push_auth: null,
      });
    });
  });

  describe('DELETE /v1/devices/:deviceId', () => {
    it('unregisters: drops its queue and disconnects its live socket', async () => {
      const alice = userId('alice');
      const bob = userId('bob');
      const id = await createConversation(service, alice, [bob]);
      const bobToken = await as(bob);
      expect((await call('PUT', '/v1/devices/old-phone', bobToken, { platform: 'android' })).status).toBe(201);
      const live = await client(bob, 'old-phone');
      const kept = await client(bob, 'laptop');
      await call('POST', `/v1/conversations/${id}/messages`, await as(alice), { clientMsgId: 'q1', body: 'q1' });
      await live.waitForMessages(1);

      const disconnected = new Promise<string>((resolve) => live.socket.once('disconnect', resolve));
      const removed = await call('DELETE', '/v1/devices/old-phone', bobToken);
      expect(removed.status).toBe(200);
      expect(removed.body).toEqual({ data: { userId: bob, deviceId: 'old-phone' } });
      expect(await disconnected).toBe('io server disconnect');
      expect(kept.socket.connected).toBe(true);

      const again = await call('DELETE', '/v1/devices/old-phone', bobToken);
      expect(again.status).toBe(404);
      expect(again.body.error.code).toBe('not_found');
      // Connecting again makes it a new device: the message queued for the old one is gone.
      const reborn = await client(bob, 'old-phone');
      expect(reborn.session.unacked).toBe(0);
    });

    it('cannot reach another user’s device: 404; answers 400 and 401', async () => {
      const alice = userId('alice');
      const bob = userId('bob');
      expect((await call('PUT', '/v1/devices/shared-name', await as(alice), { platform: 'web' })).status).toBe(201);
      expect((await call('DELETE', '/v1/devices/shared-name', await as(bob))).status).toBe(404);
      expect((await call('DELETE', `/v1/devices/shared-name?userId=${alice}`, await as(bob))).status).toBe(403);
      expect((await call('DELETE', '/v1/devices/shared-name', serviceToken)).status).toBe(400);
      expect((await call('DELETE', '/v1/devices/shared-name', null)).status).toBe(401);
      expect((await call('DELETE', `/v1/devices/shared-name?userId=${alice}`, serviceToken)).status).toBe(200);
    });
  });

  describe('GET /v1/users/:userId/devices/keys', () => {
    it('lists the public keys of a user’s devices that have one, to any authenticated caller', async () => {
      const carol = userId('carol');
      const carolToken = await as(carol);
      const otherKey = Buffer.alloc(32, 9).toString('base64');
      await call('PUT', '/v1/devices/b-phone', carolToken, { platform: 'ios', publicKey: otherKey });
      await call('PUT', '/v1/devices/a-laptop', carolToken, { platform: 'web', publicKey: PUBLIC_KEY });
      await call('PUT', '/v1/devices/c-keyless', carolToken, { platform: 'web' });

      const reply = await call('GET', `/v1/users/${carol}/devices/keys`, await as(userId('dave')));
      expect(reply.status).toBe(200);
      expect(deviceKeysReply.parse(reply.body).data).toEqual([
        { deviceId: 'a-laptop', publicKey: PUBLIC_KEY },
        { deviceId: 'b-phone', publicKey: otherKey },
      ]);
      expect((await call('GET', `/v1/users/${userId('nobody')}/devices/keys`, serviceToken)).body).toEqual({
        data: [],
      });
      expect((await call('GET', `/v1/users/${carol}/devices/keys`, null)).status).toBe(401);
      expect((await call('GET', `/v1/users/${'x'.repeat(129)}/devices/keys`, carolToken)).status).toBe(400);
    });
  });
});
