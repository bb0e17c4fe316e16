import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import type { ClientStorage, StoredDeviceKey, StoredSend } from './storage.js';

/** A fresh, empty storage and, for a durable one, a way to open its data again. */
export interface StorageUnderTest {
  storage: ClientStorage;
  /** Another adapter over the same data, as the next run of the app would open it. */
  reopen?: () => ClientStorage;
}

export interface ConformanceOptions {
  /** Also checks that the data outlives the adapter (`open` must give `reopen`). */
  durable?: boolean;
  /** Also checks the device key methods (option `e2e: true` needs them; the shipped storages have them). */
  deviceKey?: boolean;
}

/** A device key record as the SDK stores it. */
export function storedDeviceKey(n = 1): StoredDeviceKey {
  return {
    publicKey: btoa(String.fromCharCode(...Array.from({ length: 32 }, (_, i) => (i + n) & 0xff))),
    secretKey: btoa(String.fromCharCode(...Array.from({ length: 32 }, (_, i) => (i * 7 + n) & 0xff))),
    createdAt: new Date(1_700_000_000_000 + n).toISOString(),
  };
}

/** A pending send with every field set; `overrides` changes them (undefined: left out). */
export function storedSend(order: number, overrides: Partial<StoredSend> = {}): StoredSend {
  return {
    clientMsgId: `msg-${order}`,
    conversationId: 'conv-1',
    createdAt: new Date(1_700_000_000_000 + order).toISOString(),
    attempts: 0,
    order,
    body: `hello ${order}`,
    contentType: 'text/plain',
    ...overrides,
  };
}

/**
 * What every `ClientStorage` must do, shipped or written by an app: registers the tests
 * in the calling `describe`, each against a new storage from `open`.
 *
 * @example
 *   describe('memoryStorage', () => storageConformance(() => ({ storage: memoryStorage() })));
 */
export function storageConformance(
  open: () => StorageUnderTest | Promise<StorageUnderTest>,
  { durable = false, deviceKey = true }: ConformanceOptions = {},
): void {
  let subject: StorageUnderTest;
  let storage: ClientStorage;
  const opened: ClientStorage[] = [];

  beforeEach(async () => {
    subject = await open();
    storage = subject.storage;
    opened.push(storage);
  });

  afterEach(async () => {
    for (const each of opened.splice(0)) await each.close?.();
  });

  const reopen = (): ClientStorage => {
    if (!subject.reopen) throw new Error('a durable storage under test needs reopen()');
    const next = subject.reopen();
    opened.push(next);
    return next;
  };

  it('loads an empty outbox and no marks from a new store', async () => {
    expect(await storage.load()).toEqual({ outbox: [], highWater: {} });
  });

  it('keeps every field of an entry', async () => {
    const text = storedSend(1);
    const sealed = storedSend(2, { body: undefined, contentType: undefined, ciphertext: 'AAEC', attempts: 3 });
    const e2e = storedSend(3, { e2e: true, ciphertext: 'AQID', recipientDevices: ['bob/phone', 'alice/laptop'] });
    await storage.putOutbox([text, sealed, e2e]);

    expect((await storage.load()).outbox).toEqual([text, sealed, e2e]);
  });

  it('lists the outbox by order, whatever order the entries were put in', async () => {
    await storage.putOutbox([storedSend(30)]);
    await storage.putOutbox([storedSend(10)]);
    await storage.putOutbox([storedSend(50), storedSend(20)]);

    const { outbox } = await storage.load();
    expect(outbox.map((entry) => entry.order)).toEqual([10, 20, 30, 50]);
  });

  it('replaces an entry put again with the same clientMsgId', async () => {
    await storage.putOutbox([storedSend(1), storedSend(2)]);
    await storage.putOutbox([storedSend(1, { attempts: 2 })]);

    const { outbox } = await storage.load();
    expect(outbox.map((entry) => [entry.clientMsgId, entry.attempts])).toEqual([
      ['msg-1', 2],
      ['msg-2', 0],
    ]);
  });

  it('deletes entries and ignores ids it does not hold', async () => {
    await storage.putOutbox([storedSend(1), storedSend(2), storedSend(3)]);
    await storage.deleteOutbox(['msg-1', 'msg-3', 'never-stored']);
    await storage.deleteOutbox(['msg-1']);

    expect((await storage.load()).outbox).toEqual([storedSend(2)]);
  });

  it('accepts empty batches', async () => {
    await storage.putOutbox([]);
    await storage.deleteOutbox([]);
    await storage.setHighWater({});

    expect(await storage.load()).toEqual({ outbox: [], highWater: {} });
  });

  it('raises high-water marks per conversation and never lowers them', async () => {
    await storage.setHighWater({ a: 5, b: 2 });
    await storage.setHighWater({ a: 3, b: 7, c: 0 });
    await storage.setHighWater({ a: 4 });

    expect((await storage.load()).highWater).toEqual({ a: 5, b: 7, c: 0 });
  });

  it('is not changed by mutating what was put in or loaded out', async () => {
    const entry = storedSend(1);
    await storage.putOutbox([entry]);
    entry.attempts = 9;
    const loaded = await storage.load();
    loaded.outbox[0].attempts = 8;
    loaded.outbox.push(storedSend(2));
    loaded.highWater.a = 1;

    expect(await storage.load()).toEqual({ outbox: [storedSend(1)], highWater: {} });
  });

  it('stores ids of any shape', async () => {
    const ids = ['a/b', '../up', 'with space.tmp', 'ünï✓', 'x'.repeat(300), '__proto__'];
    await storage.putOutbox(ids.map((id, order) => storedSend(order, { clientMsgId: id, conversationId: id })));
    await storage.setHighWater(Object.fromEntries(ids.map((id, seq) => [id, seq])));

    const { outbox, highWater } = await storage.load();
    expect(outbox.map((entry) => entry.clientMsgId)).toEqual(ids);
    expect(Object.entries(highWater).sort(([, a], [, b]) => a - b)).toEqual(ids.map((id, seq) => [id, seq]));
    await storage.deleteOutbox(ids);
    expect((await storage.load()).outbox).toEqual([]);
  });

  it('holds a large batch in one call', async () => {
    const entries = Array.from({ length: 300 }, (_, i) => storedSend(300 - i));
    await storage.putOutbox(entries);
    await storage.deleteOutbox(entries.filter((entry) => entry.order % 2 === 0).map((entry) => entry.clientMsgId));

    const { outbox } = await storage.load();
    expect(outbox).toHaveLength(150);
    expect(outbox.map((entry) => entry.order)).toEqual(Array.from({ length: 150 }, (_, i) => 2 * i + 1));
  });

  if (deviceKey) {
    it('has no device key before one is put, then the last one put', async () => {
      expect(await storage.getDeviceKey!()).toBeUndefined();
      await storage.putDeviceKey!(storedDeviceKey(1));
      expect(await storage.getDeviceKey!()).toEqual(storedDeviceKey(1));
      const withPeers = { ...storedDeviceKey(2), peers: { 'bob/phone': 'ab12 cd34', 'ünï/✓': 'ef56' } };
      await storage.putDeviceKey!(withPeers);
      expect(await storage.getDeviceKey!()).toEqual(withPeers);
      withPeers.peers['bob/phone'] = 'changed outside';
      expect((await storage.getDeviceKey!())?.peers?.['bob/phone']).toBe('ab12 cd34');
      // The key lives beside the outbox and marks, not in them.
      expect(await storage.load()).toEqual({ outbox: [], highWater: {} });
    });
  }

  if (!durable) return;

  describe('when durable', () => {
    it('hands the outbox and the marks to the next adapter on the same data', async () => {
      await storage.putOutbox([storedSend(1), storedSend(2), storedSend(3)]);
      await storage.deleteOutbox(['msg-2']);
      await storage.setHighWater({ a: 5, b: 1 });
      await storage.close?.();

      expect(await reopen().load()).toEqual({ outbox: [storedSend(1), storedSend(3)], highWater: { a: 5, b: 1 } });
    });

    if (deviceKey) {
      it('hands the device key to the next adapter on the same data', async () => {
        await storage.putDeviceKey!(storedDeviceKey(3));
        await storage.close?.();

        expect(await reopen().getDeviceKey!()).toEqual(storedDeviceKey(3));
      });
    }

    it('does not lower a mark stored by an earlier adapter', async () => {
      await storage.setHighWater({ a: 5 });
      await storage.close?.();
      const next = reopen();
      await next.setHighWater({ a: 2, b: 3 });
      await next.close?.();

      expect((await reopen().load()).highWater).toEqual({ a: 5, b: 3 });
    });
  });
}
