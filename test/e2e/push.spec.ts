import { randomUUID } from 'node:crypto';

import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { DeviceRegistrationService } from '../../src/devices/device-registration.service.js';
import { pushJobId } from '../../src/push/push-jobs.repository.js';
import { PUSH_QUEUE_NAME, PUSH_QUEUE_PREFIX } from '../../src/push/push.options.js';
import type { ApnsPayload } from '../../src/push/push.payload.js';
import type { SendData, WireMessage } from '@messaging-service/client/protocol';
import {
  APNS_TEST_TOPIC,
  deviceToken,
  startAppWithApns,
  startFakeApns,
  type FakeApns,
  type PushTestApp,
} from '../support/apns-server.js';
import { startTestApp, type TestApp } from '../support/app.js';
import { connect, dataOf, type TestClient } from '../support/clients.js';
import { createConversation, userId } from '../support/fixtures.js';

const GRACE_MS = 400;
const BACKOFF_MS = 100;
const ATTEMPTS = 4;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function registerIos(
  service: TestApp,
  user: string,
  deviceId: string,
  token: string,
  apnsEnvironment: 'sandbox' | 'production' = 'sandbox',
): Promise<void> {
  // The REST endpoint's path: the row, its cursors, and the device directory told.
  await service.app
    .get(DeviceRegistrationService)
    .register(user, deviceId, { platform: 'ios', apnsToken: token, apnsEnvironment });
}

async function send(client: TestClient, conversationId: string, content: { body?: string; ciphertext?: string }) {
  const reply = await client.request<SendData>('send', { conversationId, clientMsgId: randomUUID(), ...content });
  return dataOf(reply).message;
}

async function pushCount(service: TestApp, outcome: string, reason: string, platform = 'ios'): Promise<number> {
  const text = await (await fetch(`${service.url}/metrics`)).text();
  const line = new RegExp(
    `^push_notifications_total\\{platform="${platform}",outcome="${outcome}",reason="${reason}"\\} (\\d+)`,
    'm',
  ).exec(text);
  return line ? Number(line[1]) : 0;
}

const payloadOf = (request: { payload: unknown }) => request.payload as ApnsPayload;

describe('push to APNs for offline iOS devices', () => {
  let apns: FakeApns;
  let service: PushTestApp;
  let alice: string;
  let bob: string;
  let sender: TestClient;
  let conversationId: string;
  let redis: Redis;
  let jobs: Queue;
  let db: pg.Client;
  const open: TestClient[] = [];

  const connectDevice = async (user: string, deviceId: string) => {
    const client = await connect(service.url, user, { deviceId });
    open.push(client);
    return client;
  };
  const jobState = (message: WireMessage, user: string, deviceId: string) =>
    jobs.getJobState(pushJobId({ messageId: message.id, userId: user, deviceId }));

  beforeAll(async () => {
    apns = await startFakeApns();
    service = await startAppWithApns(apns, { graceMs: GRACE_MS, backoffMs: BACKOFF_MS, attempts: ATTEMPTS });
    // A user id with a colon: the job id must still be valid for BullMQ.
    alice = `auth0:${userId('alice')}`;
    bob = userId('bob');
    conversationId = await createConversation(service, alice, [bob]);
    sender = await connectDevice(alice, 'alice-web');
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
    await apns?.close();
  });

  it('pushes exactly once per message to an offline iOS device, never to an online one or the sender', async () => {
    const offline = deviceToken();
    const online = deviceToken();
    const senderPhone = deviceToken();
    await registerIos(service, bob, 'bob-phone', offline);
    await registerIos(service, bob, 'bob-tablet', online);
    await registerIos(service, alice, 'alice-phone', senderPhone);
    await service.app.get(DeviceRegistrationService).register(bob, 'bob-web', { platform: 'web' });
    const tablet = await connectDevice(bob, 'bob-tablet');

    const first = await send(sender, conversationId, { body: 'hello there' });
    const second = await send(sender, conversationId, { body: 'second one' });
    await tablet.waitForMessages(2);

    const pushes = await apns.waitFor(offline, 2);
    expect(pushes[0].at - Date.parse(first.createdAt)).toBeGreaterThanOrEqual(GRACE_MS - 50);
    await sleep(GRACE_MS + 600);
    expect(
      apns
        .requestsFor(offline)
        .map((r) => payloadOf(r).messageId)
        .sort(),
    ).toEqual([first.id, second.id].sort());
    expect(apns.requestsFor(online)).toHaveLength(0);
    expect(apns.requestsFor(senderPhone)).toHaveLength(0);
    expect(await jobState(first, bob, 'bob-tablet')).toBe('completed');
    expect(await pushCount(service, 'skipped', 'online')).toBeGreaterThanOrEqual(2);
    expect(await pushCount(service, 'sent', 'accepted')).toBeGreaterThanOrEqual(2);
  });

  it('sends content-free alerts with thread, collapse id, badge, expiry, priority and push type', async () => {
    const token = deviceToken();
    await registerIos(service, bob, 'bob-phone-2', token);
    const message = await send(sender, conversationId, { body: 'a body that must not leave the server' });
    const [push] = await apns.waitFor(token, 1);

    expect(push.status).toBe(200);
    expect(push.headers['apns-topic']).toBe(APNS_TEST_TOPIC);
    expect(push.headers['apns-push-type']).toBe('alert');
    expect(push.headers['apns-priority']).toBe('10');
    expect(push.headers['apns-collapse-id']).toBe(conversationId);
    const expiresIn = Number(push.headers['apns-expiration']) - Date.now() / 1000;
    expect(expiresIn).toBeGreaterThan(86_400 - 60);
    expect(expiresIn).toBeLessThan(86_400 + 60);
    expect(push.payload).toEqual({
      aps: { alert: { body: 'New message' }, badge: 1, sound: 'default', 'thread-id': conversationId },
      conversationId,
      messageId: message.id,
    });
    expect(push.bytes).toBeLessThanOrEqual(4_096);
    expect(push.raw).not.toContain('must not leave');
    expect(push.raw).not.toContain(alice);
  });

  it('counts the badge as the device’s unacked messages', async () => {
    const token = deviceToken();
    await registerIos(service, bob, 'bob-phone-3', token);
    for (let i = 0; i < 3; i += 1) await send(sender, conversationId, { body: `#${i}` });
    const pushes = await apns.waitFor(token, 3);
    expect(Math.max(...pushes.map((p) => payloadOf(p).aps.badge))).toBe(3);
  });

  it('never puts e2e content in the payload: mutable-content and ids only', async () => {
    const e2eConversation = await createConversation(service, alice, [bob], { encryption: 'e2e' });
    const token = deviceToken();
    await registerIos(service, bob, 'bob-phone-e2e', token);
    const plaintext = 'the secret plan';
    const ciphertext = Buffer.from(plaintext).toString('base64');
    const message = await send(sender, e2eConversation, { ciphertext });
    const [push] = await apns.waitFor(token, 1);

    expect(push.payload).toEqual({
      aps: {
        alert: { body: 'New message' },
        badge: 1,
        sound: 'default',
        'thread-id': e2eConversation,
        'mutable-content': 1,
      },
      conversationId: e2eConversation,
      messageId: message.id,
    });
    expect(push.headers['apns-collapse-id']).toBe(e2eConversation);
    expect(push.raw).not.toContain(ciphertext);
    expect(push.raw).not.toContain(plaintext);
  });

  it('still pushes to a device that disconnects right after receiving the message live', async () => {
    const token = deviceToken();
    await registerIos(service, bob, 'bob-ipad', token);
    const ipad = await connectDevice(bob, 'bob-ipad');
    const message = await send(sender, conversationId, { body: 'catch me' });
    await ipad.waitForMessages(1);
    ipad.close();

    const [push] = await apns.waitFor(token, 1);
    expect(payloadOf(push).messageId).toBe(message.id);
    expect(push.at - Date.parse(message.createdAt)).toBeGreaterThanOrEqual(GRACE_MS - 50);
  });

  it('does not push a message the device acked within the grace period', async () => {
    const token = deviceToken();
    await registerIos(service, bob, 'bob-mini', token);
    const mini = await connectDevice(bob, 'bob-mini');
    const message = await send(sender, conversationId, { body: 'read it quickly' });
    await mini.waitForMessages(1);
    dataOf(await mini.request('ack', { messageIds: [message.id] }));
    mini.close();

    await sleep(GRACE_MS + 600);
    expect(apns.requestsFor(token)).toHaveLength(0);
    expect(await jobState(message, bob, 'bob-mini')).toBe('completed');
    expect(await pushCount(service, 'skipped', 'acked')).toBeGreaterThanOrEqual(1);
  });

  it('removes the token on 410 Unregistered and does not retry', async () => {
    const token = deviceToken();
    apns.script(token, [{ status: 410, reason: 'Unregistered' }]);
    await registerIos(service, bob, 'bob-gone', token);
    const message = await send(sender, conversationId, { body: 'anyone there?' });

    await apns.waitFor(token, 1);
    const deadline = Date.now() + 5_000;
    let stored: string | null = token;
    while (stored !== null && Date.now() < deadline) {
      const { rows } = await db.query<{ apns_token: string | null }>(
        'SELECT apns_token FROM devices WHERE user_id = $1 AND device_id = $2',
        [bob, 'bob-gone'],
      );
      stored = rows[0].apns_token;
      if (stored !== null) await sleep(20);
    }
    expect(stored).toBeNull();
    expect(await jobState(message, bob, 'bob-gone')).toBe('failed');
    await sleep(BACKOFF_MS * 4);
    expect(apns.requestsFor(token)).toHaveLength(1);
    expect(await pushCount(service, 'failed', 'Unregistered')).toBe(1);

    // Without a token the device gets no further pushes.
    await send(sender, conversationId, { body: 'still there?' });
    await sleep(GRACE_MS + 400);
    expect(apns.requestsFor(token)).toHaveLength(1);
  });

  it('retries 429 and 503 with exponential backoff, then delivers once', async () => {
    const token = deviceToken();
    apns.script(token, [
      { status: 429, reason: 'TooManyRequests' },
      { status: 503, reason: 'ServiceUnavailable' },
    ]);
    await registerIos(service, bob, 'bob-busy', token);
    const message = await send(sender, conversationId, { body: 'eventually' });

    const tries = await apns.waitFor(token, 3);
    expect(tries.map((t) => t.status)).toEqual([429, 503, 200]);
    // Backoff 100 ms, then 200 ms, each less up to 20% jitter.
    expect(tries[1].at - tries[0].at).toBeGreaterThanOrEqual(BACKOFF_MS * 0.8 - 10);
    expect(tries[2].at - tries[1].at).toBeGreaterThanOrEqual(BACKOFF_MS * 2 * 0.8 - 10);
    expect(new Set(tries.map((t) => payloadOf(t).messageId))).toEqual(new Set([message.id]));
    await sleep(BACKOFF_MS * 8);
    expect(apns.requestsFor(token)).toHaveLength(3);
    expect(await jobState(message, bob, 'bob-busy')).toBe('completed');
    expect(await pushCount(service, 'retried', 'TooManyRequests')).toBe(1);
    expect(await pushCount(service, 'retried', 'ServiceUnavailable')).toBeGreaterThanOrEqual(1);
  });

  it('keeps a job that failed every try as failed, counts it, and keeps the token', async () => {
    const token = deviceToken();
    apns.script(
      token,
      Array.from({ length: ATTEMPTS }, () => ({ status: 503, reason: 'ServiceUnavailable' })),
    );
    await registerIos(service, bob, 'bob-down', token);
    const message = await send(sender, conversationId, { body: 'never arrives' });

    await apns.waitFor(token, ATTEMPTS);
    await sleep(BACKOFF_MS * 2 ** ATTEMPTS);
    expect(apns.requestsFor(token)).toHaveLength(ATTEMPTS);
    expect(await jobState(message, bob, 'bob-down')).toBe('failed');
    expect(await pushCount(service, 'failed', 'ServiceUnavailable')).toBe(1);
    const { rows } = await db.query<{ apns_token: string | null }>(
      'SELECT apns_token FROM devices WHERE user_id = $1 AND device_id = $2',
      [bob, 'bob-down'],
    );
    expect(rows[0].apns_token).toBe(token);
  });

  it('reuses one HTTP/2 connection per APNs environment', async () => {
    const token = deviceToken();
    await registerIos(service, bob, 'bob-prod', token, 'production');
    await send(sender, conversationId, { body: 'to production' });
    await apns.waitFor(token, 1);
    // Every push so far went over two sessions: one sandbox, one production.
    expect(apns.sessions()).toBe(2);
    expect(new Set(apns.requests.map((r) => r.session)).size).toBe(2);
  });

  it('says push and APNs are enabled in readiness, FCM and web push not', async () => {
    const response = await fetch(`${service.url}/health/ready`);
    expect(response.status).toBe(200);
    expect(((await response.json()) as { info: unknown }).info).toMatchObject({
      push: { status: 'up' },
      apns: { status: 'up' },
      fcm: { status: 'disabled' },
      webPush: { status: 'disabled' },
    });
  });
});

describe('push without APNs configuration', () => {
  it('queues nothing and readiness says push is disabled without failing', async () => {
    const service = await startTestApp();
    const redis = new Redis(service.redisUrl, { maxRetriesPerRequest: 1 });
    const client: TestClient[] = [];
    try {
      const alice = userId('alice');
      const bob = userId('bob');
      const conversationId = await createConversation(service, alice, [bob]);
      await registerIos(service, bob, 'bob-phone', deviceToken());
      const sender = await connect(service.url, alice, { deviceId: 'alice-web' });
      client.push(sender);
      await send(sender, conversationId, { body: 'hi' });
      await sleep(300);
      expect(await redis.keys(`${PUSH_QUEUE_PREFIX}:*`)).toEqual([]);

      const response = await fetch(`${service.url}/health/ready`);
      expect(response.status).toBe(200);
      expect(await response.json()).toMatchObject({
        status: 'ok',
        info: { push: { status: 'disabled' }, apns: { status: 'disabled' } },
      });
    } finally {
      for (const c of client) c.close();
      redis.disconnect();
      await service.close();
    }
  });
});

describe('push with previews enabled by the operator', () => {
  it('shows sender and a truncated preview in server-mode conversations, nothing in e2e ones', async () => {
    const apns = await startFakeApns();
    const service = await startAppWithApns(apns, { graceMs: 100, previews: true, previewMaxChars: 20 });
    const alice = userId('alice');
    const bob = userId('bob');
    const sender = await connect(service.url, alice, { deviceId: 'alice-web' });
    try {
      const server = await createConversation(service, alice, [bob]);
      const e2e = await createConversation(service, alice, [bob], { encryption: 'e2e' });
      const token = deviceToken();
      await registerIos(service, bob, 'bob-phone', token);

      await send(sender, server, { body: 'Lunch at noon? I booked the usual place.' });
      const [preview] = await apns.waitFor(token, 1);
      expect(payloadOf(preview).aps.alert).toEqual({ title: alice, body: 'Lunch at noon? I bo…' });
      expect(payloadOf(preview).aps['mutable-content']).toBeUndefined();

      await send(sender, e2e, { ciphertext: Buffer.from('the secret plan').toString('base64') });
      const [, secret] = await apns.waitFor(token, 2);
      expect(payloadOf(secret).aps.alert).toEqual({ body: 'New message' });
      expect(payloadOf(secret).aps['mutable-content']).toBe(1);
      expect(secret.raw).not.toContain(alice);
    } finally {
      sender.close();
      await service.close();
      await apns.close();
    }
  });
});

describe('push when APNs cannot be reached', () => {
  it('retries, gives up after the last try, and still shuts down promptly', async () => {
    const apns = await startFakeApns();
    await apns.close(); // nothing listens on its port any more
    const service = await startAppWithApns(apns, { graceMs: 50, attempts: 3, backoffMs: 50 });
    const alice = userId('alice');
    const bob = userId('bob');
    const sender = await connect(service.url, alice, { deviceId: 'alice-web' });
    let closed = false;
    try {
      const conversationId = await createConversation(service, alice, [bob]);
      await registerIos(service, bob, 'bob-phone', deviceToken());
      await send(sender, conversationId, { body: 'hello?' });

      const deadline = Date.now() + 10_000;
      while ((await pushCount(service, 'failed', 'network')) < 1) {
        expect(Date.now()).toBeLessThan(deadline);
        await sleep(50);
      }
      expect(await pushCount(service, 'retried', 'network')).toBe(2);

      sender.close();
      const started = Date.now();
      await service.close();
      closed = true;
      expect(Date.now() - started).toBeLessThan(5_000);
    } finally {
      sender.close();
      if (!closed) await service.close();
    }
  });
});
