import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

import { ClientError } from './errors.js';
import { MAX_RESEALS, Outbox } from './outbox.js';
import type { Reply, SendData, SendPayload, WireMessage } from './protocol.js';
import { deferred, flush } from './spec-support.js';
import { StorageWriter } from './storage-writer.js';
import { memoryStorage } from './storage/memory.js';
import type { StoredSend } from './storage/storage.js';

// The e2e side of the outbox (client/README.md "End-to-end encryption"): entries are
// sealed on the device just before they go out, and a devices_changed reply is sealed
// again and resent in order, without the app seeing it.
function setup() {
  const storage = memoryStorage();
  const errors: ClientError[] = [];
  const writer = new StorageWriter(storage, (error) => errors.push(ClientError.from(error, 'storage_error')));
  const wire: { payload: SendPayload; reply: (reply: Reply<SendData>) => void }[] = [];
  const refreshes: { entry: StoredSend; details: Record<string, unknown> | undefined }[] = [];
  let recipients = ['bob/phone'];
  let seals = 0;
  let sealFailure: ClientError | undefined;
  let seq = 0;
  /** Seals of these clientMsgIds wait for the promise (keys read at the start, as a real seal does). */
  const gates = new Map<string, Promise<void>>();
  const seal = vi.fn(async (entry: StoredSend) => {
    if (sealFailure) throw sealFailure;
    if (entry.conversationId === 'server-mode') return undefined;
    const sealedTo = [...recipients];
    seals++;
    const ciphertext = `sealed-${entry.clientMsgId}-${seals}`;
    await gates.get(entry.clientMsgId);
    return { ciphertext, recipientDevices: sealedTo };
  });
  const outbox = new Outbox({
    writer,
    transmit: (payload, reply) => {
      wire.push({ payload: { ...payload }, reply });
      return true;
    },
    connected: () => true,
    sendTimeoutMs: 1_000,
    retryDelay: (failures) => 100 * 2 ** failures,
    onStored: () => undefined,
    onError: (error) => errors.push(error),
    seal,
    devicesChanged: (entry, details) => {
      refreshes.push({ entry, details });
      recipients = ['bob/phone', 'bob/tablet'];
      return Promise.resolve();
    },
  });
  const reply = (index: number, result: Reply<SendData>) => wire[index].reply(result);
  return {
    storage,
    outbox,
    wire,
    errors,
    refreshes,
    seal,
    gates,
    failSealing: (error: ClientError | undefined) => (sealFailure = error),
    send: (clientMsgId: string, conversationId = 'c1') =>
      outbox.send({ clientMsgId, conversationId, body: `secret ${clientMsgId}`, e2e: true }),
    ok: (index: number) => {
      const { payload } = wire[index];
      const message: WireMessage = {
        id: `id-${payload.clientMsgId}`,
        conversationId: payload.conversationId,
        seq: ++seq,
        senderId: 'me',
        senderDeviceId: 'dev',
        clientMsgId: payload.clientMsgId,
        contentType: 'text/plain',
        ...(payload.ciphertext !== undefined ? { ciphertext: payload.ciphertext } : { body: payload.body }),
        createdAt: new Date().toISOString(),
      };
      reply(index, { ok: true, data: { message, duplicate: false } });
    },
    devicesChanged: (index: number) =>
      reply(index, {
        ok: false,
        error: { code: 'devices_changed', message: 'changed', details: { missing: ['bob/tablet'], extra: [] } },
      }),
  };
}

describe('Outbox with e2e entries', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('seals an entry before it goes out and keeps the plaintext only in the local outbox', async () => {
    const t = setup();
    const result = t.send('m1');
    await flush();

    expect(t.wire.map((w) => w.payload)).toEqual([
      { conversationId: 'c1', clientMsgId: 'm1', ciphertext: 'sealed-m1-1', recipientDevices: ['bob/phone'] },
    ]);
    expect((await t.storage.load()).outbox).toMatchObject([
      { clientMsgId: 'm1', body: 'secret m1', e2e: true, ciphertext: 'sealed-m1-1', recipientDevices: ['bob/phone'] },
    ]);
    t.ok(0);
    await expect(result).resolves.toMatchObject({ clientMsgId: 'm1', ciphertext: 'sealed-m1-1' });
  });

  it('after a restart, resends what was sealed as it was sent, and seals what was not sealed yet', async () => {
    const t = setup();
    const base = { conversationId: 'c1', createdAt: new Date(0).toISOString(), attempts: 1, e2e: true };
    t.outbox.restore([
      { ...base, clientMsgId: 'm1', order: 1, body: 'one', ciphertext: 'as-sent', recipientDevices: ['bob/phone'] },
      { ...base, clientMsgId: 'm2', order: 2, body: 'two', attempts: 0 },
    ]);
    t.outbox.pumpAll();
    await flush();

    expect(t.wire.map((w) => w.payload)).toEqual([
      { conversationId: 'c1', clientMsgId: 'm1', ciphertext: 'as-sent', recipientDevices: ['bob/phone'] },
      { conversationId: 'c1', clientMsgId: 'm2', ciphertext: 'sealed-m2-1', recipientDevices: ['bob/phone'] },
    ]);
    expect(t.seal).toHaveBeenCalledTimes(1);
  });

  it('sends the body as is when the conversation turns out not to be e2e', async () => {
    const t = setup();
    const result = t.send('m1', 'server-mode');
    await flush();

    expect(t.wire.map((w) => w.payload)).toEqual([
      { conversationId: 'server-mode', clientMsgId: 'm1', body: 'secret m1' },
    ]);
    t.ok(0);
    await expect(result).resolves.toMatchObject({ body: 'secret m1' });
  });

  it('on devices_changed refreshes, seals the entry and the later ones again, and resends them in order', async () => {
    const t = setup();
    const results = [t.send('m1'), t.send('m2'), t.send('m3')];
    await flush();
    expect(t.wire.map((w) => w.payload.clientMsgId)).toEqual(['m1', 'm2', 'm3']);

    t.devicesChanged(0);
    // The later ones were sealed to the same stale set: refused too, replies to attempts since replaced.
    t.devicesChanged(1);
    t.devicesChanged(2);
    await flush();

    expect(t.refreshes).toEqual([
      { entry: expect.objectContaining({ clientMsgId: 'm1' }), details: { missing: ['bob/tablet'], extra: [] } },
    ]);
    const resent = t.wire.slice(3).map((w) => w.payload);
    expect(resent).toEqual([
      {
        conversationId: 'c1',
        clientMsgId: 'm1',
        ciphertext: 'sealed-m1-4',
        recipientDevices: ['bob/phone', 'bob/tablet'],
      },
      {
        conversationId: 'c1',
        clientMsgId: 'm2',
        ciphertext: 'sealed-m2-5',
        recipientDevices: ['bob/phone', 'bob/tablet'],
      },
      {
        conversationId: 'c1',
        clientMsgId: 'm3',
        ciphertext: 'sealed-m3-6',
        recipientDevices: ['bob/phone', 'bob/tablet'],
      },
    ]);
    t.ok(3);
    t.ok(4);
    t.ok(5);
    const messages = await Promise.all(results);
    expect(messages.map((m) => [m.clientMsgId, m.seq])).toEqual([
      ['m1', 1],
      ['m2', 2],
      ['m3', 3],
    ]);
    expect(t.errors).toEqual([]);
    expect((await t.storage.load()).outbox).toEqual([]);
  });

  it('throws away a seal begun before devices_changed came back, and seals that entry again', async () => {
    const t = setup();
    const gate = deferred();
    t.gates.set('m2', gate.promise);
    const results = [t.send('m1'), t.send('m2')];
    await flush();
    // m1 is on the wire; m2 is being sealed from the keys as they were.
    expect(t.wire.map((w) => w.payload.clientMsgId)).toEqual(['m1']);

    t.devicesChanged(0);
    await flush();
    gate.resolve();
    t.gates.delete('m2');
    await flush();

    expect(t.wire.slice(1).map((w) => [w.payload.clientMsgId, w.payload.recipientDevices])).toEqual([
      ['m1', ['bob/phone', 'bob/tablet']],
      ['m2', ['bob/phone', 'bob/tablet']],
    ]);
    t.ok(1);
    t.ok(2);
    expect((await Promise.all(results)).map((m) => m.seq)).toEqual([1, 2]);
  });

  it(`rejects with devices_changed after ${MAX_RESEALS} reseals in a row, and leaves the outbox`, async () => {
    const t = setup();
    const result = t.send('m1');
    result.catch(() => undefined);
    await flush();
    for (let i = 0; i <= MAX_RESEALS; i++) {
      t.devicesChanged(i);
      await flush();
    }

    await expect(result).rejects.toMatchObject({ code: 'devices_changed' });
    expect(t.wire).toHaveLength(MAX_RESEALS + 1);
    expect((await t.storage.load()).outbox).toEqual([]);
  });

  it('rejects when sealing fails for good, and retries a transient sealing failure after the backoff', async () => {
    const t = setup();
    t.failSealing(new ClientError('payload_too_large', 'too many devices'));
    const tooLarge = t.send('big');
    tooLarge.catch(() => undefined);
    await flush();
    await expect(tooLarge).rejects.toMatchObject({ code: 'payload_too_large' });
    expect(t.wire).toEqual([]);

    t.failSealing(new ClientError('unavailable', 'keys not reachable'));
    const later = t.send('m2');
    await flush();
    expect(t.wire).toEqual([]);
    expect(t.errors.map((e) => e.code)).toEqual(['unavailable']);
    t.failSealing(undefined);
    await vi.advanceTimersByTimeAsync(100);
    expect(t.wire.map((w) => w.payload.clientMsgId)).toEqual(['m2']);
    t.ok(0);
    await expect(later).resolves.toMatchObject({ clientMsgId: 'm2' });
  });
});
