import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { fileStorage, type OutboxEntry } from '@messaging-service/client';

import { parseEnv } from '../../src/config/config.parser.js';
import { serveTestApp, testEnvironment } from '../support/app.js';
import { ClientPool, storedMessages, waitFor } from '../support/client-harness.js';
import { mintToken } from '../support/clients.js';
import { createConversation, userId } from '../support/fixtures.js';
import { freePort } from '../support/free-port.js';
import { PROJECT_ROOT, pollStatus, spawnService, type ServiceProcess } from '../support/service-process.js';

/**
 * Runs in a child Node process (cwd: the repo root, so that the bare import resolves
 * through the workspace link): queues `count` sends on a file storage while nothing
 * listens at `url`, prints the outbox once it lists them all, and exits without close().
 */
const OFFLINE_SENDER = `
import { MessagingClient, fileStorage } from '@messaging-service/client';
const job = JSON.parse(process.env.OFFLINE_JOB);
const client = new MessagingClient({
  url: job.url,
  deviceId: job.deviceId,
  token: job.token,
  storage: fileStorage(job.dir),
  reconnect: { minDelayMs: 50, maxDelayMs: 500 },
});
client.connect().catch(() => undefined);
for (let i = 0; i < job.count; i++) {
  client.send(job.conversationId, { body: 'offline #' + i }).catch(() => undefined);
}
const deadline = Date.now() + 20000;
for (;;) {
  const outbox = await client.outbox();
  if (outbox.length >= job.count) {
    process.stdout.write(JSON.stringify({ outbox, state: client.state }));
    process.exit(0);
  }
  if (Date.now() > deadline) {
    process.stderr.write('the outbox lists ' + outbox.length + ' of ' + job.count + ' after 20 s');
    process.exit(2);
  }
  await new Promise((resolve) => setTimeout(resolve, 20));
}
`;

function runOfflineSender(
  job: Record<string, unknown>,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', OFFLINE_SENDER], {
      cwd: PROJECT_ROOT,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', OFFLINE_JOB: JSON.stringify(job) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

describe('client SDK offline queueing across processes', () => {
  let env: Record<string, string>;
  let dropDatabase: () => Promise<void>;
  let service: ServiceProcess | undefined;
  const pool = new ClientPool();
  const dir = mkdtempSync(join(tmpdir(), 'client-outbox-'));

  beforeAll(async () => {
    ({ env, dropDatabase } = await testEnvironment({ LOG_LEVEL: 'warn' }));
  });

  afterAll(async () => {
    await pool.closeAll();
    service?.child.kill('SIGKILL');
    await service?.exited(10_000).catch(() => undefined);
    await dropDatabase();
    rmSync(dir, { recursive: true, force: true });
  });

  it('sends, exactly once each, the 50 sends another process queued on the same fileStorage while the service was down', async () => {
    const [alice, bob] = [userId('a'), userId('b')];
    // The conversation exists before the outage (made by a short-lived instance on the same database).
    const creator = await serveTestApp(parseEnv(env), () => Promise.resolve());
    const conversationId = await createConversation(creator, alice, [bob], { kind: 'direct' });
    await creator.stop();

    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const run = await runOfflineSender({
      url,
      deviceId: 'laptop',
      token: await mintToken(alice),
      dir,
      conversationId,
      count: 50,
    });
    expect(run.code, `the offline sender's exit (stderr: ${run.stderr})`).toBe(0);
    const queued = JSON.parse(run.stdout) as { outbox: OutboxEntry[]; state: string };
    expect(queued.state, 'the offline client never connected').not.toBe('connected');
    expect(queued.outbox).toHaveLength(50);
    expect(new Set(queued.outbox.map((entry) => entry.clientMsgId)).size, 'distinct clientMsgIds queued').toBe(50);
    expect(queued.outbox.every((entry) => entry.conversationId === conversationId)).toBe(true);

    service = spawnService({ ...env, NODE_ENV: 'production', PORT: String(port) });
    const started = service;
    expect(
      await pollStatus(`${url}/health/ready`, (s) => s === 200, 30_000),
      `service ready:\n${started.output()}`,
    ).toBe(200);

    const laptop = pool.create(url, alice, { deviceId: 'laptop', storage: fileStorage(dir) });
    expect(
      (await laptop.client.outbox()).map((entry) => entry.clientMsgId),
      'the new client finds the outbox the other process left',
    ).toEqual(queued.outbox.map((entry) => entry.clientMsgId));
    await laptop.client.connect();
    await waitFor(
      async () => (await laptop.client.outbox()).length === 0,
      () => `the outbox to empty: ${laptop.describe()}`,
    );
    expect(laptop.client.metrics().outboxDepth).toBe(0);

    const stored = await storedMessages(url, alice, conversationId);
    expect(stored, 'messages stored in the conversation').toHaveLength(50);
    expect(new Set(stored.map((message) => message.clientMsgId)).size, 'distinct stored clientMsgIds').toBe(50);
    // Stored in the order send() was called in the other process (the outbox's order).
    expect(
      stored.map((message) => message.clientMsgId),
      'stored in outbox order',
    ).toEqual(queued.outbox.map((entry) => entry.clientMsgId));
    expect(stored.map((message) => message.body)).toEqual(Array.from({ length: 50 }, (_, i) => `offline #${i}`));
    expect(stored.every((message) => message.senderDeviceId === 'laptop')).toBe(true);
  }, 90_000);
});
