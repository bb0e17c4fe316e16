import { ClientError } from '../errors.js';
import type { MembershipPayload, WireMessage } from '../protocol.js';
import type { StoredDeviceKey, StoredSend } from '../storage/storage.js';
import {
  envelopeSize,
  fingerprint,
  fromBase64,
  generateDeviceKeyPair,
  openEnvelope,
  sealEnvelope,
  sodiumReady,
  toBase64,
  type DeviceKeyPair,
  type EnvelopeContext,
  type RecipientKey,
} from './envelope.js';

/** A peer device's key is not the one this client saw before (keys are trusted on first use). */
export interface KeyChange {
  userId: string;
  deviceId: string;
  fingerprint: string;
  previousFingerprint: string;
}

/** A received message as the SDK hands it over with `e2e: true`. */
export type OpenedMessage = WireMessage & { e2e?: true; undecryptable?: true };

export interface EndToEndDeps {
  deviceId: string;
  /** The signed-in user (from the session); undefined before the first. */
  userId(): string | undefined;
  /** A REST call on the service with the client's token; resolves with the reply's `data`. */
  rest<T>(method: 'GET' | 'PUT', path: string, body?: unknown): Promise<T>;
  /** The storage's device key place, called one at a time with the SDK's other storage calls. */
  loadKey(): Promise<StoredDeviceKey | undefined>;
  saveKey(key: StoredDeviceKey): Promise<void>;
  maxMessageBytes(): number | undefined;
  onKeyChange(change: KeyChange): void;
  /**
   * How long a user's device keys are used before they are read again. The service's
   * recipient check compares `userId/deviceId` pairs, not keys, so a device that
   * re-publishes a new key under the same id (a reinstall) is noticed only by reading
   * again: this bounds how long messages go to its old key.
   */
  keyMaxAgeMs: number;
  /** Milliseconds, monotonic (tests pass their own). */
  now(): number;
  /** A failure nobody awaits (remembering the peers' fingerprints). */
  onError(error: ClientError): void;
}

interface ConversationInfo {
  encryption: 'server' | 'e2e';
  memberIds: string[];
}

/**
 * The device side of end-to-end encryption (SDK.md "End-to-end encryption"): this
 * device's key pair (made once, kept in the storage, published before `connect()`
 * resolves), the members' device keys (cached; refreshed on `membership` events and on
 * `devices_changed`), sealing a body for the current devices and opening what arrives.
 */
export class EndToEnd {
  private keyPair: DeviceKeyPair | undefined;
  /** What the storage holds: the key pair and the peers' fingerprints seen. */
  private record: StoredDeviceKey | undefined;
  private loading: Promise<DeviceKeyPair> | undefined;
  private published = false;
  private readonly conversations = new Map<string, Promise<ConversationInfo>>();
  private readonly userKeys = new Map<string, Promise<Map<string, Uint8Array>>>();
  /** When each user's keys were asked for. */
  private readonly keysAskedAt = new Map<string, number>();
  /** The last member list read per conversation (what a membership event invalidates). */
  private readonly members = new Map<string, string[]>();
  /** Fingerprints seen per `userId/deviceId`, to notice a key that changed. */
  private readonly seen = new Map<string, string>();

  constructor(private readonly deps: EndToEndDeps) {}

  /** Loads this device's key pair, making and storing one the first time. */
  ready(): Promise<DeviceKeyPair> {
    this.loading ??= this.loadOrCreate().catch((error: unknown) => {
      this.loading = undefined;
      throw error;
    });
    return this.loading;
  }

  /** Publishes the public key (`PUT /v1/devices/:deviceId`) once per client: before the first connect resolves. */
  async publish(): Promise<void> {
    const keyPair = await this.ready();
    if (this.published) return;
    await this.deps.rest('PUT', `/v1/devices/${encodeURIComponent(this.deps.deviceId)}`, {
      publicKey: toBase64(keyPair.publicKey),
    });
    this.published = true;
  }

  /** This device's fingerprint; undefined before the key pair was loaded. */
  fingerprint(): string | undefined {
    return this.keyPair && fingerprint(this.keyPair.publicKey);
  }

  /**
   * The member list, and the keys of every member (the one added or removed included), are
   * read again when next needed: a membership event is rare, and it is the one moment the
   * server tells this device something about the conversation's devices.
   */
  onMembership(payload: MembershipPayload): void {
    this.conversations.delete(payload.conversationId);
    this.userKeys.delete(payload.userId);
    for (const userId of this.members.get(payload.conversationId) ?? []) this.userKeys.delete(userId);
    this.members.delete(payload.conversationId);
  }

  /** After `devices_changed`: the users named and the member list are read again, now. */
  async devicesChanged(conversationId: string, details: Record<string, unknown> | undefined): Promise<void> {
    const named = [details?.missing, details?.extra]
      .flatMap((list): unknown[] => (Array.isArray(list) ? (list as unknown[]) : []))
      .filter((pair): pair is string => typeof pair === 'string')
      .map((pair) => pair.slice(0, pair.lastIndexOf('/')));
    this.conversations.delete(conversationId);
    for (const userId of new Set(named)) this.userKeys.delete(userId);
    const info = await this.conversation(conversationId);
    await Promise.all([...new Set([...named, ...info.memberIds])].map((userId) => this.keysOf(userId)));
  }

  /**
   * Seals an outbox entry's body for the conversation's current devices; undefined when
   * the conversation is not e2e (its body goes as is).
   */
  async seal(entry: StoredSend): Promise<{ ciphertext: string; recipientDevices: string[] } | undefined> {
    const keyPair = await this.ready();
    const info = await this.conversation(entry.conversationId);
    if (info.encryption !== 'e2e') return undefined;
    const senderId = this.deps.userId();
    if (senderId === undefined) throw new ClientError('unavailable', 'no session yet');
    const self = `${senderId}/${this.deps.deviceId}`;
    const recipients: RecipientKey[] = [];
    for (const userId of info.memberIds) {
      for (const [deviceId, publicKey] of await this.keysOf(userId)) {
        const id = `${userId}/${deviceId}`;
        if (id !== self) recipients.push({ id, publicKey });
      }
    }
    const recipientDevices = recipients.map((recipient) => recipient.id);
    // The sending device is sealed to as well (it reads its own history), but the server
    // expects it left out of recipientDevices.
    recipients.push({ id: self, publicKey: keyPair.publicKey });
    const body = entry.body ?? '';
    const max = this.deps.maxMessageBytes();
    const size = envelopeSize(
      new TextEncoder().encode(body).length,
      recipients.map((recipient) => recipient.id),
    );
    if (max !== undefined && size > max) {
      throw new ClientError('payload_too_large', `the envelope for ${recipients.length} devices is over ${max} bytes`, {
        maxMessageBytes: max,
        bytes: size,
        devices: recipients.length,
      });
    }
    const context: EnvelopeContext = {
      conversationId: entry.conversationId,
      senderId,
      senderDeviceId: this.deps.deviceId,
      clientMsgId: entry.clientMsgId,
      contentType: entry.contentType ?? 'text/plain',
    };
    return { ciphertext: toBase64(sealEnvelope(body, context, recipients)), recipientDevices };
  }

  /**
   * A received (or own, or history) message as the app gets it: an envelope this device
   * opens gets its `body` and `e2e: true`; one it cannot open `undecryptable: true`.
   * Messages without ciphertext pass unchanged.
   */
  open(message: WireMessage): OpenedMessage {
    if (message.ciphertext === undefined) return message;
    const userId = this.deps.userId();
    if (!this.keyPair || userId === undefined) return { ...message, e2e: true, undecryptable: true };
    try {
      const body = openEnvelope(
        fromBase64(message.ciphertext),
        {
          conversationId: message.conversationId,
          senderId: message.senderId,
          senderDeviceId: message.senderDeviceId,
          clientMsgId: message.clientMsgId,
          contentType: message.contentType,
        },
        { id: `${userId}/${this.deps.deviceId}`, keyPair: this.keyPair },
      );
      return { ...message, body, e2e: true };
    } catch {
      return { ...message, e2e: true, undecryptable: true };
    }
  }

  private async loadOrCreate(): Promise<DeviceKeyPair> {
    await sodiumReady();
    const stored = await this.deps.loadKey();
    if (stored) {
      this.record = stored;
      for (const [id, seen] of Object.entries(stored.peers ?? {})) this.seen.set(id, seen);
      this.keyPair = { publicKey: fromBase64(stored.publicKey), secretKey: fromBase64(stored.secretKey) };
      return this.keyPair;
    }
    const keyPair = generateDeviceKeyPair();
    const record: StoredDeviceKey = {
      publicKey: toBase64(keyPair.publicKey),
      secretKey: toBase64(keyPair.secretKey),
      createdAt: new Date().toISOString(),
    };
    await this.deps.saveKey(record);
    this.record = record;
    this.keyPair = keyPair;
    return keyPair;
  }

  private conversation(conversationId: string): Promise<ConversationInfo> {
    let info = this.conversations.get(conversationId);
    if (!info) {
      info = this.deps
        .rest<{ encryption: 'server' | 'e2e'; members: { userId: string }[] }>(
          'GET',
          `/v1/conversations/${encodeURIComponent(conversationId)}`,
        )
        .then((data) => {
          const memberIds = data.members.map((member) => member.userId);
          this.members.set(conversationId, memberIds);
          return { encryption: data.encryption, memberIds };
        });
      this.remember(this.conversations, conversationId, info);
    }
    return info;
  }

  private keysOf(userId: string): Promise<Map<string, Uint8Array>> {
    let keys = this.userKeys.get(userId);
    const askedAt = this.keysAskedAt.get(userId);
    if (!keys || askedAt === undefined || this.deps.now() - askedAt > this.deps.keyMaxAgeMs) {
      this.keysAskedAt.set(userId, this.deps.now());
      // After ready(): the fingerprints seen in earlier runs are loaded by then.
      keys = this.ready()
        .then(() =>
          this.deps.rest<{ deviceId: string; publicKey: string }[]>(
            'GET',
            `/v1/users/${encodeURIComponent(userId)}/devices/keys`,
          ),
        )
        .then((devices) => {
          const byDevice = new Map<string, Uint8Array>();
          let learned = false;
          for (const device of devices) {
            let publicKey: Uint8Array;
            try {
              publicKey = fromBase64(device.publicKey);
            } catch {
              continue;
            }
            // Not an X25519 key: this SDK cannot seal to it (and the server will say so).
            if (publicKey.length !== 32) continue;
            byDevice.set(device.deviceId, publicKey);
            learned = this.notice(userId, device.deviceId, publicKey) || learned;
          }
          if (learned) this.rememberPeers();
          return byDevice;
        });
      this.remember(this.userKeys, userId, keys);
    }
    return keys;
  }

  /** Records a peer key's fingerprint; true when it is new or changed (to be stored). */
  private notice(userId: string, deviceId: string, publicKey: Uint8Array): boolean {
    const id = `${userId}/${deviceId}`;
    const now = fingerprint(publicKey);
    const before = this.seen.get(id);
    if (before === now) return false;
    this.seen.set(id, now);
    if (before !== undefined) {
      this.deps.onKeyChange({ userId, deviceId, fingerprint: now, previousFingerprint: before });
    }
    return true;
  }

  /** Stores the fingerprints seen with the key pair, so that trust on first use outlives a restart. */
  private rememberPeers(): void {
    if (!this.record) return;
    this.record = { ...this.record, peers: Object.fromEntries(this.seen) };
    this.deps
      .saveKey(this.record)
      .catch((error: unknown) => this.deps.onError(ClientError.from(error, 'storage_error')));
  }

  /** Caches a look-up; a failed one is forgotten so that the next use asks again. */
  private remember<T>(cache: Map<string, Promise<T>>, key: string, value: Promise<T>): void {
    cache.set(key, value);
    value.catch(() => {
      if (cache.get(key) === value) cache.delete(key);
    });
  }
}
