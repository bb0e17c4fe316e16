import { readFileSync } from 'node:fs';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { PageData, SendData } from '@messaging-service/client/protocol';
import { testEnvironment } from '../support/app.js';
import { connect, dataOf, mintToken, type TestClient } from '../support/clients.js';
import { userId } from '../support/fixtures.js';
import { freePort } from '../support/free-port.js';
import { httpCall } from '../support/http.js';
import { stalledPolling, stalledWebSocket } from '../support/raw-socketio.js';
import { pollStatus, spawnService, type ServiceProcess } from '../support/service-process.js';

const LIMIT_BYTES = 256 * 1024;
const BODY = 'x'.repeat(60_000);
/** The bounded flow: 24 MB of bodies, far past the limit and the kernel's socket buffers. */
const FLOW_MESSAGES = 400;
/**
 * Sends the sender keeps unanswered at once: their replies carry the body back, and
 * must stay under the limit when the test process is slow to read them.
 */
const WINDOW = 3;
const MIB = 1024 * 1024;
const mib = (bytes: number) => (bytes / MIB).toFixed(1);

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `check` until it holds; fails naming `what` after `timeoutMs`. */
async function waitFor(check: () => Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

/** The process's resident set (VmRSS), in bytes. */
function rssOf(pid: number): number {
  const match = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!match) throw new Error(`no VmRSS for ${pid}`);
  return Number(match[1]) * 1024;
}

/** Samples the RSS every 20 ms while `work` runs; resolves with its peak and `work`'s result. */
async function peakRssDuring<T>(pid: number, work: () => Promise<T>): Promise<{ peak: number; result: T }> {
  let peak = rssOf(pid);
  const sampler = setInterval(() => (peak = Math.max(peak, rssOf(pid))), 20);
  try {
    const result = await work();
    return { peak: Math.max(peak, rssOf(pid)), result };
  } finally {
    clearInterval(sampler);
  }
}

/** Sends `count` bodies of BODY's size, WINDOW at a time; resolves with the stored ids in order. */
async function sendFlow(sender: TestClient, conversationId: string, count: number): Promise<string[]> {
  const ids: string[] = [];
  for (let start = 0; start < count; start += WINDOW) {
    const batch = Array.from({ length: Math.min(WINDOW, count - start) }, (_, i) =>
      sender.request<SendData>('send', { conversationId, clientMsgId: `${conversationId}-${start + i}`, body: BODY }),
    );
    for (const reply of await Promise.all(batch)) ids.push(dataOf(reply).message.id);
  }
  return ids;
}

/**
 * Everything in the device's queue through get-unacked, acking each page. Pages hold what
 * fits a quarter of the limit, a message of BODY's size: asking for more would only make
 * the service read rows it then leaves for the next page.
 */
async function drainUnacked(client: TestClient): Promise<string[]> {
  const ids: string[] = [];
  for (;;) {
    const page = dataOf(await client.request<PageData>('get-unacked', { limit: 1 }));
    ids.push(...page.messages.map((message) => message.id));
    if (page.messages.length > 0) dataOf(await client.request('ack', { messageIds: page.messages.map((m) => m.id) }));
    if (!page.hasMore) return ids;
  }
}

// PROTOCOL.md section 7, SOCKET_SEND_BUFFER_BYTES: a socket past it (a client that stopped
// reading) is disconnected, and its device's messages stay queued. The built service runs
// as its own process so that its RSS is its own.
describe('slow consumers', () => {
  let env: Record<string, string>;
  let dropDatabase: () => Promise<void>;
  let service: ServiceProcess | undefined;
  let url: string;
  let port: number;
  const open: TestClient[] = [];

  const disconnects = async (): Promise<number> => {
    const text = await (await fetch(`${url}/metrics`)).text();
    return Number(/^socket_slow_consumer_disconnects_total (\d+)$/m.exec(text)?.[1] ?? 'NaN');
  };
  /** The service's warn lines about dropping this device's socket. */
  const warnings = (user: string, deviceId: string): string[] =>
    (service?.output() ?? '')
      .split('\n')
      .filter(
        (line) =>
          line.includes('stopped reading') &&
          line.includes(`"userId":"${user}"`) &&
          line.includes(`"deviceId":"${deviceId}"`),
      );
  const client = async (user: string, deviceId: string): Promise<TestClient> => {
    const connected = await connect(url, user, { deviceId });
    open.push(connected);
    return connected;
  };
  const conversationOf = async (creator: string, others: string[]): Promise<string> => {
    const created = await httpCall(url, 'POST', '/v1/conversations', await mintToken(creator), {
      kind: 'group',
      memberIds: others,
    });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    return created.body.data.id as string;
  };

  beforeAll(async () => {
    ({ env, dropDatabase } = await testEnvironment({
      LOG_LEVEL: 'warn',
      SOCKET_SEND_BUFFER_BYTES: String(LIMIT_BYTES),
    }));
    port = await freePort();
    url = `http://127.0.0.1:${port}`;
    // A fixed young generation: Node 22+ sizes it by the machine's memory (tens of MB
    // here), so a burst's garbage alone can move the RSS more than the bound below, and by
    // a different amount per runtime. Fixed, the RSS measures what the service holds.
    const started = spawnService({
      ...env,
      NODE_ENV: 'production',
      PORT: String(port),
      NODE_OPTIONS: '--max-semi-space-size=8',
    });
    service = started;
    const ready = await pollStatus(`${url}/health/ready`, (s) => s === 200, 30_000);
    expect(ready, `service ready:\n${started.output()}`).toBe(200);
  });

  afterAll(async () => {
    for (const c of open.splice(0)) c.close();
    service?.child.kill('SIGKILL');
    await service?.exited(10_000).catch(() => undefined);
    await dropDatabase();
  });

  it('disconnects a websocket client that stopped reading, with the RSS flat, and keeps its messages queued', async () => {
    const pid = service?.child.pid ?? 0;
    const alice = userId('alice');
    const bob = userId('bob');
    const carol = userId('carol');
    const sender = await client(alice, 'phone');

    // The same flow to a client that reads first: what this load costs anyway (its peak),
    // and the heap and allocator grown to it. How much of that the runtime keeps after a
    // flow differs (Node 24 gives more back than Node 20), so the stalled flow's peak is
    // compared with the reading flow's peak, not only with the RSS between the two.
    const reader = await client(carol, 'phone');
    const { peak: readingPeak } = await peakRssDuring(pid, async () => {
      await sendFlow(sender, await conversationOf(alice, [carol]), FLOW_MESSAGES);
      await reader.waitForMessages(FLOW_MESSAGES, 30_000);
    });
    await sleep(500);
    const baseline = Math.max(rssOf(pid), readingPeak);

    const conversationId = await conversationOf(alice, [bob]);
    const stalled = await stalledWebSocket(port, { token: await mintToken(bob), deviceId: 'phone' });
    const before = await disconnects();
    const started = Date.now();
    const { peak, result: sent } = await peakRssDuring(pid, () => sendFlow(sender, conversationId, FLOW_MESSAGES));
    const figures = `${FLOW_MESSAGES} × ${BODY.length} B in ${Date.now() - started} ms; RSS peak ${mib(readingPeak)} MiB with a client that reads, ${mib(peak)} with one that stopped`;
    await waitFor(async () => (await disconnects()) === before + 1, `the stalled socket disconnected (${figures})`);
    expect(warnings(bob, 'phone')).toHaveLength(1);

    // The server ended the TCP connection itself, long before a ping timeout (45 s) could:
    // what was on its way (in the kernel's buffers) is a fraction of what was sent.
    const tail = await stalled.readToEnd(10_000);
    expect(tail).toBeLessThan((FLOW_MESSAGES * BODY.length) / 2);

    // Held for bob's phone, the flow would be over 24 MB; the service stayed as flat as for
    // a client that reads.
    expect(peak - baseline, figures).toBeLessThan(8 * MIB);

    // Nothing is lost: the phone, back with a client that reads, gets all of it. Its pages
    // hold what fits a quarter of the limit (one message here), so that a page never gets a
    // client that reads cut; history pages likewise, keeping the messages nearest the cursor.
    const phone = await client(bob, 'phone');
    expect(phone.session.unacked).toBe(FLOW_MESSAGES);
    const page = dataOf(await phone.request<PageData>('get-unacked', { limit: 100 }));
    expect({ ids: page.messages.map((m) => m.id), hasMore: page.hasMore }).toEqual({ ids: [sent[0]], hasMore: true });
    const newest = dataOf(await phone.request<PageData>('history', { conversationId, limit: 100 }));
    expect(newest.messages.map((m) => m.seq)).toEqual([FLOW_MESSAGES]);
    expect(newest.hasMore).toBe(true);
    const older = dataOf(await phone.request<PageData>('history', { conversationId, beforeSeq: FLOW_MESSAGES }));
    expect(older.messages.map((m) => m.seq)).toEqual([FLOW_MESSAGES - 1]);
    expect(await drainUnacked(phone)).toEqual(sent);
    expect(phone.socket.connected).toBe(true);
  });

  it('disconnects a polling client that stopped polling, well before its ping timeout, and keeps its messages queued', async () => {
    const alice = userId('alice');
    const dave = userId('dave');
    const sender = await client(alice, 'phone');
    const conversationId = await conversationOf(alice, [dave]);
    const stalled = await stalledPolling(url, { token: await mintToken(dave), deviceId: 'laptop' });
    const before = await disconnects();
    const started = Date.now();

    const sent = await sendFlow(sender, conversationId, 40);
    await waitFor(async () => (await disconnects()) === before + 1, 'the stalled polling session dropped', 5_000);
    expect(Date.now() - started).toBeLessThan(10_000);
    // Engine.IO answers 400 for a session it no longer knows.
    expect(await stalled.poll()).toBe(400);
    expect(warnings(dave, 'laptop')).toHaveLength(1);

    const laptop = await client(dave, 'laptop');
    expect(await drainUnacked(laptop)).toEqual(sent);
  });
});
