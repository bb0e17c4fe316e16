/**
 * @messaging-service/client in browsers: everything but `fileStorage` (Node only).
 * See client/README.md and SDK.md.
 */
export { MessagingClient } from './client.js';
export type {
  ClientEvents,
  ClientMetrics,
  ClientState,
  KeyChange,
  Message,
  MessagingClientOptions,
  SendContent,
  SendOptions,
  StateChange,
  SyncedEvent,
  TokenSource,
} from './client.js';
export { ClientError } from './errors.js';
export type { ClientErrorCode } from './errors.js';
export { memoryStorage } from './storage/memory.js';
export { indexedDbStorage } from './storage/indexeddb.js';
export type { ClientStorage, OutboxEntry, StoredDeviceKey, StoredSend, StoredState } from './storage/storage.js';
export type * from './protocol.js';
