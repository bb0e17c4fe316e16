import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { parseEnv } from '../../src/config/config.parser.js';
import { serveTestApp, testEnvironment } from '../support/app.js';
import {
  expectAllDeliveredOnceInOrder,
  sendsInFlight,
  sendStream,
  startDirectChat,
  waitFor,
  type DirectChat,
} from '../support/client-harness.js';
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.js';

type Instance = Awaited<ReturnType<typeof serveTestApp>>;

const portOf = (url: string) => Number(new URL(url).port);

describe('client SDK failing over between two instances', () => {
  let first: Instance;
  let second: Instance;
  let proxy: TcpProxy;
  let chat: DirectChat | undefined;

  beforeAll(async () => {
    // Two instances on one database and one Redis, as behind a load balancer.
    const { env, dropDatabase } = await testEnvironment();
    first = await serveTestApp(parseEnv(env), () => Promise.resolve());
    second = await serveTestApp(parseEnv(env), dropDatabase);
    proxy = await startTcpProxy(portOf(first.url));
  });

  afterAll(async () => {
    await chat?.pool.closeAll();
    await proxy.close();
    await first.stop();
    await second.close();
  });

  it('resolves all 1,000 sends and delivers each exactly once, in seq order, when the proxy moves the clients to the other instance mid-stream', async () => {
    chat = await startDirectChat({ serviceUrl: first.url, clientUrl: proxy.url });
    const { a, b, conversationId } = chat;
    expect(proxy.openByTarget().get(portOf(first.url)), 'both clients start on instance 1').toBe(2);

    const stream = sendStream(a.client, conversationId, { count: 1000, batch: 20, intervalMs: 50 });
    await waitFor(
      () => stream.resolved() >= 300,
      () => `300 sends stored before the failover: ${a.describe()}`,
    );
    // Instance 1 keeps serving what reaches it, but its replies no longer get out: the cut
    // then loses them, and the resends meet messages that are already stored.
    proxy.holdReplies();
    await waitFor(
      () => sendsInFlight(a.client, stream) >= 20,
      () => `20 sends without a reply before the failover: ${a.describe()}`,
    );
    proxy.retarget(portOf(second.url));
    expect(proxy.cutAll(), 'connections cut at the failover').toBe(2);
    expect(stream.resolved(), 'the failover landed mid-stream').toBeLessThan(1000);

    await expectAllDeliveredOnceInOrder(chat, stream, { sendsMs: 60_000, deliveryMs: 30_000, restUrl: second.url });
    for (const client of [a, b]) {
      expect(client.client.metrics().reconnects, `reconnects: ${client.describe()}`).toBeGreaterThan(0);
    }
    expect(a.client.metrics().resent, `A resent what the cut left unanswered: ${a.describe()}`).toBeGreaterThan(0);
    expect(proxy.openByTarget().get(portOf(first.url)) ?? 0, 'connections left on instance 1').toBe(0);
    expect(proxy.openByTarget().get(portOf(second.url)), 'both clients now on instance 2').toBe(2);
  }, 120_000);
});
