import { chromium, type Browser, type Page } from 'playwright-core';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';

import { mintToken } from '../support/clients.js';
import { httpCall } from '../support/http.js';
import { startAppWithPushServices, type PushTestApp } from '../support/push-services.js';
import { startFakeWebPush, type BrowserSubscription, type FakeWebPush } from '../support/web-push-server.js';

const WAIT_MS = 15_000;

/**
 * The demo page's Web Push opt-in in headless chromium. Everything is the browser's own
 * (service worker registration, Notification permission, the page's fetches) except
 * PushManager.subscribe: chromium's push service is Google's, out of reach here, so the
 * page gets a subscription made by the local push service stand-in, which then receives
 * and decrypts what the service sends to it.
 */
describe('the demo page opting in to Web Push', () => {
  let webPush: FakeWebPush;
  let service: PushTestApp;
  let browser: Browser;
  let page: Page;
  let subscription: BrowserSubscription;

  beforeAll(async () => {
    webPush = await startFakeWebPush();
    service = await startAppWithPushServices({ webPush }, { graceMs: 300 }, undefined, { DEMO_ENABLED: 'true' });
    browser = await chromium.launch({
      executablePath: inject('CHROMIUM_PATH'),
      headless: true,
      args: ['--no-sandbox'],
      timeout: WAIT_MS,
    });
    const context = await browser.newContext();
    await context.grantPermissions(['notifications'], { origin: service.url });
    subscription = webPush.subscribe();
    // A string, run in the page: the tests compile without the DOM's types.
    await context.addInitScript(`
      window.subscribeCalls = [];
      PushManager.prototype.subscribe = function (options) {
        const key = new Uint8Array(options.applicationServerKey);
        window.subscribeCalls.push(btoa(String.fromCharCode(...key)));
        const json = ${JSON.stringify(subscription)};
        return Promise.resolve({ endpoint: json.endpoint, toJSON: () => json });
      };
    `);
    page = await context.newPage();
    page.setDefaultTimeout(WAIT_MS);
  });

  afterAll(async () => {
    await browser?.close();
    await service?.close();
    await webPush?.close();
  });

  it('registers the service worker, subscribes with the VAPID key and PUTs the subscription; pushes follow', async () => {
    await page.goto(`${service.url}/demo`);
    await page.fill('#signin-name', 'alice');
    await page.click('#signin-form button[type=submit]');
    await expect.poll(() => page.locator('#banner').getAttribute('data-state'), { timeout: WAIT_MS }).toBe('synced');

    await page.click('#push-enable');
    await expect.poll(() => page.locator('#push-status').textContent(), { timeout: WAIT_MS }).toBe('On');

    const calls = await page.evaluate<string[]>('window.subscribeCalls');
    expect(calls.map((key) => Buffer.from(key, 'base64').toString('base64url'))).toEqual([
      webPush.env.VAPID_PUBLIC_KEY,
    ]);
    const worker = await page.evaluate<string>(
      "navigator.serviceWorker.getRegistration('/demo/').then((r) => r?.active?.scriptURL)",
    );
    expect(worker).toBe(`${service.url}/demo/sw.js`);
    const deviceId = await page.evaluate<string>("localStorage.getItem('demo.device.alice')");
    const db = new pg.Client({ connectionString: service.databaseUrl });
    await db.connect();
    try {
      const { rows } = await db.query(
        'SELECT platform, web_push_endpoint FROM devices WHERE user_id = $1 AND device_id = $2',
        ['alice', deviceId],
      );
      expect(rows).toEqual([{ platform: 'web', web_push_endpoint: subscription.endpoint }]);
    } finally {
      await db.end();
    }

    // The page goes away; bob writes; the browser's push service gets a content-free push.
    await page.close();
    const bob = await mintToken('bob');
    const created = await httpCall(service.url, 'POST', '/v1/conversations', bob, {
      kind: 'direct',
      memberIds: ['alice', 'bob'],
    });
    const conversationId = created.body.data.id as string;
    const sent = await httpCall(service.url, 'POST', `/v1/conversations/${conversationId}/messages`, bob, {
      clientMsgId: 'while-away',
      body: 'are you there?',
    });
    expect(sent.status).toBe(201);
    const [push] = await webPush.waitFor(subscription, 1);
    expect(push.payload).toEqual({ conversationId, messageId: sent.body.data.message.id });
  });
});
