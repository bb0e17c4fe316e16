import { randomUUID } from 'node:crypto';

import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { DevicesRepository } from '../../src/devices/devices.repository.js';
import { pushJobId } from '../../src/push/push-jobs.repository.js';
import { PUSH_QUEUE_NAME, PUSH_QUEUE_PREFIX } from '../../src/push/push.options.js';
import type { ApnsPayload } from '../../src/push/push.payload.js';
import type { SendData } from '@messaging-service/client/protocol';
import {
  deviceToken,
  startAppWithApns,
  startFakeApns,
  type FakeApns,
  type PushTestApp,
} from '../support/apns-server.js';
import { connect, dataOf } from '../support/clients.js';
import { createConversation, userId } from '../support/fixtures.js';

// Long enough to stop the app after the job is queued and before it is due.
const GRACE_MS = 1_500;

describe('push jobs across a restart', () => {
  let apns: FakeApns;
  let first: PushTestApp;
  let second: PushTestApp | undefined;

  beforeAll(async () => {
    apns = await startFakeApns();
    first = await startAppWithApns(apns, { graceMs: GRACE_MS });
  });

  afterAll(async () => {
    await second?.close();
    await first?.close();
    await apns?.close();
  });

  it('delivers a push queued before the service stopped once a new instance starts', async () => {
    const alice = userId('alice');
    const bob = userId('bob');
    const token = deviceToken();
    const conversationId = await createConversation(first, alice, [bob]);
    const devices = first.app.get(DevicesRepository);
    await devices.register(bob, 'bob-phone', { platform: 'ios', apnsToken: token });
    await devices.ensureCursors(bob, 'bob-phone');

    const sender = await connect(first.url, alice, { deviceId: 'alice-web' });
    const reply = await sender.request<SendData>('send', { conversationId, clientMsgId: randomUUID(), body: 'hi' });
    const message = dataOf(reply).message;
    sender.close();

    const redis = new Redis(first.redisUrl, { maxRetriesPerRequest: 1 });
    const jobs = new Queue(PUSH_QUEUE_NAME, { connection: redis, prefix: PUSH_QUEUE_PREFIX });
    try {
      const jobId = pushJobId({ messageId: message.id, userId: bob, deviceId: 'bob-phone' });
      const deadline = Date.now() + GRACE_MS / 2;
      while ((await jobs.getJobState(jobId)) !== 'delayed') {
        expect(Date.now()).toBeLessThan(deadline);
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      await first.stop();
      const stoppedAt = Date.now();
      expect(stoppedAt - Date.parse(message.createdAt)).toBeLessThan(GRACE_MS);
      expect(apns.requestsFor(token)).toHaveLength(0);
      expect(await jobs.getJobState(jobId)).toBe('delayed');

      second = await startAppWithApns(apns, { graceMs: GRACE_MS }, first);
      const [push] = await apns.waitFor(token, 1);
      expect(push.at).toBeGreaterThan(stoppedAt);
      expect((push.payload as ApnsPayload).messageId).toBe(message.id);
      await new Promise((resolve) => setTimeout(resolve, 500));
      expect(apns.requestsFor(token)).toHaveLength(1);
      expect(await jobs.getJobState(jobId)).toBe('completed');
    } finally {
      await jobs.close();
      redis.disconnect();
    }
  });
});
