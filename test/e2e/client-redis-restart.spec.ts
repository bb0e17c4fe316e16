import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { startTestApp, type TestApp } from '../support/app.js';
import {
  expectAllDeliveredOnceInOrder,
  sendStream,
  startDirectChat,
  waitFor,
  type DirectChat,
} from '../support/client-harness.js';
import { startPrivateRedis, type PrivateRedis } from '../support/databases.js';
import { pollStatus } from '../support/service-process.js';

describe('client SDK while Redis restarts', () => {
  let redis: PrivateRedis;
  let service: TestApp;
  let chat: DirectChat | undefined;

  beforeAll(async () => {
    redis = await startPrivateRedis();
    service = await startTestApp({ REDIS_URL: redis.url });
  });

  afterAll(async () => {
    await chat?.pool.closeAll();
    await service.close();
    await redis.close();
  });

  it('resolves all 1,000 sends and delivers each exactly once, in seq order, when Redis restarts mid-stream', async () => {
    chat = await startDirectChat({ serviceUrl: service.url });
    const { a, conversationId } = chat;

    const stream = sendStream(a.client, conversationId, { count: 1000, batch: 20, intervalMs: 50 });
    await waitFor(
      () => stream.resolved() >= 300,
      () => `300 sends stored before the restart: ${a.describe()}`,
    );
    await redis.stop();
    const resolvedAtStop = stream.resolved();
    // Down long enough for the service to notice, then back (same data: append-only file).
    expect(await pollStatus(`${service.url}/health/ready`, (s) => s === 503, 10_000), 'readiness without Redis').toBe(
      503,
    );
    await redis.start();
    expect(resolvedAtStop, 'Redis went down mid-stream').toBeLessThan(1000);

    await expectAllDeliveredOnceInOrder(chat, stream, { sendsMs: 60_000, deliveryMs: 30_000 });
  }, 120_000);
});
