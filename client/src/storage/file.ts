import { createHash } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, unlink } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import type { ClientStorage, StoredDeviceKey, StoredSend, StoredState } from './storage.js';

/** Files written or synced at once: bounds open descriptors on large batches. */
const PARALLEL_FILES = 16;

/**
 * A durable storage for Node in a directory of its own (created if missing). A pending
 * send is on disk, fsynced, before `putOutbox` resolves and so before it goes on the
 * wire; a crash at any moment (SIGKILL, power loss) leaves every file whole.
 *
 * Layout: `outbox/<sha256 of clientMsgId>.json`, one file per pending send,
 * `high-water.json`, the marks, and with `e2e: true` `device-key.json`, this device's key
 * pair (mode 0600). Every file is written to `<name>.tmp`, fsynced and
 * renamed over its name, then the directory is fsynced, so a reader sees the old file or
 * the new one, never a torn one. One process at a time per directory: two clients on the
 * same directory would overwrite each other's marks and resend each other's outbox.
 *
 * @example
 *   const client = new MessagingClient({ url, deviceId, token, storage: fileStorage('/var/lib/app/chat') });
 */
export function fileStorage(dir: string): ClientStorage {
  const root = resolve(dir);
  const outboxDir = join(root, 'outbox');
  const marksFile = join(root, 'high-water.json');
  const deviceKeyFile = join(root, 'device-key.json');
  let marks: Promise<Map<string, number>> | undefined;

  // Creates the directories and reads the marks once; this process owns them afterwards.
  const ready = (): Promise<Map<string, number>> => {
    marks ??= prepare(outboxDir, marksFile).catch((error: unknown) => {
      marks = undefined;
      throw error;
    });
    return marks;
  };

  return {
    async load(): Promise<StoredState> {
      const highWater = await ready();
      return { outbox: await readOutbox(outboxDir), highWater: Object.fromEntries(highWater) };
    },

    async putOutbox(entries) {
      if (entries.length === 0) return;
      await ready();
      // Last one wins within a batch, as it would across calls.
      const files = new Map(entries.map((entry) => [entryPath(outboxDir, entry.clientMsgId), entry]));
      await inBatches([...files], ([path, entry]) => writeSynced(`${path}.tmp`, JSON.stringify(entry)));
      await inBatches([...files.keys()], (path) => rename(`${path}.tmp`, path));
      await syncDir(outboxDir);
    },

    // No directory fsync: an unlink lost in a crash brings the entry back, and resending
    // it is harmless because the service dedupes sends by clientMsgId.
    async deleteOutbox(clientMsgIds) {
      await ready();
      await inBatches(clientMsgIds, (id) => removeIfPresent(entryPath(outboxDir, id)));
    },

    async setHighWater(updates) {
      const highWater = await ready();
      const raised = Object.entries(updates).filter(([id, seq]) => seq > (highWater.get(id) ?? -Infinity));
      if (raised.length === 0) return;
      const next = new Map([...highWater, ...raised]);
      await writeSynced(`${marksFile}.tmp`, JSON.stringify(Object.fromEntries(next)));
      await rename(`${marksFile}.tmp`, marksFile);
      await syncDir(root);
      // Only once durable, so a failed write leaves memory agreeing with the disk.
      for (const [id, seq] of raised) highWater.set(id, seq);
    },

    async getDeviceKey() {
      await ready();
      const stored = await readJson(deviceKeyFile);
      return isDeviceKey(stored) ? stored : undefined;
    },

    async putDeviceKey(key) {
      await ready();
      await writeSynced(`${deviceKeyFile}.tmp`, JSON.stringify(key), 0o600);
      await rename(`${deviceKeyFile}.tmp`, deviceKeyFile);
      await syncDir(root);
    },
  };
}

async function prepare(outboxDir: string, marksFile: string): Promise<Map<string, number>> {
  const firstCreated = await mkdir(outboxDir, { recursive: true });
  if (firstCreated !== undefined) {
    // Each new directory's entry lives in its parent: sync from the outbox up to the
    // parent of the first one created, or a crash could lose the whole store.
    for (let path = outboxDir; path !== dirname(firstCreated); path = dirname(path)) await syncDir(dirname(path));
  }
  await removeIfPresent(`${marksFile}.tmp`);
  const marks = new Map<string, number>();
  const stored = await readJson(marksFile);
  if (isRecord(stored)) {
    for (const [id, seq] of Object.entries(stored)) if (typeof seq === 'number') marks.set(id, seq);
  }
  return marks;
}

/** The outbox oldest first; leftovers of an interrupted write and unreadable files are removed. */
async function readOutbox(outboxDir: string): Promise<StoredSend[]> {
  const entries: StoredSend[] = [];
  await inBatches(await readdir(outboxDir), async (name) => {
    const path = join(outboxDir, name);
    if (name.endsWith('.tmp')) return removeIfPresent(path);
    if (!name.endsWith('.json')) return;
    const entry = await readJson(path);
    if (isStoredSend(entry)) entries.push(entry);
    else await removeIfPresent(path);
  });
  return entries.sort((a, b) => a.order - b.order);
}

// Hashed so that any clientMsgId (slashes, dots, 500 characters) makes a valid file name.
function entryPath(outboxDir: string, clientMsgId: string): string {
  return join(outboxDir, `${createHash('sha256').update(clientMsgId).digest('hex')}.json`);
}

async function writeSynced(path: string, data: string, mode?: number): Promise<void> {
  const file = await open(path, 'w', mode);
  try {
    await file.writeFile(data);
    await file.sync();
  } finally {
    await file.close();
  }
}

/** Makes the creations, renames and removals in a directory durable. */
async function syncDir(path: string): Promise<void> {
  // Windows cannot open a directory for fsync; NTFS journals the rename itself.
  if (process.platform === 'win32') return;
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** The parsed file, or undefined when it is missing or not JSON. */
async function readJson(path: string): Promise<unknown> {
  try {
    return JSON.parse(await readFile(path, 'utf8'));
  } catch (error) {
    if (error instanceof SyntaxError || isMissing(error)) return undefined;
    throw error;
  }
}

async function removeIfPresent(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (error) {
    if (!isMissing(error)) throw error;
  }
}

async function inBatches<T>(items: T[], work: (item: T) => Promise<unknown>): Promise<void> {
  for (let start = 0; start < items.length; start += PARALLEL_FILES) {
    await Promise.all(items.slice(start, start + PARALLEL_FILES).map(work));
  }
}

function isMissing(error: unknown): boolean {
  return (error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT';
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isStoredSend(value: unknown): value is StoredSend {
  if (!isRecord(value)) return false;
  const optionalString = (key: string) => value[key] === undefined || typeof value[key] === 'string';
  return (
    typeof value.clientMsgId === 'string' &&
    typeof value.conversationId === 'string' &&
    typeof value.createdAt === 'string' &&
    typeof value.attempts === 'number' &&
    typeof value.order === 'number' &&
    optionalString('body') &&
    optionalString('ciphertext') &&
    optionalString('contentType') &&
    (value.e2e === undefined || typeof value.e2e === 'boolean') &&
    (value.recipientDevices === undefined ||
      (Array.isArray(value.recipientDevices) && value.recipientDevices.every((id) => typeof id === 'string')))
  );
}

function isDeviceKey(value: unknown): value is StoredDeviceKey {
  return (
    isRecord(value) &&
    typeof value.publicKey === 'string' &&
    typeof value.secretKey === 'string' &&
    typeof value.createdAt === 'string' &&
    (value.peers === undefined ||
      (isRecord(value.peers) && Object.values(value.peers).every((fingerprint) => typeof fingerprint === 'string')))
  );
}
