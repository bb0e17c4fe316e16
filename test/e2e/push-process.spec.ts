// The built service as a process, as in production: no PushOptions (default timings), and
// the push stand-ins' certificates trusted only through NODE_EXTRA_CA_CERTS, the way an
// operator trusts a corporate proxy's CA (PROTOCOL.md section 7).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { FcmMessage } from '../../src/push/fcm.client.js';
import { testEnvironment } from '../support/app.js';
import { mintToken } from '../support/clients.js';
import { fcmToken, startFakeFcm, type FakeFcm } from '../support/fcm-server.js';
import { freePort } from '../support/free-port.js';
import { httpCall } from '../support/http.js';
import { pushEnv } from '../support/push-services.js';
import { pollStatus, spawnService, type ServiceProcess } from '../support/service-process.js';
import { startFakeWebPush, type FakeWebPush } from '../support/web-push-server.js';

describe('push from the service process, trusting push services through NODE_EXTRA_CA_CERTS', () => {
  let fcm: FakeFcm;
  let webPush: FakeWebPush;
  let service: ServiceProcess | undefined;
  let dropDatabase: () => Promise<void> = () => Promise.resolve();
  let dir: string;

  beforeAll(async () => {
    [fcm, webPush] = await Promise.all([startFakeFcm(), startFakeWebPush()]);
    dir = mkdtempSync(join(tmpdir(), 'push-ca-'));
  });

  afterAll(async () => {
    service?.child.kill('SIGKILL');
    await service?.exited(10_000).catch(() => undefined);
    await dropDatabase();
    await Promise.all([fcm?.close(), webPush?.close()]);
    rmSync(dir, { recursive: true, force: true });
  });

  it('delivers to an offline Android and web device registered over REST', async () => {
    const caFile = join(dir, 'push-ca.pem');
    writeFileSync(caFile, `${fcm.cert}\n${webPush.cert}`);
    const environment = await testEnvironment({ ...pushEnv({ fcm, webPush }), LOG_LEVEL: 'warn' });
    dropDatabase = environment.dropDatabase;
    const port = await freePort();
    service = spawnService({
      ...environment.env,
      NODE_ENV: 'production',
      PORT: String(port),
      NODE_EXTRA_CA_CERTS: caFile,
    });
    const url = `http://127.0.0.1:${port}`;
    expect(await pollStatus(`${url}/health/ready`, (s) => s === 200, 30_000), service.output()).toBe(200);

    const alice = `alice-${Date.now()}`;
    const bob = `bob-${Date.now()}`;
    const bobToken = await mintToken(bob);
    const token = fcmToken();
    const subscription = webPush.subscribe();
    expect(
      (await httpCall(url, 'PUT', '/v1/devices/pixel', bobToken, { platform: 'android', fcmToken: token })).status,
    ).toBe(201);
    expect(
      (await httpCall(url, 'PUT', '/v1/devices/browser', bobToken, { platform: 'web', webPush: subscription })).status,
    ).toBe(201);
    const aliceToken = await mintToken(alice);
    const created = await httpCall(url, 'POST', '/v1/conversations', aliceToken, {
      kind: 'direct',
      memberIds: [alice, bob],
    });
    expect(created.status).toBe(201);
    const conversationId = created.body.data.id as string;
    const sent = await httpCall(url, 'POST', `/v1/conversations/${conversationId}/messages`, aliceToken, {
      clientMsgId: 'm1',
      body: 'hello',
    });
    expect(sent.status).toBe(201);
    const messageId = sent.body.data.message.id as string;

    // The default grace period is 2 s.
    const [[android], [web]] = await Promise.all([
      fcm.waitFor(token, 1, 15_000),
      webPush.waitFor(subscription, 1, 15_000),
    ]);
    expect((android.body as FcmMessage).message.data).toEqual({ conversationId, messageId });
    expect(web.payload).toEqual({ conversationId, messageId });
    expect(fcm.grants).toMatchObject([{ valid: true }]);
  });
});
