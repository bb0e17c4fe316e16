import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

import { ClientError } from '@messaging-service/client';

import { startTestApp, type TestApp } from '../support/app.js';
import {
  ClientPool,
  closedStates,
  expectAllDeliveredOnceInOrder,
  sendStream,
  startDirectChat,
  type DirectChat,
} from '../support/client-harness.js';
import { mintToken } from '../support/clients.js';
import { userId } from '../support/fixtures.js';

describe('client SDK tokens', () => {
  let service: TestApp;
  let chat: DirectChat | undefined;
  const pool = new ClientPool();

  beforeAll(async () => {
    service = await startTestApp();
  });

  afterEach(async () => {
    await chat?.pool.closeAll();
    chat = undefined;
    await pool.closeAll();
  });

  afterAll(async () => {
    await service.close();
  });

  it('keeps an 8 s stream whole while 3 s tokens expire: the provider is asked again, nothing is lost or repeated, never closed', async () => {
    chat = await startDirectChat({ serviceUrl: service.url, clientOptions: { tokenTtlSec: 3 } });
    const { a, b, conversationId } = chat;

    const startedAt = Date.now();
    const stream = sendStream(a.client, conversationId, { count: 400, batch: 5, intervalMs: 100 });
    await expectAllDeliveredOnceInOrder(chat, stream, { sendsMs: 40_000, deliveryMs: 20_000 });
    expect(Date.now() - startedAt, 'the stream outlived the first tokens').toBeGreaterThan(6_000);

    for (const client of [a, b]) {
      expect(client.tokenCalls(), `token provider calls: ${client.describe()}`).toBeGreaterThan(1);
      expect(closedStates(client), `went to 'closed': ${client.describe()}`).toEqual([]);
      expect(client.client.state).toBe('connected');
    }
  }, 90_000);

  it('rejects connect() with ClientError unauthorized for a malformed string token, and ends closed', async () => {
    const client = pool.create(service.url, userId('a'), { token: 'not-a-jwt' });
    const failure = await client.client.connect().then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(failure).toBeInstanceOf(ClientError);
    expect(failure).toMatchObject({ code: 'unauthorized' });
    expect(client.client.state).toBe('closed');
    expect(client.states.at(-1)).toMatchObject({ state: 'closed' });
  });

  it('rejects connect() with ClientError unauthorized for a string token signed with another secret, and ends closed', async () => {
    const user = userId('a');
    const forged = await mintToken(user, { secret: 'some-other-secret-some-other-secret-0123456789' });
    const client = pool.create(service.url, user, { token: forged });
    const failure = await client.client.connect().then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(failure).toBeInstanceOf(ClientError);
    expect(failure).toMatchObject({ code: 'unauthorized' });
    expect(client.client.state).toBe('closed');
    expect(client.client.metrics().connects).toBe(0);
  });
});
