// An in-memory IndexedDB for Node; a real-browser run can come with the web demo.
import 'fake-indexeddb/auto';

import { describe, expect, it } from 'vitest';

import { indexedDbStorage } from './indexeddb.js';
import { storageConformance, storedDeviceKey, storedSend } from './storage-conformance.js';

let databases = 0;
const freshName = () => `client-storage-${++databases}`;

function request<T>(req: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error ?? new Error('request failed'));
  });
}

describe('indexedDbStorage', () => {
  storageConformance(
    () => {
      const name = freshName();
      return { storage: indexedDbStorage(name), reopen: () => indexedDbStorage(name) };
    },
    { durable: true },
  );

  it('keeps the outbox in an object store keyed by clientMsgId and indexed by order', async () => {
    const name = freshName();
    const storage = indexedDbStorage(name);
    await storage.putOutbox([storedSend(2), storedSend(1)]);
    await storage.setHighWater({ a: 4 });
    await storage.close!();

    const db = await request(indexedDB.open(name));
    const tx = db.transaction(['outbox', 'marks']);
    const outbox = tx.objectStore('outbox');
    expect(outbox.keyPath).toBe('clientMsgId');
    expect(await request(outbox.index('order').getAllKeys())).toEqual(['msg-1', 'msg-2']);
    expect(await request(tx.objectStore('marks').get('a'))).toEqual({ conversationId: 'a', seq: 4 });
    db.close();
  });

  it('upgrades a database of the version before the device key in place, keeping its outbox', async () => {
    const name = freshName();
    const old = await new Promise<IDBDatabase>((resolve, reject) => {
      const open = indexedDB.open(name, 1);
      open.onupgradeneeded = () => {
        open.result.createObjectStore('outbox', { keyPath: 'clientMsgId' }).createIndex('order', 'order');
        open.result.createObjectStore('marks', { keyPath: 'conversationId' });
      };
      open.onsuccess = () => resolve(open.result);
      open.onerror = () => reject(open.error ?? new Error('open failed'));
    });
    const tx = old.transaction(['outbox'], 'readwrite');
    tx.objectStore('outbox').put(storedSend(1));
    await new Promise((resolve) => (tx.oncomplete = resolve));
    old.close();

    const storage = indexedDbStorage(name);
    expect((await storage.load()).outbox).toEqual([storedSend(1)]);
    await storage.putDeviceKey!(storedDeviceKey(1));
    expect(await storage.getDeviceKey!()).toEqual(storedDeviceKey(1));
    await storage.close!();
  });

  it('lets another tab delete the database, then opens a new one on the next call', async () => {
    const name = freshName();
    const storage = indexedDbStorage(name);
    await storage.putOutbox([storedSend(1)]);

    // Without the adapter closing its connection on versionchange this never resolves.
    await request(indexedDB.deleteDatabase(name));

    expect(await storage.load()).toEqual({ outbox: [], highWater: {} });
    await storage.putOutbox([storedSend(2)]);
    expect((await storage.load()).outbox).toEqual([storedSend(2)]);
    await storage.close!();
  });

  it('rejects and writes nothing when an entry cannot be stored', async () => {
    const storage = indexedDbStorage(freshName());
    const unstorable = { ...storedSend(2), body: (() => 'a function') as unknown as string };

    await expect(storage.putOutbox([storedSend(1), unstorable])).rejects.toThrow();
    expect((await storage.load()).outbox).toEqual([]);
    await storage.close!();
  });
});
