import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { startTestApp, type TestApp } from '../support/app.js';
import {
  expectAllDeliveredOnceInOrder,
  sendStream,
  startDirectChat,
  waitFor,
  type DirectChat,
} from '../support/client-harness.js';
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.js';

describe('client SDK behind a network that keeps cutting', () => {
  let service: TestApp;
  let proxy: TcpProxy;
  let chat: DirectChat | undefined;

  beforeAll(async () => {
    service = await startTestApp();
    proxy = await startTcpProxy(Number(new URL(service.url).port));
  });

  afterAll(async () => {
    await chat?.pool.closeAll();
    await proxy.close();
    await service.close();
  });

  it('resolves all 1,000 sends and delivers each exactly once, in seq order, through 8 random connection cuts', async () => {
    chat = await startDirectChat({ serviceUrl: service.url, clientUrl: proxy.url });
    const { a, b, conversationId } = chat;

    const stream = sendStream(a.client, conversationId, { count: 1000, batch: 10, intervalMs: 50 });
    const cuts = proxy.cutRandomly({ count: 8, minGapMs: 150, maxGapMs: 550 });
    expect(await cuts.done, 'cuts made').toBe(8);
    expect(stream.resolved(), 'the cuts landed mid-stream').toBeLessThan(1000);

    await expectAllDeliveredOnceInOrder(chat, stream, { sendsMs: 60_000, deliveryMs: 30_000 });
    // Both went through the proxy and were cut: each must have come back at least once.
    for (const client of [a, b]) {
      expect(client.client.metrics().reconnects, `reconnects: ${client.describe()}`).toBeGreaterThan(0);
      await waitFor(
        () => client.client.state === 'connected',
        () => `connected again: ${client.describe()}`,
      );
    }
  }, 120_000);

  it('notices a link that silently stopped delivering (no reply to its heartbeat), reconnects and loses nothing', async () => {
    await chat?.pool.closeAll();
    chat = await startDirectChat({
      serviceUrl: service.url,
      clientUrl: proxy.url,
      clientOptions: { heartbeatMs: 200, heartbeatTimeoutMs: 600 },
    });
    const { a, b, conversationId } = chat;

    const stream = sendStream(a.client, conversationId, { count: 300, batch: 10, intervalMs: 50 });
    await waitFor(
      () => stream.resolved() >= 50,
      () => `50 sends stored first: ${a.describe()}`,
    );
    // No FIN, no RST: the service's bytes just stop arriving, as on a phone that changed networks.
    proxy.holdReplies();
    const heldAt = stream.resolved();

    await expectAllDeliveredOnceInOrder(chat, stream, { sendsMs: 30_000, deliveryMs: 20_000 });
    expect(heldAt, 'the link went silent mid-stream').toBeLessThan(300);
    for (const client of [a, b]) {
      expect(client.client.metrics().reconnects, `reconnects: ${client.describe()}`).toBeGreaterThan(0);
    }
  }, 60_000);
});
