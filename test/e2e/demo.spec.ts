import { execFileSync } from 'node:child_process';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { startTestApp, type TestApp } from '../support/app.js';
import { httpCall } from '../support/http.js';

const ROOT = join(import.meta.dirname, '..', '..');

/** What /demo mounts under each NODE_ENV and DEMO_ENABLED (the page itself is tested in test/browser). */
describe('the demo endpoints', () => {
  const apps: TestApp[] = [];
  const start = async (overrides: Record<string, string>) => {
    const app = await startTestApp(overrides);
    apps.push(app);
    return app;
  };

  beforeAll(() => {
    // The page is served from the bundle: build it when this file runs alone.
    execFileSync(process.execPath, [join(ROOT, 'scripts', 'build-demo.mjs')], { stdio: 'inherit' });
  });

  afterAll(async () => {
    await Promise.all(apps.map((app) => app.close()));
  });

  it('serves the page and signs dev tokens the service accepts outside production', async () => {
    const { url } = await start({});
    const page = await fetch(`${url}/demo`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/^text\/html/);
    expect(await page.text()).toContain('/demo/main.js');
    expect((await fetch(`${url}/demo/main.js`)).headers.get('content-type')).toMatch(/^text\/javascript/);
    expect((await fetch(`${url}/demo/package.json`)).status).toBe(404);

    const reply = await httpCall(url, 'POST', '/demo/token', null, { userId: 'dana' });
    expect(reply.status).toBe(200);
    const { token, expiresAt } = reply.body.data as { token: string; expiresAt: string };
    expect(Date.parse(expiresAt)).toBeGreaterThan(Date.now());
    const list = await httpCall(url, 'GET', '/v1/conversations', token);
    expect(list.status).toBe(200);
    expect((await httpCall(url, 'POST', '/demo/token', null, { userId: '' })).status).toBe(400);
  });

  it('never mounts the token endpoint in production, even with DEMO_ENABLED on', async () => {
    const { url } = await start({ NODE_ENV: 'production', DEMO_ENABLED: 'true' });
    expect((await fetch(`${url}/demo`)).status).toBe(200);
    const reply = await httpCall(url, 'POST', '/demo/token', null, { userId: 'mallory' });
    expect(reply.status).toBe(404);
    expect(reply.body.data).toBeUndefined();
  });

  it('serves nothing at /demo in production by default, or when DEMO_ENABLED is off', async () => {
    const cases: Record<string, string>[] = [{ NODE_ENV: 'production' }, { DEMO_ENABLED: 'false' }];
    for (const overrides of cases) {
      const { url } = await start(overrides);
      expect((await fetch(`${url}/demo`)).status).toBe(404);
      expect((await httpCall(url, 'POST', '/demo/token', null, { userId: 'mallory' })).status).toBe(404);
    }
  });
});
