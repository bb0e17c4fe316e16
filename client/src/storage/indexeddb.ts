import type { ClientStorage, StoredDeviceKey, StoredSend, StoredState } from './storage.js';

const OUTBOX = 'outbox';
const MARKS = 'marks';
const DEVICE_KEY = 'deviceKey';
/** Version 2 added the `deviceKey` store (e2e); a version-1 database is upgraded in place. */
const VERSION = 2;

interface Mark {
  conversationId: string;
  seq: number;
}

/**
 * A durable storage for browsers: an IndexedDB database of that name with three object
 * stores, `outbox` (keyed by clientMsgId, indexed by order), `marks` (keyed by
 * conversationId) and `deviceKey` (this device's e2e key pair, one record). Each call is one transaction and resolves once it has committed.
 * Use one name per signed-in device; tabs of the same app should share one client.
 *
 * @example
 *   const client = new MessagingClient({ url, deviceId, token, storage: indexedDbStorage(`chat-${deviceId}`) });
 */
export function indexedDbStorage(name: string): ClientStorage {
  let connection: Promise<IDBDatabase> | undefined;
  const forget = () => {
    connection = undefined;
  };
  // Opened on first use and again after the browser or another tab closed it.
  const database = () => {
    connection ??= openDatabase(name, forget).catch((error: unknown) => {
      forget();
      throw error;
    });
    return connection;
  };

  return {
    async load(): Promise<StoredState> {
      const state: StoredState = { outbox: [], highWater: {} };
      await transact(await database(), [OUTBOX, MARKS], 'readonly', (tx) => {
        const outbox = tx.objectStore(OUTBOX).index('order').getAll();
        outbox.onsuccess = () => {
          state.outbox = outbox.result as StoredSend[];
        };
        const marks = tx.objectStore(MARKS).getAll();
        marks.onsuccess = () => {
          state.highWater = Object.fromEntries((marks.result as Mark[]).map((mark) => [mark.conversationId, mark.seq]));
        };
      });
      return state;
    },

    async putOutbox(entries) {
      if (entries.length === 0) return;
      await transact(await database(), [OUTBOX], 'readwrite', (tx) => {
        const store = tx.objectStore(OUTBOX);
        for (const entry of entries) store.put(entry);
      });
    },

    // Relaxed: a delete lost in a crash brings the entry back, and resending it is
    // harmless because the service dedupes sends by clientMsgId.
    async deleteOutbox(clientMsgIds) {
      if (clientMsgIds.length === 0) return;
      await transact(
        await database(),
        [OUTBOX],
        'readwrite',
        (tx) => {
          const store = tx.objectStore(OUTBOX);
          for (const id of clientMsgIds) store.delete(id);
        },
        'relaxed',
      );
    },

    async setHighWater(updates) {
      const marks = Object.entries(updates);
      if (marks.length === 0) return;
      await transact(await database(), [MARKS], 'readwrite', (tx) => {
        const store = tx.objectStore(MARKS);
        for (const [conversationId, seq] of marks) {
          const current = store.get(conversationId) as IDBRequest<Mark | undefined>;
          current.onsuccess = () => {
            if (seq > (current.result?.seq ?? -Infinity)) store.put({ conversationId, seq } satisfies Mark);
          };
        }
      });
    },

    async getDeviceKey() {
      let key: StoredDeviceKey | undefined;
      await transact(await database(), [DEVICE_KEY], 'readonly', (tx) => {
        const request = tx.objectStore(DEVICE_KEY).get('self') as IDBRequest<StoredDeviceKey | undefined>;
        request.onsuccess = () => {
          key = request.result;
        };
      });
      return key;
    },

    async putDeviceKey(key) {
      await transact(await database(), [DEVICE_KEY], 'readwrite', (tx) => {
        tx.objectStore(DEVICE_KEY).put({ ...key }, 'self');
      });
    },

    async close() {
      const pending = connection;
      forget();
      // A failed open was already reported to the call that needed it.
      await pending?.then(
        (db) => db.close(),
        () => undefined,
      );
    },
  };
}

function openDatabase(name: string, onClosed: () => void): Promise<IDBDatabase> {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(name, VERSION);
    request.onupgradeneeded = () => {
      const db = request.result;
      const has = (store: string) => db.objectStoreNames.contains(store);
      if (!has(OUTBOX)) db.createObjectStore(OUTBOX, { keyPath: 'clientMsgId' }).createIndex('order', 'order');
      if (!has(MARKS)) db.createObjectStore(MARKS, { keyPath: 'conversationId' });
      if (!has(DEVICE_KEY)) db.createObjectStore(DEVICE_KEY);
    };
    request.onsuccess = () => {
      const db = request.result;
      // Another tab upgrading or deleting the database waits until every connection
      // closes: step aside, and reopen on the next call.
      db.onversionchange = () => {
        db.close();
        onClosed();
      };
      db.onclose = onClosed;
      resolve(db);
    };
    request.onerror = () => reject(request.error ?? new Error(`cannot open IndexedDB database ${name}`));
  });
}

/**
 * Runs `work` in one transaction and resolves once it has committed. Writes default to
 * `strict` durability (flushed to disk before `complete`), which not every browser's
 * default gives.
 */
function transact(
  db: IDBDatabase,
  stores: string[],
  mode: IDBTransactionMode,
  work: (tx: IDBTransaction) => void,
  durability: IDBTransactionDurability = 'strict',
): Promise<void> {
  return new Promise((resolve, reject) => {
    const tx = db.transaction(stores, mode, { durability });
    tx.oncomplete = () => resolve();
    tx.onabort = () => reject(tx.error ?? new Error('IndexedDB transaction aborted'));
    try {
      work(tx);
    } catch (error) {
      // Otherwise the requests queued before the throw would still commit.
      tx.abort();
      throw error;
    }
  });
}
