/**
 * What the SDK keeps between runs: the outbox (sends not yet stored by the service) and,
 * per conversation, the highest seq it emitted (what makes "at most once" hold across
 * restarts). Apps may implement it over their own store (React Native: SQLite, MMKV…).
 *
 * The SDK calls these one at a time, never concurrently, in the order it needs them to
 * take effect; each promise resolves once the change is durable (for a durable store).
 *
 * @example
 *   const storage: ClientStorage = {
 *     async load() { return { outbox: await db.allPending(), highWater: await db.marks() }; },
 *     async putOutbox(entries) { await db.upsertPending(entries); },
 *     async deleteOutbox(ids) { await db.deletePending(ids); },
 *     async setHighWater(marks) { await db.upsertMarks(marks); },
 *   };
 */
export interface ClientStorage {
  /** Everything stored: the outbox oldest first (by `order`), and the high-water marks. */
  load(): Promise<StoredState>;
  /** Inserts or replaces entries by `clientMsgId`; durable when the promise resolves. */
  putOutbox(entries: StoredSend[]): Promise<void>;
  /** Removes entries; ids that are not there are ignored. */
  deleteOutbox(clientMsgIds: string[]): Promise<void>;
  /** Raises each conversation's mark to the given seq (a lower value never lowers it). */
  setHighWater(marks: Record<string, number>): Promise<void>;
  /**
   * End-to-end encryption (option `e2e: true`) only: this device's key pair, or undefined
   * before the first was made. An app storage without e2e may leave both out; the three
   * shipped storages implement them.
   */
  getDeviceKey?(): Promise<StoredDeviceKey | undefined>;
  /** Replaces the device key record; durable when the promise resolves (losing it loses every message sealed to it). */
  putDeviceKey?(key: StoredDeviceKey): Promise<void>;
  /** Releases what the storage holds open (file handles, database connections). */
  close?(): Promise<void>;
}

/** This device's X25519 key pair for e2e conversations, base64 (standard, padded). */
export interface StoredDeviceKey {
  publicKey: string;
  secretKey: string;
  /** When it was made, ISO-8601. */
  createdAt: string;
  /**
   * The peer device keys this device has seen, as fingerprints by `userId/deviceId`
   * (trust on first use): a key that differs later is reported as `'keyChange'`, also
   * across restarts.
   */
  peers?: Record<string, string>;
}

export interface StoredState {
  outbox: StoredSend[];
  highWater: Record<string, number>;
}

/** A pending send as `client.outbox()` lists it. */
export interface OutboxEntry {
  clientMsgId: string;
  conversationId: string;
  /** When `send` was called, ISO-8601. */
  createdAt: string;
  /** How many times it went on the wire. */
  attempts: number;
}

/** A pending send as the storage keeps it: enough to send it again after a restart. */
export interface StoredSend extends OutboxEntry {
  /** Orders the outbox across restarts: strictly increasing in the order `send` was called. */
  order: number;
  /** The plaintext; for an e2e send it stays on this device and the envelope goes out. */
  body?: string;
  ciphertext?: string;
  contentType?: string;
  /**
   * Sent by a client with `e2e: true`: the body is encrypted on the device when the
   * conversation is e2e, and sealed again (fresh message key) when the members' devices changed.
   */
  e2e?: boolean;
  /** With `e2e`: whom the current `ciphertext` was sealed to, as sent (`userId/deviceId`). */
  recipientDevices?: string[];
}
