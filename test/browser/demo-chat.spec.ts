import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

import { chromium, type Browser, type BrowserContext, type Locator, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';

import { startTestApp, type TestApp } from '../support/app.js';
import { mintToken } from '../support/clients.js';
import { httpCall } from '../support/http.js';

/** Every wait in the page is bounded: a missing event fails the test, not the run. */
const WAIT_MS = 15_000;
const ROOT = join(import.meta.dirname, '..', '..');
/**
 * The README's picture is refreshed with UPDATE_DOCS_SCREENSHOT=1; other runs keep theirs
 * under .local so that running the tests leaves the work tree clean.
 */
const SCREENSHOT =
  process.env.UPDATE_DOCS_SCREENSHOT === '1'
    ? join(ROOT, 'docs', 'demo.png')
    : join(ROOT, '.local', 'test', 'demo.png');

/**
 * Two people chat through the demo page, each in their own browser context (own
 * IndexedDB, own network), in the order a newcomer would try things: the tests share
 * the two windows and build on each other.
 */
describe('the demo chat in a real browser', () => {
  let service: TestApp;
  let browser: Browser;
  let aliceContext: BrowserContext;
  let bobContext: BrowserContext;
  let alice: Page;
  let bob: Page;

  beforeAll(async () => {
    service = await startTestApp({ DEMO_ENABLED: 'true' });
    browser = await chromium.launch({
      executablePath: inject('CHROMIUM_PATH'),
      headless: true,
      // Root in CI and containers: chromium's sandbox needs user namespaces it may lack.
      args: ['--no-sandbox'],
      timeout: WAIT_MS,
    });
    aliceContext = await browser.newContext({ viewport: { width: 960, height: 600 } });
    bobContext = await browser.newContext({ viewport: { width: 960, height: 600 } });
    alice = await aliceContext.newPage();
    bob = await bobContext.newPage();
    for (const page of [alice, bob]) page.setDefaultTimeout(WAIT_MS);
  });

  afterAll(async () => {
    await browser?.close();
    await service?.close();
  });

  const messagesOf = (page: Page) => page.locator('#messages li[data-seq] .body');
  const pendingOf = (page: Page) => page.locator('#messages li.pending');
  const banner = (page: Page) => page.locator('#banner');

  async function signIn(page: Page, name: string): Promise<void> {
    await page.goto(`${service.url}/demo`);
    await page.fill('#signin-name', name);
    await page.click('#signin-form button[type=submit]');
    await expect.poll(() => banner(page).getAttribute('data-state'), { timeout: WAIT_MS }).toBe('synced');
  }

  async function send(page: Page, text: string): Promise<void> {
    await page.fill('#composer-input', text);
    await page.press('#composer-input', 'Enter');
  }

  async function waitForTexts(locator: Locator, texts: string[]): Promise<void> {
    await expect.poll(() => locator.allTextContents(), { timeout: WAIT_MS }).toEqual(texts);
  }

  /** Cuts one window's network and waits until its SDK has noticed and counts down to a retry. */
  async function goOffline(context: BrowserContext, page: Page): Promise<void> {
    await context.setOffline(true);
    await expect.poll(() => banner(page).textContent(), { timeout: WAIT_MS }).toMatch(/^Reconnecting in \d+ s…$/);
  }

  it('signs two users in by name with dev tokens and shows them synced', async () => {
    await signIn(alice, 'alice');
    await signIn(bob, 'bob');
    await expect.poll(() => alice.locator('#me').textContent()).toBe('alice');
  });

  it('creates a direct conversation, shows it unread to the other side, and ticks delivered then read', async () => {
    await alice.fill('#new-members', 'bob');
    await alice.click('#new-conversation button[type=submit]');
    await expect.poll(() => alice.locator('#conversation-title').textContent(), { timeout: WAIT_MS }).toBe('bob');
    await send(alice, 'Hi Bob, this is the demo chat');
    await waitForTexts(messagesOf(alice), ['Hi Bob, this is the demo chat']);

    // Bob has not opened the conversation: it is listed with one unread, and delivered.
    const bobsItem = bob.locator('#conversations li[data-name="alice"]');
    await expect.poll(() => bobsItem.locator('.unread').textContent(), { timeout: WAIT_MS }).toBe('1');
    const tick = alice.locator('#messages li.mine .tick').first();
    await expect.poll(() => tick.getAttribute('data-status'), { timeout: WAIT_MS }).toBe('delivered');

    await bobsItem.click();
    await waitForTexts(messagesOf(bob), ['Hi Bob, this is the demo chat']);
    await expect.poll(() => tick.getAttribute('data-status'), { timeout: WAIT_MS }).toBe('read');
    await expect.poll(() => bobsItem.locator('.unread').textContent()).toBe('');
  });

  it('sends both ways live', async () => {
    await send(bob, 'Hello Alice! It works.');
    await waitForTexts(messagesOf(alice), ['Hi Bob, this is the demo chat', 'Hello Alice! It works.']);
    await send(alice, 'Typing, ticks and presence too');
    await waitForTexts(messagesOf(bob), [
      'Hi Bob, this is the demo chat',
      'Hello Alice! It works.',
      'Typing, ticks and presence too',
    ]);
  });

  it('shows typing while the other side types and clears it when they stop', async () => {
    await bob.fill('#composer-input', 'Let me think');
    await expect.poll(() => alice.locator('#typing').textContent(), { timeout: WAIT_MS }).toBe('bob is typing…');
    await alice.screenshot({ path: screenshotPath() });
    await bob.fill('#composer-input', '');
    await expect.poll(() => alice.locator('#typing').textContent(), { timeout: WAIT_MS }).toBe('');
  });

  it('flips presence when the other side closes the page and comes back', async () => {
    const bobsDot = alice.locator('#conversation-members .dot[data-user="bob"]');
    await expect.poll(() => bobsDot.getAttribute('data-online'), { timeout: WAIT_MS }).toBe('true');
    await bob.close();
    await expect.poll(() => bobsDot.getAttribute('data-online'), { timeout: WAIT_MS }).toBe('false');

    // The same browser profile signs Bob in again and reopens his conversation.
    bob = await bobContext.newPage();
    bob.setDefaultTimeout(WAIT_MS);
    await bob.goto(`${service.url}/demo`);
    await expect.poll(() => banner(bob).getAttribute('data-state'), { timeout: WAIT_MS }).toBe('synced');
    await expect.poll(() => bobsDot.getAttribute('data-online'), { timeout: WAIT_MS }).toBe('true');
    await waitForTexts(messagesOf(bob), [
      'Hi Bob, this is the demo chat',
      'Hello Alice! It works.',
      'Typing, ticks and presence too',
    ]);
  });

  it('catches up once and in order after a network cut, and delivers what was typed offline', async () => {
    const before = await messagesOf(bob).allTextContents();
    await goOffline(bobContext, bob);
    for (const text of ['Are you there?', 'Your network is down', 'I keep writing']) await send(alice, text);
    await send(bob, 'Written on the train, offline');
    await waitForTexts(pendingOf(bob).locator('.body'), ['Written on the train, offline']);
    await expect.poll(() => pendingOf(bob).locator('.meta').textContent()).toBe('sending…');

    await bobContext.setOffline(false);
    const caughtUp = [...before, 'Are you there?', 'Your network is down', 'I keep writing'];
    await expect
      .poll(async () => (await messagesOf(bob).allTextContents()).slice(0, caughtUp.length), { timeout: WAIT_MS })
      .toEqual(caughtUp);
    await waitForTexts(messagesOf(bob), [...caughtUp, 'Written on the train, offline']);
    await waitForTexts(pendingOf(bob), []);
    await waitForTexts(messagesOf(alice), [...caughtUp, 'Written on the train, offline']);
  });

  it('delivers a message typed offline after the page was reloaded while still offline', async () => {
    const before = await messagesOf(alice).allTextContents();
    await goOffline(bobContext, bob);
    await send(bob, 'Sent before a reload, offline');
    await waitForTexts(pendingOf(bob).locator('.body'), ['Sent before a reload, offline']);

    // The reload itself fails offline: the send now lives only in IndexedDB.
    await bob.reload().catch(() => undefined);
    await bobContext.setOffline(false);
    await bob.goto(`${service.url}/demo`);
    await expect.poll(() => banner(bob).getAttribute('data-state'), { timeout: WAIT_MS }).toBe('synced');

    await waitForTexts(messagesOf(alice), [...before, 'Sent before a reload, offline']);
    await waitForTexts(messagesOf(bob), [...before, 'Sent before a reload, offline']);
    await waitForTexts(pendingOf(bob), []);
  });

  it('creates a group and scrolls its history back page by page', async () => {
    await alice.fill('#new-members', 'bob, carol');
    await alice.fill('#new-title', 'Book club');
    await alice.click('#new-conversation button[type=submit]');
    await expect.poll(() => alice.locator('#conversation-title').textContent(), { timeout: WAIT_MS }).toBe('Book club');
    const id = await alice.locator('#conversations li[aria-current="true"]').getAttribute('data-id');

    // Carol writes 70 messages through the REST API.
    const carol = await mintToken('carol');
    for (let n = 1; n <= 70; n += 1) {
      const reply = await httpCall(service.url, 'POST', `/v1/conversations/${id}/messages`, carol, {
        clientMsgId: `carol-${n}`,
        body: `chapter ${n}`,
      });
      expect(reply.status).toBe(201);
    }
    // Alice has the group open: she sees all 70 live before the reload, so none is left
    // for the catch-up after it, and what she sees next is history's last page alone.
    await expect.poll(() => alice.locator('#messages li[data-seq]').count(), { timeout: WAIT_MS }).toBe(70);
    await alice.reload();
    const seqs = () =>
      alice
        .locator('#messages li[data-seq]')
        // The test's tsconfig has no DOM types: describe the little of an element it reads.
        .evaluateAll((rows: { getAttribute(name: string): string | null }[]) =>
          rows.map((row) => Number(row.getAttribute('data-seq'))),
        );
    await expect.poll(seqs, { timeout: WAIT_MS }).toEqual(range(41, 70));
    await expect.poll(() => alice.locator('#messages li[data-seq] .sender').first().textContent()).toBe('carol');

    for (const expected of [range(11, 70), range(1, 70)]) {
      await alice.locator('#messages').evaluate((list) => (list.scrollTop = 0));
      await expect.poll(seqs, { timeout: WAIT_MS }).toEqual(expected);
    }
    await expect.poll(() => alice.locator('#messages .history-note').count()).toBe(0);
  });

  it('creates an end-to-end encrypted conversation and chats in it; the service holds only envelopes', async () => {
    await alice.fill('#new-members', 'bob');
    await alice.fill('#new-title', 'Whispers');
    await alice.check('#new-e2e');
    await alice.click('#new-conversation button[type=submit]');
    const title = alice.locator('#conversation-title');
    await expect.poll(() => title.textContent(), { timeout: WAIT_MS }).toBe('Whispers');
    expect(await title.getAttribute('data-encryption')).toBe('e2e');
    const id = await alice.locator('#conversations li[aria-current="true"]').getAttribute('data-id');

    await send(alice, 'only our two browsers can read this');
    await waitForTexts(messagesOf(alice), ['only our two browsers can read this']);
    await bob.locator('#conversations li[data-name="Whispers"]').click();
    await waitForTexts(messagesOf(bob), ['only our two browsers can read this']);
    await send(bob, 'agreed, sealed on my side too');
    await waitForTexts(messagesOf(alice), ['only our two browsers can read this', 'agreed, sealed on my side too']);

    const stored = await httpCall(service.url, 'GET', `/v1/conversations/${id}/messages`, await mintToken('alice'));
    const messages = stored.body.data as { body?: string; ciphertext?: string }[];
    expect(messages).toHaveLength(2);
    for (const message of messages) {
      expect(message.body).toBeUndefined();
      expect(Buffer.from(message.ciphertext ?? '', 'base64').toString('latin1')).not.toMatch(/read this|sealed on/);
    }
  });
});

describe('the demo chat in production with DEMO_ENABLED on', () => {
  let service: TestApp;
  let browser: Browser;

  beforeAll(async () => {
    service = await startTestApp({ NODE_ENV: 'production', DEMO_ENABLED: 'true' });
    browser = await chromium.launch({
      executablePath: inject('CHROMIUM_PATH'),
      headless: true,
      args: ['--no-sandbox'],
      timeout: WAIT_MS,
    });
  });

  afterAll(async () => {
    await browser?.close();
    await service?.close();
  });

  it('has no dev tokens, says so, and signs in with a pasted token', async () => {
    const page = await (await browser.newContext()).newPage();
    page.setDefaultTimeout(WAIT_MS);
    await page.goto(`${service.url}/demo`);
    await page.fill('#signin-name', 'erin');
    await page.click('#signin-form button[type=submit]');
    await expect
      .poll(() => page.locator('#signin-error').textContent(), { timeout: WAIT_MS })
      .toBe('dev tokens are off here: paste a token');

    await page.click('#signin-form summary');
    await page.fill('#signin-token', await mintToken('erin'));
    await page.click('#signin-form button[type=submit]');
    await expect.poll(() => page.locator('#banner').getAttribute('data-state'), { timeout: WAIT_MS }).toBe('synced');
    await expect.poll(() => page.locator('#me').textContent()).toBe('erin');
  });
});

function screenshotPath(): string {
  mkdirSync(join(SCREENSHOT, '..'), { recursive: true });
  return SCREENSHOT;
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, index) => from + index);
}
