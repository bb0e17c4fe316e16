import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { startTestApp, type TestApp } from '../support/app.js';
import { startPrivateRedis } from '../support/databases.js';
import { pollStatus } from '../support/service-process.js';

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
      const body = (await down.json()) as { error: Record<string, { status: string }>; info: Record<string, unknown> };
      expect(body.error.redis.status).toBe('down');
      expect(body.info.postgres).toMatchObject({ status: 'up' });
      expect((await fetch(`${service.url}/health/live`)).status).toBe(200);

      await redis.start();
      expect(await pollStatus(`${service.url}/health/ready`, (s) => s === 200)).toBe(200);
    } finally {
      await service.close();
      await redis.stop();
    }
  });
});
