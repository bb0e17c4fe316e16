import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { startTestApp, type TestApp } from '../support/app.js';
import { parseEnv } from '../../src/config/config.parser.js';
import { serveTestApp, testEnvironment } from '../support/app.js';
import { startPrivateRedis } from '../support/databases.js';
import { freePort } from '../support/free-port.js';
import { pollStatus } from '../support/service-process.js';
import { startTcpProxy } from '../support/tcp-proxy.js';

describe('health and metrics', () => {
  let service: TestApp;

  beforeAll(async () => {
    service = await startTestApp();
  });

  afterAll(async () => {
    await service.close();
  });

  it('answers /health/live with 200', async () => {
    const response = await fetch(`${service.url}/health/live`);
    expect(response.status).toBe(200);
    expect(await response.json()).toMatchObject({ status: 'ok' });
  });

  it('answers /health/ready with 200 when PostgreSQL and Redis answer', async () => {
    const response = await fetch(`${service.url}/health/ready`);
    expect(response.status).toBe(200);
    expect(await response.json()).toMatchObject({
      status: 'ok',
      info: { postgres: { status: 'up' }, redis: { status: 'up' } },
    });
  });

  it('serves Prometheus metrics with process and HTTP figures', async () => {
    await fetch(`${service.url}/health/live`);
    const response = await fetch(`${service.url}/metrics`);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^text\/plain/);
    const text = await response.text();
    expect(text).toMatch(/^process_resident_memory_bytes \d+/m);
    expect(text).toMatch(/^http_requests_total\{method="GET",route="\/health\/live",status="200"\} \d+/m);
  });

  it('gives every response a request id, keeping a sane one the caller sent', async () => {
    const generated = await fetch(`${service.url}/health/live`);
    expect(generated.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
    const echoed = await fetch(`${service.url}/health/live`, { headers: { 'x-request-id': 'trace-abc_1' } });
    expect(echoed.headers.get('x-request-id')).toBe('trace-abc_1');
  });
});

describe('readiness when Redis goes away', () => {
  it('turns 503 naming Redis while live stays 200, and recovers when Redis returns', async () => {
    const redis = await startPrivateRedis();
    const service = await startTestApp({ REDIS_URL: redis.url });
    try {
      expect(await pollStatus(`${service.url}/health/ready`, (s) => s === 200)).toBe(200);

      await redis.stop();
      expect(await pollStatus(`${service.url}/health/ready`, (s) => s === 503)).toBe(503);
      const down = await fetch(`${service.url}/health/ready`);
      // The dependency and its status only: no driver message, no address.
      expect(await down.json()).toEqual({
        status: 'error',
        info: {
          postgres: { status: 'up' },
          push: { status: 'disabled' },
          apns: { status: 'disabled' },
          fcm: { status: 'disabled' },
          webPush: { status: 'disabled' },
        },
        error: { redis: { status: 'down' } },
      });
      expect((await fetch(`${service.url}/health/live`)).status).toBe(200);

      await redis.start();
      expect(await pollStatus(`${service.url}/health/ready`, (s) => s === 200)).toBe(200);
    } finally {
      await service.close();
      await redis.stop();
    }
  });
});

describe('readiness when PostgreSQL goes away', () => {
  it('names PostgreSQL and its status only, leaking neither the driver nor the address', async () => {
    const { env, dropDatabase } = await testEnvironment();
    const database = new URL(env.DATABASE_URL);
    // PostgreSQL reached through a proxy that can be pointed at nothing.
    const proxy = await startTcpProxy(Number(database.port));
    database.port = String(proxy.port);
    const service = await serveTestApp(parseEnv({ ...env, DATABASE_URL: database.toString() }), dropDatabase);
    try {
      expect(await pollStatus(`${service.url}/health/ready`, (s) => s === 200)).toBe(200);
      proxy.retarget(await freePort());
      proxy.cutAll();
      expect(await pollStatus(`${service.url}/health/ready`, (s) => s === 503)).toBe(503);
      const down = await fetch(`${service.url}/health/ready`);
      const text = await down.text();
      expect(JSON.parse(text)).toEqual({
        status: 'error',
        info: {
          redis: { status: 'up' },
          push: { status: 'disabled' },
          apns: { status: 'disabled' },
          fcm: { status: 'disabled' },
          webPush: { status: 'disabled' },
        },
        error: { postgres: { status: 'down' } },
      });
      expect(text).not.toMatch(/prisma|127\.0\.0\.1|ECONNREFUSED|\$queryRaw/i);
    } finally {
      await service.stop();
      await proxy.close();
      await dropDatabase();
    }
  });
});
