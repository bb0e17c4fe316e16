import { randomUUID } from 'node:crypto';

import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { DeviceRegistrationService } from '../../src/devices/device-registration.service.js';
import type { FcmMessage } from '../../src/push/fcm.client.js';
import { pushJobId } from '../../src/push/push-jobs.repository.js';
import { PUSH_QUEUE_NAME, PUSH_QUEUE_PREFIX } from '../../src/push/push.options.js';
import type { SendData, WireMessage } from '@messaging-service/client/protocol';
import { startTestApp, type TestApp } from '../support/app.js';
import { connect, dataOf, mintToken, type TestClient } from '../support/clients.js';
import { fcmToken, startFakeFcm, type FakeFcm, type RecordedFcmSend } from '../support/fcm-server.js';
import { createConversation, userId } from '../support/fixtures.js';
import { httpCall } from '../support/http.js';
import { startAppWithPushServices, type PushTestApp } from '../support/push-services.js';
import {
  startFakeWebPush,
  VAPID_TEST_SUBJECT,
  type BrowserSubscription,
  type FakeWebPush,
} from '../support/web-push-server.js';

const GRACE_MS = 400;
const BACKOFF_MS = 100;
const ATTEMPTS = 4;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const messageOf = (send: RecordedFcmSend) => (send.body as FcmMessage).message;

async function pushCount(service: TestApp, platform: string, outcome: string, reason: string): Promise<number> {
  const text = await (await fetch(`${service.url}/metrics`)).text();
  const line = new RegExp(
    `^push_notifications_total\\{platform="${platform}",outcome="${outcome}",reason="${reason}"\\} (\\d+)`,
    'm',
  ).exec(text);
  return line ? Number(line[1]) : 0;
}

describe('push to FCM and Web Push for offline Android and web devices', () => {
  let fcm: FakeFcm;
  let webPush: FakeWebPush;
  let service: PushTestApp;
  let alice: string;
  let bob: string;
  let sender: TestClient;
  let conversationId: string;
  let redis: Redis;
  let jobs: Queue;
  let db: pg.Client;
  const open: TestClient[] = [];

  const registerAndroid = (user: string, deviceId: string, token: string) =>
    service.app.get(DeviceRegistrationService).register(user, deviceId, { platform: 'android', fcmToken: token });
  const registerWeb = (user: string, deviceId: string, subscription: BrowserSubscription) =>
    service.app.get(DeviceRegistrationService).register(user, deviceId, { platform: 'web', webPush: subscription });
  const send = async (body: string, conversation = conversationId) => {
    const reply = await sender.request<SendData>('send', {
      conversationId: conversation,
      clientMsgId: randomUUID(),
      body,
    });
    return dataOf(reply).message;
  };
  const jobState = (message: WireMessage, user: string, deviceId: string) =>
    jobs.getJobState(pushJobId({ messageId: message.id, userId: user, deviceId }));
  const storedAddress = async (user: string, deviceId: string) => {
    const { rows } = await db.query<{ fcm_token: string | null; web_push_endpoint: string | null }>(
      'SELECT fcm_token, web_push_endpoint FROM devices WHERE user_id = $1 AND device_id = $2',
      [user, deviceId],
    );
    return rows[0];
  };
  /** Polls until `read()` gives null (the address was removed), or 5 s pass. */
  const untilCleared = async (read: () => Promise<string | null>) => {
    const deadline = Date.now() + 5_000;
    let value = await read();
    while (value !== null && Date.now() < deadline) {
      await sleep(20);
      value = await read();
    }
    return value;
  };

  beforeAll(async () => {
    [fcm, webPush] = await Promise.all([startFakeFcm(), startFakeWebPush()]);
    service = await startAppWithPushServices(
      { fcm, webPush },
      { graceMs: GRACE_MS, backoffMs: BACKOFF_MS, attempts: ATTEMPTS },
    );
    alice = userId('alice');
    bob = userId('bob');
    conversationId = await createConversation(service, alice, [bob]);
    sender = await connect(service.url, alice, { deviceId: 'alice-laptop' });
    open.push(sender);
    redis = new Redis(service.redisUrl, { maxRetriesPerRequest: 1 });
    jobs = new Queue(PUSH_QUEUE_NAME, { connection: redis, prefix: PUSH_QUEUE_PREFIX });
    db = new pg.Client({ connectionString: service.databaseUrl });
    await db.connect();
  });

  afterAll(async () => {
    for (const client of open) client.close();
    await jobs?.close();
    redis?.disconnect();
    await db?.end();
    await service?.close();
    await fcm?.close();
    await webPush?.close();
  });

  it('pushes exactly once per message to offline Android and web devices, never to online ones or the sender', async () => {
    const phone = fcmToken();
    const onlinePhone = fcmToken();
    const senderPhone = fcmToken();
    const browser = webPush.subscribe();
    const onlineBrowser = webPush.subscribe();
    await registerAndroid(bob, 'bob-pixel', phone);
    await registerAndroid(bob, 'bob-tablet', onlinePhone);
    await registerAndroid(alice, 'alice-pixel', senderPhone);
    await registerWeb(bob, 'bob-firefox', browser);
    await registerWeb(bob, 'bob-chrome', onlineBrowser);
    const tablet = await connect(service.url, bob, { deviceId: 'bob-tablet' });
    const chrome = await connect(service.url, bob, { deviceId: 'bob-chrome' });
    open.push(tablet, chrome);

    const first = await send('hello there');
    const second = await send('second one');
    await Promise.all([tablet.waitForMessages(2), chrome.waitForMessages(2)]);

    const [androidPushes, webPushes] = await Promise.all([fcm.waitFor(phone, 2), webPush.waitFor(browser, 2)]);
    expect(androidPushes[0].at - Date.parse(first.createdAt)).toBeGreaterThanOrEqual(GRACE_MS - 50);
    expect(webPushes[0].at - Date.parse(first.createdAt)).toBeGreaterThanOrEqual(GRACE_MS - 50);
    await sleep(GRACE_MS + 600);
    const ids = [first.id, second.id].sort();
    expect(
      fcm
        .sendsFor(phone)
        .map((s) => messageOf(s).data.messageId)
        .sort(),
    ).toEqual(ids);
    expect(
      webPush
        .pushesFor(browser)
        .map((p) => (p.payload as { messageId: string }).messageId)
        .sort(),
    ).toEqual(ids);
    expect(fcm.sendsFor(onlinePhone)).toHaveLength(0);
    expect(webPush.pushesFor(onlineBrowser)).toHaveLength(0);
    expect(fcm.sendsFor(senderPhone)).toHaveLength(0);
    expect(await pushCount(service, 'android', 'sent', 'accepted')).toBeGreaterThanOrEqual(2);
    expect(await pushCount(service, 'web', 'sent', 'accepted')).toBeGreaterThanOrEqual(2);
    expect(await pushCount(service, 'android', 'skipped', 'online')).toBeGreaterThanOrEqual(2);
    expect(await pushCount(service, 'web', 'skipped', 'online')).toBeGreaterThanOrEqual(2);
  });

  it('sends FCM a data-only, content-free message: ids, high priority, a TTL, the conversation as collapse key', async () => {
    const token = fcmToken();
    await registerAndroid(bob, 'bob-pixel-2', token);
    const message = await send('a body that must not leave the server');
    const [push] = await fcm.waitFor(token, 1);

    expect(push.status).toBe(200);
    const { android, ...rest } = messageOf(push);
    expect(rest).toEqual({ token, data: { conversationId, messageId: message.id } });
    expect(android.priority).toBe('HIGH');
    expect(android.collapseKey).toBe(conversationId);
    const ttl = Number(/^(\d+)s$/.exec(android.ttl)?.[1]);
    expect(ttl).toBeGreaterThan(86_400 - 60);
    expect(ttl).toBeLessThanOrEqual(86_400);
    expect(push.raw).not.toContain('must not leave');
    expect(push.raw).not.toContain(alice);
  });

  it('gets its access token from the service account’s token_uri with a signed grant, and reuses it', () => {
    // Every send so far: each grant verified by the token endpoint, one token for them all.
    expect(fcm.sends.length).toBeGreaterThanOrEqual(3);
    expect(fcm.grants).toHaveLength(1);
    expect(fcm.grants[0]).toMatchObject({ valid: true });
    expect(new Set(fcm.sends.map((s) => s.authorization))).toEqual(new Set([`Bearer ${fcm.grants[0].issued}`]));
  });

  it('encrypts web pushes (aes128gcm) to the subscription, content-free, with TTL, Urgency, Topic and VAPID', async () => {
    const browser = webPush.subscribe();
    await registerWeb(bob, 'bob-safari', browser);
    const message = await send('a body that must not leave the server either');
    const [push] = await webPush.waitFor(browser, 1);

    expect(push.problem).toBeUndefined();
    expect(push.status).toBe(201);
    expect(push.payload).toEqual({ conversationId, messageId: message.id });
    expect(push.plaintext).not.toContain('must not leave');
    expect(push.headers['content-encoding']).toBe('aes128gcm');
    expect(push.headers.urgency).toBe('high');
    expect(push.headers.topic).toBe(conversationId.replaceAll('-', ''));
    expect(Number(push.headers.ttl)).toBeGreaterThan(86_400 - 60);
    expect(push.vapid).toMatchObject({ aud: webPush.origin, sub: VAPID_TEST_SUBJECT });
    expect(push.vapid!.exp! - Date.now() / 1000).toBeLessThanOrEqual(24 * 3_600);
  });

  it('removes the FCM token on UNREGISTERED and on INVALID_ARGUMENT, without retrying', async () => {
    const gone = fcmToken();
    const invalid = fcmToken();
    fcm.script(gone, [{ status: 404, errorCode: 'UNREGISTERED' }]);
    fcm.script(invalid, [{ status: 400, errorCode: 'INVALID_ARGUMENT' }]);
    await registerAndroid(bob, 'bob-gone', gone);
    await registerAndroid(bob, 'bob-invalid', invalid);
    const message = await send('anyone there?');

    await Promise.all([fcm.waitFor(gone, 1), fcm.waitFor(invalid, 1)]);
    expect(await untilCleared(async () => (await storedAddress(bob, 'bob-gone')).fcm_token)).toBeNull();
    expect(await untilCleared(async () => (await storedAddress(bob, 'bob-invalid')).fcm_token)).toBeNull();
    expect(await jobState(message, bob, 'bob-gone')).toBe('failed');
    await sleep(BACKOFF_MS * 4);
    expect(fcm.sendsFor(gone)).toHaveLength(1);
    expect(fcm.sendsFor(invalid)).toHaveLength(1);
    expect(await pushCount(service, 'android', 'failed', 'UNREGISTERED')).toBe(1);
    expect(await pushCount(service, 'android', 'failed', 'INVALID_ARGUMENT')).toBe(1);

    // Without a token the device gets no further pushes.
    await send('still there?');
    await sleep(GRACE_MS + 400);
    expect(fcm.sendsFor(gone)).toHaveLength(1);
  });

  it('removes the web subscription on 404 and 410, without retrying', async () => {
    const expired = webPush.subscribe();
    const withdrawn = webPush.subscribe();
    webPush.script(expired, [{ status: 404 }]);
    webPush.script(withdrawn, [{ status: 410 }]);
    await registerWeb(bob, 'bob-expired', expired);
    await registerWeb(bob, 'bob-withdrawn', withdrawn);
    await send('hello, browsers?');

    await Promise.all([webPush.waitFor(expired, 1), webPush.waitFor(withdrawn, 1)]);
    for (const deviceId of ['bob-expired', 'bob-withdrawn']) {
      expect(
        await untilCleared(async () => (await storedAddress(bob, deviceId)).web_push_endpoint),
        deviceId,
      ).toBeNull();
    }
    const { rows } = await db.query('SELECT web_push_p256dh, web_push_auth FROM devices WHERE device_id = $1', [
      'bob-expired',
    ]);
    expect(rows[0]).toEqual({ web_push_p256dh: null, web_push_auth: null });
    await sleep(BACKOFF_MS * 4);
    expect(webPush.pushesFor(expired)).toHaveLength(1);
    expect(webPush.pushesFor(withdrawn)).toHaveLength(1);
    expect(await pushCount(service, 'web', 'failed', 'http_404')).toBe(1);
    expect(await pushCount(service, 'web', 'failed', 'http_410')).toBe(1);
  });

  it('retries 503 and 429 no sooner than Retry-After, then delivers once', async () => {
    const token = fcmToken();
    const browser = webPush.subscribe();
    fcm.script(token, [{ status: 503, errorCode: 'UNAVAILABLE', retryAfterSec: 1 }, { status: 503 }]);
    webPush.script(browser, [{ status: 429, retryAfterSec: 1 }, { status: 503 }]);
    await registerAndroid(bob, 'bob-busy-phone', token);
    await registerWeb(bob, 'bob-busy-browser', browser);
    const message = await send('eventually');

    const [androidTries, webTries] = await Promise.all([fcm.waitFor(token, 3), webPush.waitFor(browser, 3)]);
    expect(androidTries.map((t) => t.status)).toEqual([503, 503, 200]);
    expect(webTries.map((t) => t.status)).toEqual([429, 503, 201]);
    // The first retry waits for Retry-After (1 s), far past the 100 ms backoff; the second only for the backoff.
    for (const tries of [androidTries, webTries]) {
      expect(tries[1].at - tries[0].at).toBeGreaterThanOrEqual(1_000 - 20);
      expect(tries[2].at - tries[1].at).toBeLessThan(1_000);
    }
    await sleep(BACKOFF_MS * 8);
    expect(fcm.sendsFor(token)).toHaveLength(3);
    expect(webPush.pushesFor(browser)).toHaveLength(3);
    expect(await jobState(message, bob, 'bob-busy-phone')).toBe('completed');
    expect(await jobState(message, bob, 'bob-busy-browser')).toBe('completed');
    expect(await pushCount(service, 'android', 'retried', 'UNAVAILABLE')).toBeGreaterThanOrEqual(1);
    expect(await pushCount(service, 'web', 'retried', 'http_429')).toBe(1);
  });

  it('counts other refusals as failed and keeps the address', async () => {
    const token = fcmToken();
    const browser = webPush.subscribe();
    fcm.script(token, [{ status: 403, errorCode: 'SENDER_ID_MISMATCH' }]);
    webPush.script(browser, [{ status: 400 }]);
    await registerAndroid(bob, 'bob-mismatch', token);
    await registerWeb(bob, 'bob-refused', browser);
    const message = await send('not for you');

    await Promise.all([fcm.waitFor(token, 1), webPush.waitFor(browser, 1)]);
    await sleep(BACKOFF_MS * 4);
    expect(fcm.sendsFor(token)).toHaveLength(1);
    expect(webPush.pushesFor(browser)).toHaveLength(1);
    expect(await jobState(message, bob, 'bob-mismatch')).toBe('failed');
    expect(await pushCount(service, 'android', 'failed', 'SENDER_ID_MISMATCH')).toBe(1);
    expect(await pushCount(service, 'web', 'failed', 'http_400')).toBe(1);
    expect(await storedAddress(bob, 'bob-mismatch')).toMatchObject({ fcm_token: token });
    expect(await storedAddress(bob, 'bob-refused')).toMatchObject({ web_push_endpoint: browser.endpoint });
  });

  it('makes a new grant when FCM refuses the cached access token, and delivers', async () => {
    const token = fcmToken();
    await registerAndroid(bob, 'bob-revoked', token);
    await send('before a revocation');
    await fcm.waitFor(token, 1);
    fcm.revokeAccessTokens();
    const grantsBefore = fcm.grants.length;
    await send('after a revocation');

    const tries = await fcm.waitFor(token, 3);
    expect(tries.map((t) => t.status)).toEqual([200, 401, 200]);
    expect(fcm.grants).toHaveLength(grantsBefore + 1);
    expect(tries[2].authorization).toBe(`Bearer ${fcm.grants.at(-1)!.issued}`);
  });

  it('serves the VAPID public key and says each provider’s state in readiness', async () => {
    const key = await httpCall(service.url, 'GET', '/v1/push/web-push-key', await mintToken(bob));
    expect(key.status).toBe(200);
    expect(key.body).toEqual({ data: { publicKey: webPush.env.VAPID_PUBLIC_KEY } });
    expect((await httpCall(service.url, 'GET', '/v1/push/web-push-key', null)).status).toBe(401);

    const response = await fetch(`${service.url}/health/ready`);
    expect(((await response.json()) as { info: unknown }).info).toMatchObject({
      push: { status: 'up' },
      apns: { status: 'disabled' },
      fcm: { status: 'up' },
      webPush: { status: 'up' },
    });
  });
});

describe('push with only some providers configured', () => {
  it('queues nothing for a platform whose provider is off, and GET /v1/push/web-push-key is 404', async () => {
    const [fcm, browsers] = await Promise.all([startFakeFcm(), startFakeWebPush()]);
    const service = await startAppWithPushServices({ fcm }, { graceMs: 100 });
    const redis = new Redis(service.redisUrl, { maxRetriesPerRequest: 1 });
    const jobs = new Queue(PUSH_QUEUE_NAME, { connection: redis, prefix: PUSH_QUEUE_PREFIX });
    const alice = userId('alice');
    const bob = userId('bob');
    const sender = await connect(service.url, alice, { deviceId: 'alice-laptop' });
    try {
      const conversationId = await createConversation(service, alice, [bob]);
      const token = fcmToken();
      const registration = service.app.get(DeviceRegistrationService);
      await registration.register(bob, 'bob-pixel', { platform: 'android', fcmToken: token });
      // A browser subscribed to a push service the app is not configured for.
      await registration.register(bob, 'bob-firefox', { platform: 'web', webPush: browsers.subscribe() });
      const reply = await sender.request<SendData>('send', { conversationId, clientMsgId: randomUUID(), body: 'hi' });
      const message = dataOf(reply).message;

      await fcm.waitFor(token, 1);
      expect(await jobs.getJobState(pushJobId({ messageId: message.id, userId: bob, deviceId: 'bob-pixel' }))).not.toBe(
        'unknown',
      );
      expect(await jobs.getJobState(pushJobId({ messageId: message.id, userId: bob, deviceId: 'bob-firefox' }))).toBe(
        'unknown',
      );
      const key = await httpCall(service.url, 'GET', '/v1/push/web-push-key', await mintToken(bob));
      expect(key.status).toBe(404);
      expect(key.body.error.code).toBe('not_found');
    } finally {
      sender.close();
      await jobs.close();
      redis.disconnect();
      await service.close();
      await fcm.close();
      await browsers.close();
    }
  });

  it('answers 404 for the VAPID key when no provider is configured', async () => {
    const service: TestApp = await startTestApp();
    try {
      const key = await httpCall(service.url, 'GET', '/v1/push/web-push-key', await mintToken(userId('bob')));
      expect(key.status).toBe(404);
    } finally {
      await service.close();
    }
  });
});
