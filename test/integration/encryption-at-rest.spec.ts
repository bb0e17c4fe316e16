import { execFile } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';

import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { CryptoError, CryptoErrorReason } from '../../src/crypto/crypto.errors.js';
import { CryptoService } from '../../src/crypto/crypto.service.js';
import { KeyRotationService } from '../../src/crypto/key-rotation.service.js';
import { MessagesService } from '../../src/messages/messages.service.js';
import type { PageData, Reply, SendData, WireMessage } from '@messaging-service/client/protocol';
import { startTestApp, TEST_ENCRYPTION_KEYS, type TestApp } from '../support/app.js';
import { connect, dataOf, type TestClient } from '../support/clients.js';
import { createConversation, userId } from '../support/fixtures.js';

// Encryption at rest, end to end: messages go in over a real socket, PostgreSQL is read
// and tampered with directly, and what comes back out is checked over the same socket.

const run = promisify(execFile);
const PG_DUMP =
  ['/usr/lib/postgresql/15/bin/pg_dump', '/usr/bin/pg_dump'].find((path) => existsSync(path)) ?? 'pg_dump';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
/** Size of the XChaCha20-Poly1305 tag each sealed body carries. */
const TAG_BYTES = 16;
/** The failures below are deliberate; their error logs would only bury the test output. */
const QUIET = { LOG_LEVEL: 'fatal' };

interface MessageRow {
  id: string;
  seq: string;
  ciphertext: Buffer;
  nonce: Buffer;
  key_version: number;
}

interface ConversationRow {
  id: string;
  wrapped_key: Buffer;
  key_version: number;
}

/** A pg client on the app's database, with every query bounded. */
async function openDatabase(databaseUrl: string): Promise<pg.Client> {
  const db = new pg.Client({ connectionString: databaseUrl, connectionTimeoutMillis: 10_000, query_timeout: 30_000 });
  db.on('error', () => {}); // surfaces as the failing query's error
  await db.connect();
  return db;
}

async function messageRow(db: pg.Client, id: string): Promise<MessageRow> {
  const { rows } = await db.query<MessageRow>(
    'SELECT id::text AS id, seq::text AS seq, ciphertext, nonce, key_version FROM messages WHERE id = $1',
    [id],
  );
  expect(rows).toHaveLength(1);
  return rows[0];
}

async function conversationRow(db: pg.Client, id: string): Promise<ConversationRow> {
  const { rows } = await db.query<ConversationRow>(
    'SELECT id::text AS id, wrapped_key, key_version FROM conversations WHERE id = $1',
    [id],
  );
  expect(rows).toHaveLength(1);
  return rows[0];
}

async function writeSealed(db: pg.Client, id: string, sealed: { ciphertext: Buffer; nonce: Buffer }): Promise<void> {
  await db.query('UPDATE messages SET ciphertext = $2, nonce = $3 WHERE id = $1', [
    id,
    sealed.ciphertext,
    sealed.nonce,
  ]);
}

async function writeWrappedKey(db: pg.Client, id: string, key: { wrapped_key: Buffer; key_version: number }) {
  await db.query('UPDATE conversations SET wrapped_key = $2, key_version = $3 WHERE id = $1', [
    id,
    key.wrapped_key,
    key.key_version,
  ]);
}

/** A copy of `bytes` with the byte at `index` flipped. */
function flipped(bytes: Buffer, index: number): Buffer {
  const copy = Buffer.from(bytes);
  copy[index] ^= 0x01;
  return copy;
}

/**
 * Every way `text` could show up in a dump: as is, as hex (bytea output), and as base64
 * at each of the three alignments it can take inside a longer base64 string.
 */
function encodingsOf(text: string): string[] {
  const bytes = Buffer.from(text, 'utf8');
  const base64 = [0, 1, 2].map((skip) => {
    const whole = bytes.subarray(skip, skip + Math.floor((bytes.length - skip) / 3) * 3);
    return whole.toString('base64');
  });
  return [text, bytes.toString('hex'), ...base64];
}

/** The failure a service call rejects with; fails the test unless it is a CryptoError. */
async function cryptoFailureOf(promise: Promise<unknown>): Promise<CryptoError> {
  const error = await promise.then(
    () => new Error('expected a CryptoError, the call succeeded'),
    (reason: unknown) => reason,
  );
  expect(error).toBeInstanceOf(CryptoError);
  return error as CryptoError;
}

/**
 * The contract's `internal` reply: a generic message and a request id, nothing else; in
 * particular none of `secrets` (key material, plaintext) anywhere in it.
 */
function expectCleanInternal(reply: Reply<unknown>, secrets: string[] = []): void {
  expect(reply).toEqual({
    ok: false,
    error: { code: 'internal', message: 'internal error', details: { requestId: expect.stringMatching(UUID) } },
  });
  const text = JSON.stringify(reply);
  for (const secret of secrets) expect(text).not.toContain(secret);
}

describe('encryption at rest', () => {
  let service: TestApp;
  let db: pg.Client;
  const open: TestClient[] = [];
  const client = async (app: TestApp, user: string, deviceId = 'phone') => {
    const c = await connect(app.url, user, { deviceId });
    open.push(c);
    return c;
  };
  const send = async (c: TestClient, conversationId: string, body: string) =>
    dataOf(await c.request<SendData>('send', { conversationId, clientMsgId: randomUUID(), body })).message;
  const history = (c: TestClient, conversationId: string, range: { afterSeq?: number; beforeSeq?: number } = {}) =>
    c.request<PageData>('history', { conversationId, ...range });
  const bodiesOf = async (c: TestClient, conversationId: string) =>
    dataOf(await history(c, conversationId)).messages.map((m) => m.body);

  /** The app's key material for a conversation, as the strings that must never leak. */
  const secretsOf = async (conversationId: string): Promise<string[]> => {
    const row = await conversationRow(db, conversationId);
    const dataKey = Buffer.from(service.app.get(CryptoService).unwrapDataKey(row.id, row.wrapped_key, row.key_version));
    const masterKey = TEST_ENCRYPTION_KEYS.split(':')[1];
    return [
      masterKey,
      Buffer.from(masterKey, 'base64').toString('hex'),
      row.wrapped_key.toString('base64'),
      row.wrapped_key.toString('hex'),
      dataKey.toString('base64'),
      dataKey.toString('hex'),
    ];
  };

  /** A conversation of alice and bob holding `bodies`, with alice's socket. */
  const conversationWith = async (bodies: string[]) => {
    const alice = userId('alice');
    const bob = userId('bob');
    const conversationId = await createConversation(service, alice, [bob]);
    const c = await client(service, alice);
    const messages: WireMessage[] = [];
    for (const body of bodies) messages.push(await send(c, conversationId, body));
    return { alice, bob, conversationId, c, messages };
  };

  /** The socket still answers, and an untouched conversation still reads. */
  const expectStillServing = async (c: TestClient, otherConversationId: string, otherBodies: string[]) => {
    expect(c.socket.connected).toBe(true);
    expect(dataOf(await c.request<{ t: unknown }>('ping', { t: 7 })).t).toBe(7);
    expect(await bodiesOf(c, otherConversationId)).toEqual(otherBodies);
    expect((await fetch(`${service.url}/health/live`, { signal: AbortSignal.timeout(5_000) })).status).toBe(200);
  };

  beforeAll(async () => {
    service = await startTestApp(QUIET);
    db = await openDatabase(service.databaseUrl);
  });

  afterAll(async () => {
    for (const c of open) c.close();
    await db?.end();
    await service?.close();
  });

  it('keeps no plaintext body in a pg_dump, in any encoding, yet history returns every body intact', async () => {
    const bodies = [
      ...Array.from({ length: 5 }, () => `PLAINTEXT-CANARY-${randomUUID()}`),
      `PLAINTEXT-CANARY-${randomUUID()} ünïcødé 🔐 ${'x'.repeat(200)}`,
    ];
    const { c, conversationId, messages } = await conversationWith(bodies);

    const { stdout: dump } = await run(PG_DUMP, ['--no-owner', '--dbname', service.databaseUrl], {
      timeout: 60_000,
      maxBuffer: 256 * 1024 * 1024,
    });
    // The dump does hold the data: the message rows are in it, sealed.
    expect(dump).toContain('COPY public.messages');
    for (const message of messages) expect(dump).toContain(message.id);
    const lowerDump = dump.toLowerCase();
    // ...as hex, which is how bytea would show plaintext too: the search below can see it.
    expect(lowerDump).toContain((await messageRow(db, messages[0].id)).ciphertext.toString('hex'));
    for (const body of bodies) {
      const [plain, hex, ...base64] = encodingsOf(body);
      expect(dump).not.toContain(plain);
      expect(dump).not.toContain(plain.slice('PLAINTEXT-CANARY-'.length, 'PLAINTEXT-CANARY-'.length + 36));
      expect(lowerDump).not.toContain(hex);
      for (const encoded of base64) expect(dump).not.toContain(encoded);
    }
    expect(dump).not.toContain('PLAINTEXT-CANARY');

    expect(await bodiesOf(c, conversationId)).toEqual(bodies);
  });

  it('answers a history read over a flipped ciphertext or nonce byte with a clean internal error, and keeps serving', async () => {
    const bodies = ['first', 'second', 'third'];
    const { c, alice, conversationId, messages } = await conversationWith(bodies);
    const otherConversationId = await createConversation(service, alice, []);
    await send(c, otherConversationId, 'elsewhere');
    const secrets = [...(await secretsOf(conversationId)), ...bodies];
    const target = await messageRow(db, messages[1].id);

    for (const [field, index] of [
      ['ciphertext', 0],
      ['ciphertext', target.ciphertext.length - 1], // the tag
      ['nonce', 0],
      ['nonce', target.nonce.length - 1],
    ] as const) {
      await writeSealed(db, target.id, { ...target, [field]: flipped(target[field], index) });

      expectCleanInternal(await history(c, conversationId), secrets);
      const failure = await cryptoFailureOf(service.app.get(MessagesService).history(alice, { conversationId }));
      expect(failure.reason).toBe(CryptoErrorReason.OpenFailed);
      // The damage is local to that row: pages around it still read.
      expect(dataOf(await history(c, conversationId, { afterSeq: 2 })).messages.map((m) => m.body)).toEqual(['third']);
      expect(dataOf(await history(c, conversationId, { beforeSeq: 2 })).messages.map((m) => m.body)).toEqual(['first']);
      await expectStillServing(c, otherConversationId, ['elsewhere']);

      await writeSealed(db, target.id, target);
      expect(await bodiesOf(c, conversationId)).toEqual(bodies);
    }
  });

  it('fails a send into a conversation with a tampered wrapped key cleanly, using no seq', async () => {
    const { c, bob, conversationId } = await conversationWith(['before']);
    const bobPhone = await client(service, bob);
    const original = await conversationRow(db, conversationId);
    const secrets = [...(await secretsOf(conversationId)), 'lost'];

    await writeWrappedKey(db, conversationId, { ...original, wrapped_key: flipped(original.wrapped_key, 30) });
    expectCleanInternal(await c.request('send', { conversationId, clientMsgId: randomUUID(), body: 'lost' }), secrets);
    expectCleanInternal(await history(c, conversationId), secrets);
    expect(
      (await db.query('SELECT last_seq::int AS n FROM conversations WHERE id = $1', [conversationId])).rows,
    ).toEqual([{ n: 1 }]);

    await writeWrappedKey(db, conversationId, original);
    const after = await send(c, conversationId, 'after');
    expect(after.seq).toBe(2);
    // Live delivery in seq order is not held up by the failed send.
    const delivered = await bobPhone.waitForMessages(1);
    expect(delivered.map((m) => [m.seq, m.body])).toEqual([[2, 'after']]);
    expect(await bodiesOf(c, conversationId)).toEqual(['before', 'after']);
  });

  it('will not open two rows whose ciphertext and nonce were swapped, in one conversation or across two', async () => {
    const one = await conversationWith(['one-a', 'one-b']);
    const twoId = await createConversation(service, one.alice, []);
    await send(one.c, twoId, 'two-a');
    const [a, b] = await Promise.all(one.messages.map((m) => messageRow(db, m.id)));
    const [other] = await Promise.all(dataOf(await history(one.c, twoId)).messages.map((m) => messageRow(db, m.id)));
    const messages = service.app.get(MessagesService);

    // Same conversation: seq 1 and seq 2 trade places.
    await writeSealed(db, a.id, b);
    await writeSealed(db, b.id, a);
    for (const range of [{ beforeSeq: 2 }, { afterSeq: 1 }]) {
      expectCleanInternal(await history(one.c, one.conversationId, range));
      const failure = await cryptoFailureOf(
        messages.history(one.alice, { conversationId: one.conversationId, ...range }),
      );
      expect(failure.reason).toBe(CryptoErrorReason.OpenFailed);
    }
    await writeSealed(db, a.id, a);
    await writeSealed(db, b.id, b);
    expect(await bodiesOf(one.c, one.conversationId)).toEqual(['one-a', 'one-b']);

    // Across conversations: one's seq 1 and two's seq 1 trade places.
    await writeSealed(db, a.id, other);
    await writeSealed(db, other.id, a);
    expectCleanInternal(await history(one.c, one.conversationId, { beforeSeq: 2 }));
    expectCleanInternal(await history(one.c, twoId));
    for (const conversationId of [one.conversationId, twoId]) {
      const failure = await cryptoFailureOf(messages.history(one.alice, { conversationId, beforeSeq: 2 }));
      expect(failure.reason).toBe(CryptoErrorReason.OpenFailed);
    }
    await writeSealed(db, a.id, a);
    await writeSealed(db, other.id, other);
    expect(await bodiesOf(one.c, one.conversationId)).toEqual(['one-a', 'one-b']);
    expect(await bodiesOf(one.c, twoId)).toEqual(['two-a']);
  });

  it('fails cleanly on a message row labelled with another key_version', async () => {
    const { c, alice, conversationId, messages } = await conversationWith(['labelled']);
    const otherConversationId = await createConversation(service, alice, []);
    await send(c, otherConversationId, 'fine');
    const row = await messageRow(db, messages[0].id);
    expect(row.key_version).toBe(1);

    for (const keyVersion of [2, 0, -1]) {
      await db.query('UPDATE messages SET key_version = $2 WHERE id = $1', [row.id, keyVersion]);
      expectCleanInternal(await history(c, conversationId), await secretsOf(conversationId));
      const failure = await cryptoFailureOf(service.app.get(MessagesService).history(alice, { conversationId }));
      expect([CryptoErrorReason.OpenFailed, CryptoErrorReason.InvalidInput]).toContain(failure.reason);
      await expectStillServing(c, otherConversationId, ['fine']);
    }
    await db.query('UPDATE messages SET key_version = $2 WHERE id = $1', [row.id, row.key_version]);
    expect(await bodiesOf(c, conversationId)).toEqual(['labelled']);
  });

  it('will not unwrap a wrapped key copied from another conversation row, or labelled with an unknown version', async () => {
    const source = await conversationWith(['source']);
    const target = await conversationWith(['target']);
    const sourceKey = await conversationRow(db, source.conversationId);
    const targetKey = await conversationRow(db, target.conversationId);
    const messages = service.app.get(MessagesService);
    const otherConversationId = await createConversation(service, target.alice, []);
    await send(target.c, otherConversationId, 'fine');

    await writeWrappedKey(db, target.conversationId, sourceKey);
    expectCleanInternal(await history(target.c, target.conversationId), await secretsOf(source.conversationId));
    const copied = await cryptoFailureOf(messages.history(target.alice, { conversationId: target.conversationId }));
    expect(copied.reason).toBe(CryptoErrorReason.UnwrapFailed);
    await expectStillServing(target.c, otherConversationId, ['fine']);
    // The conversation the key was copied from is unaffected.
    expect(await bodiesOf(source.c, source.conversationId)).toEqual(['source']);

    await writeWrappedKey(db, target.conversationId, { ...targetKey, key_version: 99 });
    expectCleanInternal(await history(target.c, target.conversationId));
    const unknown = await cryptoFailureOf(messages.history(target.alice, { conversationId: target.conversationId }));
    expect(unknown.reason).toBe(CryptoErrorReason.UnknownKeyVersion);

    await writeWrappedKey(db, target.conversationId, targetKey);
    expect(await bodiesOf(target.c, target.conversationId)).toEqual(['target']);
  });

  it('seals e2e ciphertext again at rest, and returns the client bytes exactly', async () => {
    const alice = userId('alice');
    const bob = userId('bob');
    const conversationId = await createConversation(service, alice, [bob], { kind: 'direct', encryption: 'e2e' });
    const c = await client(service, alice);
    const bobPhone = await client(service, bob);
    const clientBytes = Buffer.concat([Buffer.from('E2E-CANARY-'), randomBytes(64), Buffer.alloc(16)]);
    const ciphertext = clientBytes.toString('base64');

    const sent = await Promise.all(
      ['e2e-1', 'e2e-2'].map(async (clientMsgId) => {
        const reply = await c.request<SendData>('send', {
          conversationId,
          clientMsgId,
          ciphertext,
          contentType: 'application/octet-stream',
        });
        return dataOf(reply).message;
      }),
    );
    for (const message of sent) expect(message.ciphertext).toBe(ciphertext);

    const rows = await Promise.all(sent.map((m) => messageRow(db, m.id)));
    for (const row of rows) {
      expect(row.ciphertext).toHaveLength(clientBytes.length + TAG_BYTES);
      expect(row.ciphertext.equals(clientBytes)).toBe(false);
      // Not even an 8-byte run of the client's bytes is stored as is.
      const runs = Array.from({ length: clientBytes.length - 7 }, (_, i) => clientBytes.subarray(i, i + 8));
      expect(runs.filter((run) => row.ciphertext.includes(run))).toEqual([]);
    }
    // The same client bytes twice are sealed under fresh nonces: nothing links the two rows.
    expect(rows[0].nonce.equals(rows[1].nonce)).toBe(false);
    expect(rows[0].ciphertext.equals(rows[1].ciphertext)).toBe(false);

    const page = dataOf(await history(c, conversationId));
    expect(page.messages.map((m) => [m.ciphertext, m.body])).toEqual([
      [ciphertext, undefined],
      [ciphertext, undefined],
    ]);
    expect(Buffer.from(page.messages[0].ciphertext!, 'base64').equals(clientBytes)).toBe(true);
    expect((await bobPhone.waitForMessages(2)).map((m) => m.ciphertext)).toEqual([ciphertext, ciphertext]);

    // The at-rest seal is authenticated for e2e rows too.
    await writeSealed(db, rows[0].id, { ...rows[0], ciphertext: flipped(rows[0].ciphertext, 5) });
    expectCleanInternal(await history(c, conversationId), [ciphertext]);
    await writeSealed(db, rows[0].id, rows[0]);
    expect(dataOf(await history(c, conversationId)).messages.map((m) => m.ciphertext)).toEqual([
      ciphertext,
      ciphertext,
    ]);
  });
});

describe('master key rotation across app instances on one database', () => {
  const masterKey1 = randomBytes(32).toString('base64');
  const masterKey2 = randomBytes(32).toString('base64');
  /** Booted in order; the first owns the database, the others are pointed at it. */
  const apps: TestApp[] = [];
  const open: TestClient[] = [];
  let db: pg.Client | undefined;

  const boot = async (overrides: Record<string, string>) => {
    const app = await startTestApp({ ...QUIET, ...overrides });
    apps.push(app);
    return app;
  };
  const client = async (app: TestApp, user: string, deviceId: string) => {
    const c = await connect(app.url, user, { deviceId });
    open.push(c);
    return c;
  };
  const contentsOf = async (c: TestClient, conversationId: string) =>
    dataOf(await c.request<PageData>('history', { conversationId })).messages.map((m) => m.body ?? m.ciphertext);
  const historyReply = (c: TestClient, conversationId: string) => c.request('history', { conversationId });

  afterAll(async () => {
    for (const c of open) c.close();
    await db?.end();
    // Each app drops only the database it made itself; the first app's (shared) goes last.
    for (const app of [...apps].reverse()) await app.close();
  });

  it('re-wraps every conversation key under version 2, leaves message rows byte for byte, and reads old and new messages', async () => {
    const v1 = await boot({ ENCRYPTION_KEYS: `1:${masterKey1}` });
    const shared = { DATABASE_URL: v1.databaseUrl };
    db = await openDatabase(v1.databaseUrl);
    // Every column of every message row, bytes as hex: a byte-for-byte snapshot.
    const allMessages = async () =>
      (await db!.query<Record<string, unknown>>('SELECT * FROM messages ORDER BY conversation_id, seq')).rows.map(
        (row) =>
          Object.entries(row).map(([column, value]) => [
            column,
            Buffer.isBuffer(value) ? value.toString('hex') : value,
          ]),
      );
    const allConversations = async () =>
      (
        await db!.query<ConversationRow>(
          'SELECT id::text AS id, wrapped_key, key_version FROM conversations ORDER BY id',
        )
      ).rows;

    const alice = userId('alice');
    const bob = userId('bob');
    const serverId = await createConversation(v1, alice, [bob]);
    const e2eId = await createConversation(v1, alice, [bob], { kind: 'direct', encryption: 'e2e' });
    const onV1 = await client(v1, alice, 'phone');
    const oldCiphertext = randomBytes(48).toString('base64');
    for (const body of ['old-1', 'old-2']) {
      dataOf(await onV1.request('send', { conversationId: serverId, clientMsgId: randomUUID(), body }));
    }
    dataOf(await onV1.request('send', { conversationId: e2eId, clientMsgId: randomUUID(), ciphertext: oldCiphertext }));
    const messagesBefore = await allMessages();
    const conversationsBefore = await allConversations();
    expect(messagesBefore).toHaveLength(3);
    expect(conversationsBefore.map((c) => c.key_version)).toEqual([1, 1]);

    // An instance that no longer lists version 1 cannot read a conversation still under it.
    const v2Only = await boot({ ...shared, ENCRYPTION_KEYS: `2:${masterKey2}` });
    const onV2Only = await client(v2Only, alice, 'tablet');
    expectCleanInternal(await historyReply(onV2Only, serverId), [masterKey1, masterKey2]);
    const early = await cryptoFailureOf(v2Only.app.get(MessagesService).history(alice, { conversationId: serverId }));
    expect(early.reason).toBe(CryptoErrorReason.UnknownKeyVersion);
    expect(dataOf(await onV2Only.request<{ t: unknown }>('ping', { t: 1 })).t).toBe(1);

    const both = await boot({
      ...shared,
      ENCRYPTION_KEYS: `1:${masterKey1},2:${masterKey2}`,
      ENCRYPTION_ACTIVE_KEY: '2',
    });
    expect(await both.app.get(KeyRotationService).rotateAll()).toEqual({ rewrapped: 2, alreadyCurrent: 0 });

    const conversationsAfter = await allConversations();
    expect(conversationsAfter.map((c) => [c.id, c.key_version])).toEqual(conversationsBefore.map((c) => [c.id, 2]));
    for (const [index, row] of conversationsAfter.entries()) {
      expect(row.wrapped_key.equals(conversationsBefore[index].wrapped_key)).toBe(false);
    }
    expect(await allMessages()).toEqual(messagesBefore);

    const onBoth = await client(both, alice, 'laptop');
    expect(await contentsOf(onBoth, serverId)).toEqual(['old-1', 'old-2']);
    expect(await contentsOf(onBoth, e2eId)).toEqual([oldCiphertext]);
    const newCiphertext = randomBytes(48).toString('base64');
    dataOf(await onBoth.request('send', { conversationId: serverId, clientMsgId: randomUUID(), body: 'new-1' }));
    dataOf(
      await onBoth.request('send', { conversationId: e2eId, clientMsgId: randomUUID(), ciphertext: newCiphertext }),
    );
    expect(await contentsOf(onBoth, serverId)).toEqual(['old-1', 'old-2', 'new-1']);
    expect(await contentsOf(onBoth, e2eId)).toEqual([oldCiphertext, newCiphertext]);

    // Version 1 can now be retired: the version-2-only instance reads old and new alike.
    expect(await contentsOf(onV2Only, serverId)).toEqual(['old-1', 'old-2', 'new-1']);
    expect(await contentsOf(onV2Only, e2eId)).toEqual([oldCiphertext, newCiphertext]);
    // ...while an instance never given version 2 fails cleanly rather than reading stale keys.
    expectCleanInternal(await historyReply(onV1, serverId), [masterKey1, masterKey2]);

    // Nothing is left to rotate.
    expect(await both.app.get(KeyRotationService).rotateAll()).toEqual({ rewrapped: 0, alreadyCurrent: 2 });
  });
});
