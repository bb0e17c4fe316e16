import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { Reply, SendData } from '@messaging-service/client/protocol';
import { testEnvironment } from '../support/app.js';
import { connect, connectRefused, mintToken, type TestClient } from '../support/clients.js';
import { userId } from '../support/fixtures.js';
import { freePort } from '../support/free-port.js';
import { httpCall, type HttpReply } from '../support/http.js';
import { pollStatus, spawnService, type ServiceProcess } from '../support/service-process.js';

const GRACE_MS = 5_000;
const CONVERSATIONS = 4;
const SENDERS_PER_CONVERSATION = 4;
const SENDS_EACH = 200;
/** Sends one sender keeps on the wire at once. */
const WINDOW = 8;
const PACE_MS = 25;
/** Sends held up behind a locked conversation row when SIGTERM comes. */
const STUCK_SENDS = 3;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface SendRecord {
  clientMsgId: string;
  sentAt: number;
  replies: { reply: Reply<SendData>; at: number }[];
}

interface Sender {
  userId: string;
  client: TestClient;
  conversationId: string;
  sends: SendRecord[];
  disconnect?: { reason: string; at: number };
}

/** Polls `check` until it holds; fails naming `what` after `timeoutMs`. */
async function waitFor(check: () => boolean, what: () => string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms: ${what()}`);
    await sleep(10);
  }
}

/** One send with an ack, every reply recorded (a second reply would be recorded too). */
function sendOnce(sender: Sender, clientMsgId: string, onReply: () => void = () => undefined): SendRecord {
  const record: SendRecord = { clientMsgId, sentAt: Date.now(), replies: [] };
  sender.sends.push(record);
  sender.client.socket.emit(
    'send',
    { conversationId: sender.conversationId, clientMsgId, body: `shutdown test ${clientMsgId}` },
    (reply) => {
      record.replies.push({ reply, at: Date.now() });
      onReply();
    },
  );
  return record;
}

/**
 * Sends SENDS_EACH messages, one every PACE_MS with at most WINDOW unanswered, until done
 * or disconnected: paced so that the stream still runs when the drain ends.
 */
function stream(sender: Sender): void {
  let next = 0;
  let open = 0;
  const timer = setInterval(() => {
    if (next >= SENDS_EACH || !sender.client.socket.connected) {
      clearInterval(timer);
      return;
    }
    if (open >= WINDOW) return;
    open++;
    sendOnce(sender, `${sender.userId}-${next++}`, () => open--);
  }, PACE_MS);
}

/** A REST call that got no HTTP reply at all (connection refused or cut). */
const failedCall = (error: unknown): HttpReply => ({ status: 0, body: String(error), headers: new Headers() });

const replyCode = (record: SendRecord): string | undefined => {
  const first = record.replies[0]?.reply;
  if (!first) return undefined;
  return first.ok ? 'ok' : first.error.code;
};

describe('SIGTERM under load', () => {
  let env: Record<string, string>;
  let dropDatabase: () => Promise<void>;
  let service: ServiceProcess | undefined;
  let locker: pg.Client | undefined;
  const senders: Sender[] = [];

  beforeAll(async () => {
    ({ env, dropDatabase } = await testEnvironment({ LOG_LEVEL: 'warn', SHUTDOWN_GRACE_MS: String(GRACE_MS) }));
  });

  afterAll(async () => {
    for (const sender of senders) sender.client.close();
    await locker?.end().catch(() => undefined);
    service?.child.kill('SIGKILL');
    await service?.exited(10_000).catch(() => undefined);
    await dropDatabase();
  });

  it('answers every request in flight ok (stored) or unavailable, refuses new work, disconnects every client and exits 0 within the grace', async () => {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const started = spawnService({ ...env, NODE_ENV: 'production', PORT: String(port) });
    service = started;
    const ready = await pollStatus(`${url}/health/ready`, (s) => s === 200, 30_000);
    expect(ready, `service ready:\n${started.output()}`).toBe(200);

    // Senders in a few shared conversations, plus one conversation whose row the test locks:
    // its sends are stuck in PostgreSQL when SIGTERM comes, and the grace must bound them.
    const conversationOf = async (members: string[]): Promise<string> => {
      const created = await httpCall(url, 'POST', '/v1/conversations', await mintToken(members[0]), {
        kind: 'group',
        memberIds: members.slice(1),
      });
      expect(created.status, JSON.stringify(created.body)).toBe(201);
      return created.body.data.id as string;
    };
    const join = async (user: string, conversationId: string): Promise<Sender> => {
      const sender: Sender = {
        userId: user,
        client: await connect(url, user, { deviceId: 'phone' }),
        conversationId,
        sends: [],
      };
      sender.client.socket.on('disconnect', (reason) => (sender.disconnect ??= { reason, at: Date.now() }));
      senders.push(sender);
      return sender;
    };
    const streaming: Sender[] = [];
    for (let c = 0; c < CONVERSATIONS; c++) {
      const members = Array.from({ length: SENDERS_PER_CONVERSATION }, (_, i) => userId(`sender-${c}-${i}`));
      const conversationId = await conversationOf(members);
      for (const member of members) streaming.push(await join(member, conversationId));
    }
    const stuckUser = userId('stuck');
    const stuckConversation = await conversationOf([stuckUser, userId('stuck-peer')]);
    const stuck = await join(stuckUser, stuckConversation);

    for (const sender of streaming) stream(sender);
    const okCount = () => streaming.reduce((n, s) => n + s.sends.filter((r) => replyCode(r) === 'ok').length, 0);
    await waitFor(
      () => okCount() >= 200,
      () => `200 sends stored before SIGTERM, got ${okCount()}`,
    );

    locker = new pg.Client({ connectionString: env.DATABASE_URL });
    await locker.connect();
    await locker.query('BEGIN');
    await locker.query('SELECT id FROM conversations WHERE id = $1 FOR UPDATE', [stuckConversation]);
    const stuckSends = Array.from({ length: STUCK_SENDS }, (_, i) => sendOnce(stuck, `${stuckUser}-stuck-${i}`));
    const stuckRest: Promise<HttpReply> = httpCall(
      url,
      'POST',
      `/v1/conversations/${stuckConversation}/messages`,
      await mintToken(stuckUser),
      { clientMsgId: `${stuckUser}-rest`, body: 'stuck over REST' },
    ).catch(failedCall);
    await sleep(300);
    expect(
      stuckSends.every((r) => r.replies.length === 0),
      'sends into the locked conversation wait',
    ).toBe(true);

    const sigtermAt = Date.now();
    started.child.kill('SIGTERM');
    const exit = started.exited(GRACE_MS + 10_000).then((code) => ({ code, at: Date.now() }));

    // During the drain: readiness fails at once, liveness holds, nothing new is taken.
    const readiness = await pollStatus(`${url}/health/ready`, (s) => s !== 200, 2_000);
    const liveness = await pollStatus(`${url}/health/live`, () => true, 2_000);
    const handshake = await connectRefused(url, { token: await mintToken(userId('late')), deviceId: 'late' }).catch(
      (error: unknown) => ({ message: `connected or hung: ${String(error)}`, data: undefined }),
    );
    const restDuringDrain = await httpCall(
      url,
      'POST',
      `/v1/conversations/${streaming[0].conversationId}/messages`,
      await mintToken(streaming[0].userId),
      { clientMsgId: `${streaming[0].userId}-rest`, body: 'too late' },
    ).catch(failedCall);
    const lateOnLiveSocket = sendOnce(streaming[0], `${streaming[0].userId}-late`);
    const checkedWhileDrainingAt = Date.now();

    // The stuck sends are answered when the grace (less a margin) runs out; then the lock goes.
    await waitFor(
      () => stuckSends.every((r) => r.replies.length > 0) || stuck.disconnect !== undefined,
      () => `the stuck sends answered: ${JSON.stringify(stuckSends.map((r) => r.replies))}`,
      GRACE_MS + 2_000,
    ).catch(() => undefined);
    const stuckRestReply = await Promise.race([stuckRest, sleep(2_000).then(() => undefined)]);
    await locker.query('ROLLBACK');

    const exited = await exit;
    await waitFor(
      () => senders.every((s) => s.disconnect !== undefined),
      () => `every client disconnected: ${senders.filter((s) => !s.disconnect).length} still connected`,
      5_000,
    ).catch(() => undefined);

    const log = `service output:\n${started.output()}`;
    expect.soft(checkedWhileDrainingAt, 'the drain checks ran before the process exited').toBeLessThan(exited.at);
    expect.soft(readiness, `readiness during the drain; ${log}`).toBe(503);
    expect.soft(liveness, 'liveness during the drain').toBe(200);
    expect.soft(handshake.message, `a new handshake during the drain; ${log}`).toBe('unavailable');
    expect
      .soft(restDuringDrain.status, `a REST request during the drain: ${JSON.stringify(restDuringDrain.body)}`)
      .toBe(503);
    expect.soft(restDuringDrain.body?.error?.code).toBe('unavailable');
    expect.soft(replyCode(lateOnLiveSocket), 'a send on a live socket during the drain').toBe('unavailable');

    expect
      .soft(stuckSends.map(replyCode), `the stuck sends are answered unavailable within the grace; ${log}`)
      .toEqual(Array.from({ length: STUCK_SENDS }, () => 'unavailable'));
    expect
      .soft(
        stuckSends.map((r) => (r.replies[0]?.at ?? Infinity) - sigtermAt < GRACE_MS),
        'the stuck sends are answered before the grace ends',
      )
      .toEqual(stuckSends.map(() => true));
    expect.soft(stuckRestReply?.status, 'the stuck REST send is answered 503 within the grace').toBe(503);
    expect.soft(stuckRestReply?.body?.error?.code).toBe('unavailable');

    const disconnects = senders.map((s) => s.disconnect?.reason ?? 'still connected');
    expect
      .soft(new Set(disconnects), `every client saw the server's disconnect; ${log}`)
      .toEqual(new Set(['io server disconnect']));
    const records = senders.flatMap((sender) => sender.sends.map((record) => ({ sender, record })));
    const repliedTwice = records.filter(({ record }) => record.replies.length > 1);
    expect
      .soft(
        repliedTwice.map(({ record }) => record.clientMsgId),
        'replied more than once',
      )
      .toEqual([]);
    const otherCodes = records
      .map(({ record }) => `${record.clientMsgId}: ${replyCode(record)}`)
      .filter((line) => !/: (ok|unavailable|undefined)$/.test(line));
    expect.soft(otherCodes, 'replies other than ok and unavailable').toEqual([]);
    const afterDisconnect = records.filter(
      ({ sender, record }) => record.replies.length > 0 && record.replies[0].at > (sender.disconnect?.at ?? Infinity),
    );
    expect.soft(afterDisconnect.length, 'replies after the disconnect').toBe(0);
    const afterSigterm = streaming.flatMap((s) => s.sends).filter((r) => r.replies[0]?.at >= sigtermAt);
    expect
      .soft(
        afterSigterm.some((r) => replyCode(r) === 'unavailable'),
        'new sends refused during the drain',
      )
      .toBe(true);

    // Nothing answered ok is lost: every ok reply's message is in PostgreSQL, as replied.
    const oks = senders.flatMap((s) =>
      s.sends.flatMap((r) => {
        const reply = r.replies[0]?.reply;
        return reply?.ok ? [{ sender: s.userId, clientMsgId: r.clientMsgId, message: reply.data.message }] : [];
      }),
    );
    expect(oks.length).toBeGreaterThanOrEqual(200);
    const rows = await locker.query<{ id: string; client_msg_id: string; sender_id: string; seq: string }>(
      'SELECT id, client_msg_id, sender_id, seq FROM messages WHERE sender_id = ANY($1)',
      [senders.map((s) => s.userId)],
    );
    const stored = new Map(rows.rows.map((row) => [`${row.sender_id}\n${row.client_msg_id}`, row]));
    const lost = oks.filter((ok) => {
      const row = stored.get(`${ok.sender}\n${ok.clientMsgId}`);
      return !row || row.id !== ok.message.id || Number(row.seq) !== ok.message.seq;
    });
    expect
      .soft(
        lost.map((ok) => ok.clientMsgId),
        'answered ok but not stored',
      )
      .toEqual([]);

    expect.soft(exited.code, `exit code; ${log}`).toBe(0);
    expect.soft(exited.at - sigtermAt, 'exited within SHUTDOWN_GRACE_MS').toBeLessThan(GRACE_MS);
  }, 90_000);
});
