import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

import { ClientError } from './errors.js';
import { Outbox } from './outbox.js';
import type { Reply, SendData, SendPayload, WireMessage } from './protocol.js';
import { StorageWriter } from './storage-writer.js';
import { memoryStorage } from './storage/memory.js';
import type { ClientStorage, StoredSend } from './storage/storage.js';
import { deferred, flush } from './spec-support.js';

const SEND_TIMEOUT_MS = 1_000;

function storedMessage(payload: SendPayload, seq: number): WireMessage {
  return {
    id: `id-${payload.clientMsgId}`,
    conversationId: payload.conversationId,
    seq,
    senderId: 'me',
    senderDeviceId: 'dev',
    clientMsgId: payload.clientMsgId,
    contentType: payload.contentType ?? 'text/plain',
    ...(payload.body !== undefined ? { body: payload.body } : {}),
    createdAt: new Date().toISOString(),
  };
}

function stored(order: number, overrides: Partial<StoredSend> = {}): StoredSend {
  return {
    clientMsgId: `r${order}`,
    conversationId: 'c1',
    createdAt: new Date(1_700_000_000_000 + order).toISOString(),
    attempts: 0,
    order,
    body: `restored ${order}`,
    ...overrides,
  };
}

interface WireSend {
  payload: SendPayload;
  reply: (reply: Reply<SendData>) => void;
}

/** An outbox over a memory storage, a recorded wire, and a connection switch. */
function setup(options: { storage?: ClientStorage; connected?: boolean } = {}) {
  const storage = options.storage ?? memoryStorage();
  const errors: ClientError[] = [];
  const writer = new StorageWriter(storage, (error) => errors.push(ClientError.from(error, 'storage_error')));
  const wire: WireSend[] = [];
  const ownStored: WireMessage[] = [];
  let up = options.connected ?? true;
  let seq = 0;
  const outbox = new Outbox({
    writer,
    transmit: (payload, reply) => {
      if (!up) return false;
      wire.push({ payload: { ...payload }, reply });
      return true;
    },
    connected: () => up,
    sendTimeoutMs: SEND_TIMEOUT_MS,
    retryDelay: (failures) => 100 * 2 ** failures,
    onStored: (message) => ownStored.push(message),
    onError: (error) => errors.push(error),
  });
  const send = (clientMsgId: string, conversationId = 'c1') =>
    outbox.send({ clientMsgId, conversationId, body: `body of ${clientMsgId}` });
  return {
    storage,
    outbox,
    wire,
    errors,
    ownStored,
    send,
    setUp: (value: boolean) => (up = value),
    /** The clientMsgIds put on the wire so far, in order (optionally of one conversation). */
    sentIds: (conversationId?: string) =>
      wire
        .filter((w) => !conversationId || w.payload.conversationId === conversationId)
        .map((w) => w.payload.clientMsgId),
    ok: (index: number) => {
      const sent = wire[index];
      sent.reply({ ok: true, data: { message: storedMessage(sent.payload, ++seq), duplicate: false } });
    },
    fail: (index: number, code: SendErrorCode, details?: Record<string, unknown>) =>
      wire[index].reply({ ok: false, error: { code, message: `failed: ${code}`, ...(details ? { details } : {}) } }),
    outboxIds: async () => (await storage.load()).outbox.map((e) => e.clientMsgId),
  };
}
type SendErrorCode = Extract<Reply<SendData>, { ok: false }>['error']['code'];

/** Tracks a promise's outcome without awaiting it (and without an unhandled rejection). */
function track<T>(promise: Promise<T>) {
  const outcome: { value?: T; error?: unknown; settled: boolean } = { settled: false };
  promise.then(
    (value) => Object.assign(outcome, { value, settled: true }),
    (error: unknown) => Object.assign(outcome, { error, settled: true }),
  );
  return outcome;
}

describe('Outbox', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('puts nothing on the wire before the storage write resolved', async () => {
    const memory = memoryStorage();
    let hold: ReturnType<typeof deferred<void>> | undefined;
    const storage: ClientStorage = {
      ...memory,
      putOutbox: async (entries) => {
        if (hold) await hold.promise;
        await memory.putOutbox(entries);
      },
    };
    const { send, wire, outbox, ok, sentIds } = setup({ storage });
    void send('a');
    await flush();
    expect(sentIds()).toEqual(['a']);

    const write = (hold = deferred());
    void send('b');
    await flush();
    // Whatever else pumps the lane meanwhile (a reply, a reconnect) leaves 'b' alone.
    ok(0);
    outbox.pumpAll();
    await flush();
    await vi.advanceTimersByTimeAsync(5 * SEND_TIMEOUT_MS);
    expect(sentIds()).toEqual(['a']);
    expect((await memory.load()).outbox.map((e) => e.clientMsgId)).toEqual(['a']);

    hold = undefined;
    write.resolve();
    await flush();
    expect(wire.map((w) => w.payload)).toEqual([
      { conversationId: 'c1', clientMsgId: 'a', body: 'body of a' },
      { conversationId: 'c1', clientMsgId: 'b', body: 'body of b' },
    ]);
    expect((await memory.load()).outbox.map((e) => e.clientMsgId)).toEqual(['b']);
  });

  it('sends in call order per conversation, also across storage batches', async () => {
    const memory = memoryStorage();
    const writes: ReturnType<typeof deferred<void>>[] = [];
    const storage: ClientStorage = {
      ...memory,
      putOutbox: async (entries) => {
        const write = deferred();
        writes.push(write);
        await write.promise;
        await memory.putOutbox(entries);
      },
    };
    const { send, sentIds } = setup({ storage });

    void send('a');
    await flush(); // 'a' is in a batch of its own, held
    void send('b');
    void send('c');
    await flush();
    expect(writes).toHaveLength(1);
    writes[0].resolve();
    await flush();
    writes[1].resolve();
    await flush();

    expect(sentIds()).toEqual(['a', 'b', 'c']);
  });

  it('resolves with the stored message on success, and deletes the entry from the storage', async () => {
    const { send, ok, wire, outboxIds, outbox, ownStored } = setup();
    const result = track(send('a'));
    await flush();
    expect(await outboxIds()).toEqual(['a']);

    ok(0);
    await flush();

    expect(result.value).toMatchObject({ clientMsgId: 'a', conversationId: 'c1', seq: 1 });
    expect(ownStored.map((m) => m.clientMsgId)).toEqual(['a']);
    expect(await outboxIds()).toEqual([]);
    expect(outbox.depth).toBe(0);
    expect(wire).toHaveLength(1);
  });

  it('gives the same promise outcome to a second send with the same clientMsgId, sent once', async () => {
    const { send, ok, sentIds } = setup();
    const first = send('a');
    const second = send('a');
    await flush();
    ok(0);

    await expect(first).resolves.toMatchObject({ clientMsgId: 'a' });
    await expect(second).resolves.toMatchObject({ clientMsgId: 'a' });
    expect(sentIds()).toEqual(['a']);
  });

  it('on a timeout resends the timed-out entry and every later one of its conversation, in order, after the backoff', async () => {
    const { send, ok, sentIds, wire, outbox } = setup();
    void send('a');
    void send('b');
    void send('c');
    await flush();
    ok(0); // 'a' is stored; 'b' and 'c' get no reply
    await flush();

    await vi.advanceTimersByTimeAsync(SEND_TIMEOUT_MS - 1);
    expect(sentIds()).toEqual(['a', 'b', 'c']);
    await vi.advanceTimersByTimeAsync(1);
    // A timeout retries with the reconnect backoff (SDK.md), here retryDelay(0) = 100 ms.
    await vi.advanceTimersByTimeAsync(99);
    expect(sentIds()).toEqual(['a', 'b', 'c']);
    await vi.advanceTimersByTimeAsync(1);

    expect(sentIds()).toEqual(['a', 'b', 'c', 'b', 'c']);
    // Same clientMsgId, same content: the server deduplicates.
    expect(wire[3].payload).toEqual(wire[1].payload);
    expect(outbox.counters).toEqual({ sent: 3, resent: 2 });
  });

  it('resends the tail again after a timeout of the resent entry', async () => {
    const { send, sentIds } = setup();
    void send('a');
    void send('b');
    await flush();

    await vi.advanceTimersByTimeAsync(SEND_TIMEOUT_MS + 100); // timeout, then retryDelay(0)
    expect(sentIds()).toEqual(['a', 'b', 'a', 'b']);
    await vi.advanceTimersByTimeAsync(SEND_TIMEOUT_MS + 199); // timeout, then retryDelay(1) = 200 ms, less 1
    expect(sentIds()).toEqual(['a', 'b', 'a', 'b']);
    await vi.advanceTimersByTimeAsync(1);

    expect(sentIds()).toEqual(['a', 'b', 'a', 'b', 'a', 'b']);
  });

  it('keeps at most 256 sends of one conversation on the wire; a reply lets the next one go', async () => {
    const { send, ok, sentIds } = setup();
    for (let i = 0; i < 260; i++) void send(`m${i}`);
    void send('other', 'c2');
    await flush();

    expect(sentIds('c1')).toHaveLength(256);
    expect(sentIds('c2')).toEqual(['other']);

    ok(0);
    await flush();
    expect(sentIds('c1')).toHaveLength(257);
    expect(sentIds('c1').at(-1)).toBe('m256');
  });

  it('still resolves on a late reply to an older attempt, and ignores the newer one', async () => {
    const { send, ok, sentIds, outboxIds, outbox } = setup();
    const result = track(send('a'));
    await flush();
    await vi.advanceTimersByTimeAsync(SEND_TIMEOUT_MS + 100);
    expect(sentIds()).toEqual(['a', 'a']);

    ok(0); // the first attempt's reply arrives after all
    await flush();
    expect(result.value).toMatchObject({ clientMsgId: 'a', seq: 1 });
    expect(await outboxIds()).toEqual([]);

    ok(1);
    await vi.advanceTimersByTimeAsync(3 * SEND_TIMEOUT_MS);
    expect(result.value).toMatchObject({ seq: 1 });
    expect(sentIds()).toEqual(['a', 'a']);
    expect(outbox.depth).toBe(0);
  });

  it("pauses the conversation for retryDelay after 'unavailable', then resends from the failed entry in order", async () => {
    const { send, fail, ok, sentIds } = setup();
    const a = track(send('a'));
    void send('b');
    void send('c');
    await flush();
    ok(0);
    fail(1, 'unavailable'); // 'b' fails: 'b' and 'c' go again after retryDelay(0) = 100 ms
    await flush();

    await vi.advanceTimersByTimeAsync(99);
    expect(sentIds()).toEqual(['a', 'b', 'c']);
    await vi.advanceTimersByTimeAsync(1);
    expect(sentIds()).toEqual(['a', 'b', 'c', 'b', 'c']);
    expect(a.value).toMatchObject({ clientMsgId: 'a' });

    // A transient reply to the replaced attempt of 'c' changes nothing.
    fail(2, 'unavailable');
    await vi.advanceTimersByTimeAsync(150);
    expect(sentIds()).toEqual(['a', 'b', 'c', 'b', 'c']);

    // Failures in a row back off: retryDelay(1) = 200 ms.
    fail(3, 'internal');
    await flush();
    await vi.advanceTimersByTimeAsync(199);
    expect(sentIds()).toHaveLength(5);
    await vi.advanceTimersByTimeAsync(1);
    expect(sentIds()).toEqual(['a', 'b', 'c', 'b', 'c', 'b', 'c']);
  });

  it("waits details.retryAfterMs after 'rate_limited'", async () => {
    const { send, fail, sentIds } = setup();
    void send('a');
    await flush();
    fail(0, 'rate_limited', { retryAfterMs: 750 });
    await flush();

    await vi.advanceTimersByTimeAsync(749);
    expect(sentIds()).toEqual(['a']);
    await vi.advanceTimersByTimeAsync(1);
    expect(sentIds()).toEqual(['a', 'a']);
  });

  it.each(['bad_request', 'forbidden', 'not_found', 'payload_too_large'] as const)(
    "rejects on the permanent error '%s', deletes the entry, and goes on with the next one",
    async (code) => {
      const { send, fail, ok, sentIds, outboxIds, outbox } = setup();
      const a = track(send('a'));
      const b = track(send('b'));
      await flush();

      fail(0, code, { reason: 'test' });
      ok(1);
      await flush();

      expect(a.error).toBeInstanceOf(ClientError);
      expect(a.error).toMatchObject({ code, details: { reason: 'test' } });
      expect(b.value).toMatchObject({ clientMsgId: 'b' });
      expect(await outboxIds()).toEqual([]);
      expect(outbox.depth).toBe(0);
      await vi.advanceTimersByTimeAsync(5 * SEND_TIMEOUT_MS);
      expect(sentIds()).toEqual(['a', 'b']);
    },
  );

  it('rejects with storage_error and sends nothing when the outbox write fails', async () => {
    const memory = memoryStorage();
    const storage: ClientStorage = { ...memory, putOutbox: () => Promise.reject(new Error('disk full')) };
    const { send, wire, outbox } = setup({ storage });

    await expect(send('a')).rejects.toMatchObject({ code: 'storage_error', message: 'disk full' });
    expect(wire).toEqual([]);
    expect(outbox.depth).toBe(0);
  });

  it('resends everything in order on the next connection after disconnected()', async () => {
    const { send, sentIds, outbox, setUp, ok } = setup();
    void send('a');
    void send('b');
    void send('x', 'c2');
    await flush();
    expect(sentIds()).toEqual(['a', 'b', 'x']);

    setUp(false);
    outbox.disconnected();
    void send('c'); // while down: stored, not sent
    await flush();
    outbox.pumpAll();
    await vi.advanceTimersByTimeAsync(3 * SEND_TIMEOUT_MS); // no timeouts while nothing is on the wire
    expect(sentIds()).toEqual(['a', 'b', 'x']);

    setUp(true);
    outbox.pumpAll();

    expect(sentIds('c1')).toEqual(['a', 'b', 'a', 'b', 'c']);
    expect(sentIds('c2')).toEqual(['x', 'x']);
    expect(outbox.counters).toEqual({ sent: 4, resent: 3 });
    ok(3);
    await flush();
    expect(outbox.depth).toBe(3);
  });

  it('stores a send made while disconnected with attempts 0, then counts the attempt when it goes out', async () => {
    const { send, storage, outbox, setUp, sentIds } = setup({ connected: false });
    void send('a');
    await flush();
    expect((await storage.load()).outbox).toMatchObject([{ clientMsgId: 'a', attempts: 0, order: 1 }]);

    setUp(true);
    outbox.pumpAll();
    await flush();

    expect(sentIds()).toEqual(['a']);
    expect((await storage.load()).outbox).toMatchObject([{ clientMsgId: 'a', attempts: 1 }]);
    expect(outbox.counters).toEqual({ sent: 1, resent: 0 });
  });

  it('stores a send made while connected with attempts 1 before it goes out, and counts resends', async () => {
    const { send, storage, outbox } = setup();
    void send('a');
    await flush();
    expect((await storage.load()).outbox).toMatchObject([{ clientMsgId: 'a', attempts: 1 }]);

    await vi.advanceTimersByTimeAsync(SEND_TIMEOUT_MS + 100);
    await flush();

    expect((await storage.load()).outbox).toMatchObject([{ clientMsgId: 'a', attempts: 2 }]);
    expect(outbox.counters).toEqual({ sent: 1, resent: 1 });
  });

  it('numbers a new send after the restored entries, so a later restore keeps call order', async () => {
    const { outbox, send, storage } = setup({ connected: false });
    outbox.restore([stored(3), stored(7)]);
    void send('new');
    await flush();

    expect((await storage.load()).outbox).toMatchObject([{ clientMsgId: 'new', order: 8 }]);
    expect(outbox.depth).toBe(3);
  });

  it('restores stored entries and sends them in their `order` once connected', async () => {
    const { outbox, send, sentIds, setUp } = setup({ connected: false });
    outbox.restore([stored(3), stored(1, { attempts: 2 }), stored(2, { conversationId: 'c2' }), stored(7)]);
    // A second restore of the same entries is ignored.
    outbox.restore([stored(1)]);
    void send('new');
    await flush();

    setUp(true);
    outbox.pumpAll();

    expect(sentIds('c1')).toEqual(['r1', 'r3', 'r7', 'new']);
    expect(sentIds('c2')).toEqual(['r2']);
    // r1 had been on the wire twice before the restart: this is a resend.
    expect(outbox.counters).toEqual({ sent: 4, resent: 1 });
  });

  it('keeps conversations independent: a paused one does not hold back another', async () => {
    const { send, fail, sentIds } = setup();
    void send('a', 'c1');
    await flush();
    fail(0, 'unavailable'); // c1 waits retryDelay(0) = 100 ms
    await flush();

    void send('b', 'c1');
    void send('x', 'c2');
    await flush();

    expect(sentIds('c2')).toEqual(['x']);
    expect(sentIds('c1')).toEqual(['a']);

    await vi.advanceTimersByTimeAsync(100);
    expect(sentIds('c1')).toEqual(['a', 'a', 'b']);
    expect(sentIds('c2')).toEqual(['x']);
  });

  it("holds every conversation for retryAfterMs after 'rate_limited': the limit is the socket's", async () => {
    const { send, fail, sentIds } = setup();
    void send('a', 'c1');
    await flush();
    fail(0, 'rate_limited', { retryAfterMs: 5_000 });
    await flush();

    void send('x', 'c2');
    await flush();
    expect(sentIds('c2')).toEqual([]);

    await vi.advanceTimersByTimeAsync(4_999);
    expect(sentIds()).toEqual(['a']);
    await vi.advanceTimersByTimeAsync(1);
    expect(sentIds('c1')).toEqual(['a', 'a']);
    expect(sentIds('c2')).toEqual(['x']);
  });

  it("rejects pending sends with 'closed' on close() and keeps them in the storage", async () => {
    const { send, outbox, outboxIds, sentIds, setUp } = setup();
    const a = track(send('a'));
    await flush(); // 'a' is on the wire
    setUp(false);
    const b = track(send('b'));
    await flush();

    outbox.close();
    await flush();

    expect(a.error).toMatchObject({ code: 'closed' });
    expect(b.error).toMatchObject({ code: 'closed' });
    expect(await outboxIds()).toEqual(['a', 'b']);
    await expect(send('c')).rejects.toMatchObject({ code: 'closed' });

    setUp(true);
    outbox.pumpAll();
    await vi.advanceTimersByTimeAsync(5 * SEND_TIMEOUT_MS);
    expect(sentIds()).toEqual(['a']);
  });
});
