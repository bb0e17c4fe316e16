import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { testEnvironment } from '../support/app.js';
import { freePort } from '../support/free-port.js';
import { pollStatus, spawnService } from '../support/service-process.js';

describe('the built service as a process', () => {
  it('exits 1 before listening, naming every missing variable, in production with nothing set', async () => {
    const service = spawnService({ NODE_ENV: 'production' });
    expect(await service.exited(15_000)).toBe(1);
    for (const name of ['DATABASE_URL', 'REDIS_URL', 'JWT_SECRET', 'ENCRYPTION_KEYS']) {
      expect(service.output()).toContain(`${name}:`);
    }
  });

  it('exits 1 naming every bad value', async () => {
    const service = spawnService({
      NODE_ENV: 'production',
      PORT: '99999',
      DATABASE_URL: 'not a url',
      REDIS_URL: 'memcached://x',
      JWT_SECRET: 'too-short',
      ENCRYPTION_KEYS: '1:abc',
      LOG_LEVEL: 'chatty',
    });
    expect(await service.exited(15_000)).toBe(1);
    for (const name of ['PORT', 'DATABASE_URL', 'REDIS_URL', 'JWT_SECRET', 'ENCRYPTION_KEYS', 'LOG_LEVEL']) {
      expect(service.output()).toContain(`${name}:`);
    }
  });

  describe('running', () => {
    let env: Record<string, string>;
    let dropDatabase: () => Promise<void>;

    beforeAll(async () => {
      ({ env, dropDatabase } = await testEnvironment({ MIGRATE_ON_START: 'true', LOG_LEVEL: 'info' }));
    });

    afterAll(async () => {
      await dropDatabase();
    });

    it('serves, then drains on SIGTERM and exits 0', async () => {
      const port = await freePort();
      const service = spawnService({ ...env, NODE_ENV: 'production', PORT: String(port) });
      try {
        expect(await pollStatus(`http://127.0.0.1:${port}/health/ready`, (s) => s === 200)).toBe(200);
        service.child.kill('SIGTERM');
        expect(await service.exited(10_000)).toBe(0);
      } finally {
        service.child.kill('SIGKILL');
      }
      // Every line on stdout is one pino JSON record: a plain-text line would break log shipping.
      const records = service
        .stdout()
        .split('\n')
        .filter((line) => line !== '')
        .map((line) => {
          try {
            return JSON.parse(line) as Record<string, unknown>;
          } catch {
            throw new Error(`a line on stdout is not JSON: ${line}`);
          }
        });
      for (const record of records) {
        expect(record, JSON.stringify(record)).toMatchObject({
          level: expect.any(Number),
          time: expect.any(Number),
          pid: expect.any(Number),
          msg: expect.any(String),
        });
      }
      const messages = records.map((record) => record.msg);
      expect(messages).toContainEqual(expect.stringMatching(/^listening on http:\/\//));
      expect(messages).toContain('SIGTERM: shutting down');
      expect(service.output()).not.toContain(env.JWT_SECRET);
    });
  });
});
