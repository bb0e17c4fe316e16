import type { ClientStorage, StoredDeviceKey, StoredSend } from './storage.js';

/**
 * A storage that lives as long as the process: the default. Pending sends and the
 * "already emitted" marks are lost on restart, so it suits tests and short-lived scripts.
 *
 * @example
 *   const client = new MessagingClient({ url, deviceId, token, storage: memoryStorage() });
 */
export function memoryStorage(): ClientStorage {
  const outbox = new Map<string, StoredSend>();
  const highWater = new Map<string, number>();
  let deviceKey: StoredDeviceKey | undefined;

  // Entries are copied in and out so that a caller mutating its objects (attempts++)
  // changes the store only through putOutbox, as with a durable storage.
  return {
    load() {
      const entries = [...outbox.values()].map(copy).sort((a, b) => a.order - b.order);
      return Promise.resolve({ outbox: entries, highWater: Object.fromEntries(highWater) });
    },
    putOutbox(entries) {
      for (const entry of entries) outbox.set(entry.clientMsgId, copy(entry));
      return Promise.resolve();
    },
    deleteOutbox(clientMsgIds) {
      for (const id of clientMsgIds) outbox.delete(id);
      return Promise.resolve();
    },
    setHighWater(marks) {
      for (const [conversationId, seq] of Object.entries(marks)) {
        highWater.set(conversationId, Math.max(seq, highWater.get(conversationId) ?? seq));
      }
      return Promise.resolve();
    },
    getDeviceKey() {
      return Promise.resolve(deviceKey && copyKey(deviceKey));
    },
    putDeviceKey(key) {
      deviceKey = copyKey(key);
      return Promise.resolve();
    },
  };
}

function copyKey(key: StoredDeviceKey): StoredDeviceKey {
  return key.peers ? { ...key, peers: { ...key.peers } } : { ...key };
}

function copy(entry: StoredSend): StoredSend {
  return entry.recipientDevices ? { ...entry, recipientDevices: [...entry.recipientDevices] } : { ...entry };
}
