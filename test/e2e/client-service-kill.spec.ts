import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { testEnvironment } from '../support/app.js';
import {
  expectAllDeliveredOnceInOrder,
  sendsInFlight,
  sendStream,
  startDirectChat,
  waitFor,
  type DirectChat,
} from '../support/client-harness.js';
import { freePort } from '../support/free-port.js';
import { pollStatus, spawnService, type ServiceProcess } from '../support/service-process.js';

describe('client SDK across a SIGKILL of the service', () => {
  let env: Record<string, string>;
  let dropDatabase: () => Promise<void>;
  let port: number;
  let service: ServiceProcess | undefined;
  let chat: DirectChat | undefined;

  const startService = async (): Promise<ServiceProcess> => {
    const started = spawnService({ ...env, NODE_ENV: 'production', PORT: String(port) });
    service = started;
    const status = await pollStatus(`http://127.0.0.1:${port}/health/ready`, (s) => s === 200, 30_000);
    expect(status, `service ready on ${port}:\n${started.output()}`).toBe(200);
    return started;
  };

  beforeAll(async () => {
    ({ env, dropDatabase } = await testEnvironment({ LOG_LEVEL: 'warn' }));
    port = await freePort();
  });

  afterAll(async () => {
    await chat?.pool.closeAll();
    service?.child.kill('SIGKILL');
    await service?.exited(10_000).catch(() => undefined);
    await dropDatabase();
  });

  it('resolves all 1,000 sends and delivers each exactly once, in seq order, when the service is SIGKILLed mid-stream and restarted', async () => {
    const first = await startService();
    const url = `http://127.0.0.1:${port}`;
    chat = await startDirectChat({ serviceUrl: url });
    const { a, b, conversationId } = chat;

    const stream = sendStream(a.client, conversationId, { count: 1000, batch: 20, intervalMs: 50 });
    await waitFor(
      () => stream.resolved() >= 300,
      () => `300 sends stored before the kill: ${a.describe()}`,
    );
    // Frozen first, so that the kill finds sends on the wire: some stored without a reply
    // sent, some not read at all.
    first.child.kill('SIGSTOP');
    await waitFor(
      () => sendsInFlight(a.client, stream) >= 20,
      () => `20 sends on the wire to the frozen service: ${a.describe()}`,
    );
    first.child.kill('SIGKILL');
    expect(await first.exited(10_000)).toBe('SIGKILL');
    const resolvedAtKill = stream.resolved();
    expect(resolvedAtKill, 'the kill landed mid-stream').toBeLessThan(1000);

    await startService();
    await expectAllDeliveredOnceInOrder(chat, stream, { sendsMs: 60_000, deliveryMs: 30_000 });
    expect(a.client.metrics().reconnects, `A reconnected: ${a.describe()}`).toBeGreaterThan(0);
    expect(b.client.metrics().reconnects, `B reconnected: ${b.describe()}`).toBeGreaterThan(0);
    expect(a.client.metrics().resent, `A resent what the kill left unanswered: ${a.describe()}`).toBeGreaterThan(0);
  }, 120_000);
});
