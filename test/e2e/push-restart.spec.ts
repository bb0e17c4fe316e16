import { randomUUID } from 'node:crypto';

import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { OfflineQueueService } from '../../src/offline-queue/offline-queue.service.js';
import { DevicesRepository } from '../../src/devices/devices.repository.js';
import type { FcmMessage } from '../../src/push/fcm.client.js';
import { pushJobId } from '../../src/push/push-jobs.repository.js';
import { PUSH_QUEUE_NAME, PUSH_QUEUE_PREFIX } from '../../src/push/push.options.js';
import type { ApnsPayload } from '../../src/push/push.payload.js';
import type { SendData } from '@messaging-service/client/protocol';
import { deviceToken, startFakeApns, type FakeApns } from '../support/apns-server.js';
import { connect, dataOf } from '../support/clients.js';
import { fcmToken, startFakeFcm, type FakeFcm } from '../support/fcm-server.js';
import { createConversation, userId } from '../support/fixtures.js';
import { startAppWithPushServices, type PushStandIns, type PushTestApp } from '../support/push-services.js';
import { startFakeWebPush, type FakeWebPush } from '../support/web-push-server.js';

// Long enough to stop the app after the jobs are queued and before they are due.
const GRACE_MS = 1_500;

describe('push jobs across a restart', () => {
  let apns: FakeApns;
  let fcm: FakeFcm;
  let webPush: FakeWebPush;
  let standIns: PushStandIns;
  let first: PushTestApp;
  let second: PushTestApp | undefined;

  beforeAll(async () => {
    [apns, fcm, webPush] = await Promise.all([startFakeApns(), startFakeFcm(), startFakeWebPush()]);
    standIns = { apns, fcm, webPush };
    first = await startAppWithPushServices(standIns, { graceMs: GRACE_MS });
  });

  afterAll(async () => {
    await second?.close();
    await first?.close();
    await Promise.all([apns?.close(), fcm?.close(), webPush?.close()]);
  });

  it('delivers the pushes queued before the service stopped, on every platform, once a new instance starts', async () => {
    const alice = userId('alice');
    const bob = userId('bob');
    const apnsToken = deviceToken();
    const androidToken = fcmToken();
    const subscription = webPush.subscribe();
    const conversationId = await createConversation(first, alice, [bob]);
    const devices = first.app.get(DevicesRepository);
    const queue = first.app.get(OfflineQueueService);
    const registrations = [
      ['bob-phone', { platform: 'ios', apnsToken }],
      ['bob-pixel', { platform: 'android', fcmToken: androidToken }],
      ['bob-browser', { platform: 'web', webPush: subscription }],
    ] as const;
    for (const [deviceId, registration] of registrations) {
      await devices.register(bob, deviceId, registration);
      await queue.startCursors({ userId: bob, deviceId });
    }

    const sender = await connect(first.url, alice, { deviceId: 'alice-web' });
    const reply = await sender.request<SendData>('send', { conversationId, clientMsgId: randomUUID(), body: 'hi' });
    const message = dataOf(reply).message;
    sender.close();

    const redis = new Redis(first.redisUrl, { maxRetriesPerRequest: 1 });
    const jobs = new Queue(PUSH_QUEUE_NAME, { connection: redis, prefix: PUSH_QUEUE_PREFIX });
    try {
      const jobIds = registrations.map(([deviceId]) => pushJobId({ messageId: message.id, userId: bob, deviceId }));
      const deadline = Date.now() + GRACE_MS / 2;
      while ((await Promise.all(jobIds.map((id) => jobs.getJobState(id)))).some((state) => state !== 'delayed')) {
        expect(Date.now()).toBeLessThan(deadline);
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      await first.stop();
      const stoppedAt = Date.now();
      expect(stoppedAt - Date.parse(message.createdAt)).toBeLessThan(GRACE_MS);
      expect(apns.requestsFor(apnsToken)).toHaveLength(0);
      expect(fcm.sendsFor(androidToken)).toHaveLength(0);
      expect(webPush.pushesFor(subscription)).toHaveLength(0);

      second = await startAppWithPushServices(standIns, { graceMs: GRACE_MS }, first);
      const [[ios], [android], [web]] = await Promise.all([
        apns.waitFor(apnsToken, 1),
        fcm.waitFor(androidToken, 1),
        webPush.waitFor(subscription, 1),
      ]);
      for (const push of [ios, android, web]) expect(push.at).toBeGreaterThan(stoppedAt);
      expect((ios.payload as ApnsPayload).messageId).toBe(message.id);
      expect((android.body as FcmMessage).message.data.messageId).toBe(message.id);
      expect(web.payload).toEqual({ conversationId, messageId: message.id });
      await new Promise((resolve) => setTimeout(resolve, 500));
      expect(apns.requestsFor(apnsToken)).toHaveLength(1);
      expect(fcm.sendsFor(androidToken)).toHaveLength(1);
      expect(webPush.pushesFor(subscription)).toHaveLength(1);
      expect(await Promise.all(jobIds.map((id) => jobs.getJobState(id)))).toEqual(Array(3).fill('completed'));
    } finally {
      await jobs.close();
      redis.disconnect();
    }
  });
});
