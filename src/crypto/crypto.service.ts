import { getRandomValues, randomFillSync } from 'node:crypto';

import { Injectable, type OnModuleInit } from '@nestjs/common';
import sodium from 'libsodium-wrappers';

import { UUID } from '../common/ids.js';
import { AppConfig } from '../config/app-config.js';
import { CryptoError, CryptoErrorReason } from './crypto.errors.js';

/** Bytes that own their whole ArrayBuffer: what Prisma accepts for a `Bytes` column. */
export type Bytes = Uint8Array<ArrayBuffer>;

/**
 * What a message ciphertext is bound to. A ciphertext only opens with exactly these
 * values, so copying it to another row, conversation or seq makes it fail.
 */
export interface MessageAad {
  conversationId: string;
  messageId: string;
  seq: bigint;
  /** Generation of the conversation data key (messages.key_version). */
  keyVersion: number;
}

/** A conversation data key wrapped by a master key, as stored on the conversation row. */
export interface WrappedDataKey {
  /** 24-byte nonce followed by the sealed 32-byte data key and its 16-byte tag. */
  wrappedKey: Bytes;
  /** The master key version (ENCRYPTION_KEYS) that wraps it. */
  keyVersion: number;
}

/** A sealed message body and the nonce it was sealed under. */
export interface SealedMessage {
  ciphertext: Bytes;
  nonce: Bytes;
}

const KEY_BYTES = 32;
const NONCE_BYTES = 24;
const TAG_BYTES = 16;
/** Nonces drawn from the CSPRNG per refill (one system-RNG call per 1,024 messages). */
const NONCES_PER_REFILL = 1_024;

/**
 * Random nonces, cheaply: one CSPRNG fill buys 1,024 of them, each handed out once
 * (copied out, then the pool moves past it). XChaCha20's 192-bit nonces are safe to draw
 * at random; the pool changes how often the RNG is called, not what it gives.
 */
class NoncePool {
  private pool = Buffer.alloc(0);
  private offset = 0;

  next(): Bytes {
    if (this.offset + NONCE_BYTES > this.pool.length) {
      this.pool = randomFillSync(Buffer.allocUnsafe(NONCE_BYTES * NONCES_PER_REFILL));
      this.offset = 0;
    }
    const nonce: Bytes = new Uint8Array(NONCE_BYTES);
    nonce.set(this.pool.subarray(this.offset, this.offset + NONCE_BYTES));
    this.offset += NONCE_BYTES;
    return nonce;
  }
}
const WRAPPED_KEY_BYTES = NONCE_BYTES + KEY_BYTES + TAG_BYTES;
const MAX_UINT32 = 0xffff_ffff;
const MAX_UINT64 = (1n << 64n) - 1n;

/** How many unwrapped data keys stay in memory (72-byte wrapped key + 32-byte key each). */
const DATA_KEY_CACHE_SIZE = 10_000;

// Domain tags keep the two kinds of associated data apart, and name the format version
// so a future layout cannot be confused with this one.
const DATA_KEY_DOMAIN = 'messaging-service/data-key/v1';
const MESSAGE_DOMAIN = 'messaging-service/message/v1';

/**
 * Services encrypt data at rest with two key layers (envelope encryption):
 *
 * - each conversation has a random 32-byte data key, stored on its row wrapped
 *   (XChaCha20-Poly1305) by a master key from ENCRYPTION_KEYS;
 * - each message body is sealed with its conversation's data key, bound to its row.
 *
 * Rotating the master key re-wraps the data keys only; message rows never change.
 * Nothing here logs, and no error carries key material or plaintext.
 */
@Injectable()
export class CryptoService implements OnModuleInit {
  private readonly masterKeys: ReadonlyMap<number, Uint8Array>;
  private readonly activeVersion: number;
  /** Insertion-ordered, so the first entry is the least recently used. */
  private readonly dataKeys = new Map<string, Bytes>();
  private readonly nonces = new NoncePool();

  constructor(config: AppConfig) {
    const { keys, activeVersion } = config.encryption;
    for (const { version, key } of keys) {
      if (key.length !== KEY_BYTES) {
        throw new CryptoError(
          CryptoErrorReason.InvalidInput,
          `master key version ${version} must be ${KEY_BYTES} bytes, got ${key.length}`,
        );
      }
    }
    this.masterKeys = new Map(keys.map(({ version, key }) => [version, key]));
    if (!this.masterKeys.has(activeVersion)) {
      throw new CryptoError(
        CryptoErrorReason.UnknownKeyVersion,
        `active master key version ${activeVersion} is not listed in ENCRYPTION_KEYS`,
      );
    }
    this.activeVersion = activeVersion;
  }

  async onModuleInit(): Promise<void> {
    await sodium.ready;
  }

  /** The master key version new data keys are wrapped with. */
  get activeKeyVersion(): number {
    return this.activeVersion;
  }

  /**
   * Makes a new random data key for a conversation, wrapped by the active master key and
   * bound to the conversation id, so the wrapped bytes only unwrap for that conversation.
   *
   * @example
   * const { wrappedKey, keyVersion } = crypto.createDataKey(conversationId);
   * await prisma.conversation.create({ data: { id: conversationId, kind, wrappedKey, keyVersion } });
   */
  createDataKey(conversationId: string): WrappedDataKey {
    const dataKey = getRandomValues(new Uint8Array(KEY_BYTES));
    try {
      return this.wrap(conversationId, dataKey);
    } finally {
      sodium.memzero(dataKey);
    }
  }

  /**
   * Unwraps a conversation's data key. Results are kept in a bounded in-memory cache, so
   * the hot path (every send and every history read) costs one Map lookup.
   * Throws CryptoError if the master key version is unknown or the bytes do not
   * authenticate for this conversation. Treat the returned key as read-only.
   *
   * @example
   * const dataKey = crypto.unwrapDataKey(row.id, row.wrappedKey, row.keyVersion);
   * const body = crypto.open(dataKey, message.ciphertext, message.nonce, aad);
   */
  unwrapDataKey(conversationId: string, wrappedKey: Uint8Array, keyVersion: number): Bytes {
    const cacheKey = `${canonicalId(conversationId)}\n${keyVersion}\n${Buffer.from(wrappedKey.buffer, wrappedKey.byteOffset, wrappedKey.byteLength).toString('base64')}`;
    const cached = this.dataKeys.get(cacheKey);
    if (cached) {
      // Move to the most recently used end.
      this.dataKeys.delete(cacheKey);
      this.dataKeys.set(cacheKey, cached);
      return cached;
    }
    const dataKey = this.unwrap(conversationId, wrappedKey, keyVersion);
    if (this.dataKeys.size >= DATA_KEY_CACHE_SIZE) {
      const oldest = this.dataKeys.keys().next();
      if (!oldest.done) this.dataKeys.delete(oldest.value);
    }
    this.dataKeys.set(cacheKey, dataKey);
    return dataKey;
  }

  /**
   * Re-wraps a conversation's data key under the active master key, for master key
   * rotation. The data key itself does not change, so its messages still open. Bypasses
   * the cache, so a rotation run does not evict the keys live traffic uses.
   *
   * @example
   * const next = crypto.rewrapDataKey(row.id, row.wrappedKey, row.keyVersion);
   * // store next.wrappedKey and next.keyVersion on the row (if it still has row.keyVersion)
   */
  rewrapDataKey(conversationId: string, wrappedKey: Uint8Array, keyVersion: number): WrappedDataKey {
    const dataKey = this.unwrap(conversationId, wrappedKey, keyVersion);
    try {
      return this.wrap(conversationId, dataKey);
    } finally {
      sodium.memzero(dataKey);
    }
  }

  /**
   * Seals a message body with a conversation data key under a fresh random nonce, bound
   * to the message's row (conversation, message id, seq, data key generation).
   *
   * @example
   * const dataKey = crypto.unwrapDataKey(conversation.id, conversation.wrappedKey, conversation.keyVersion);
   * const { ciphertext, nonce } = crypto.seal(dataKey, utf8Body, { conversationId, messageId, seq, keyVersion: 1 });
   */
  seal(dataKey: Uint8Array, plaintext: Uint8Array, aad: MessageAad): SealedMessage {
    checkDataKey(dataKey);
    const nonce = this.nonces.next();
    const ciphertext = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
      plaintext,
      encodeMessageAad(aad),
      null,
      nonce,
      dataKey,
    );
    return { ciphertext: owned(ciphertext), nonce };
  }

  /**
   * Opens a message body sealed by `seal`. Throws CryptoError unless the key, nonce,
   * ciphertext and every AAD field are exactly those it was sealed with.
   *
   * @example
   * const body = crypto.open(dataKey, row.ciphertext, row.nonce, {
   *   conversationId: row.conversationId, messageId: row.id, seq: row.seq, keyVersion: row.keyVersion,
   * });
   */
  open(dataKey: Uint8Array, ciphertext: Uint8Array, nonce: Uint8Array, aad: MessageAad): Bytes {
    checkDataKey(dataKey);
    if (nonce.length !== NONCE_BYTES || ciphertext.length < TAG_BYTES) {
      throw new CryptoError(
        CryptoErrorReason.OpenFailed,
        `cannot open message ${aad.messageId}: malformed nonce or ciphertext length`,
      );
    }
    const associatedData = encodeMessageAad(aad);
    try {
      return owned(sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(null, ciphertext, associatedData, nonce, dataKey));
    } catch {
      throw new CryptoError(
        CryptoErrorReason.OpenFailed,
        `cannot open message ${aad.messageId} in conversation ${aad.conversationId}: authentication failed`,
      );
    }
  }

  private wrap(conversationId: string, dataKey: Uint8Array): WrappedDataKey {
    const keyVersion = this.activeVersion;
    const masterKey = this.masterKey(keyVersion, conversationId);
    const nonce = getRandomValues(new Uint8Array(NONCE_BYTES));
    const sealed = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
      dataKey,
      encodeDataKeyAad(conversationId, keyVersion),
      null,
      nonce,
      masterKey,
    );
    const wrappedKey = new Uint8Array(NONCE_BYTES + sealed.length);
    wrappedKey.set(nonce, 0);
    wrappedKey.set(sealed, NONCE_BYTES);
    return { wrappedKey, keyVersion };
  }

  private unwrap(conversationId: string, wrappedKey: Uint8Array, keyVersion: number): Bytes {
    const masterKey = this.masterKey(keyVersion, conversationId);
    if (wrappedKey.length !== WRAPPED_KEY_BYTES) {
      throw new CryptoError(
        CryptoErrorReason.UnwrapFailed,
        `cannot unwrap the data key of conversation ${conversationId}: expected ${WRAPPED_KEY_BYTES} bytes, got ${wrappedKey.length}`,
      );
    }
    try {
      return owned(
        sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
          null,
          wrappedKey.subarray(NONCE_BYTES),
          encodeDataKeyAad(conversationId, keyVersion),
          wrappedKey.subarray(0, NONCE_BYTES),
          masterKey,
        ),
      );
    } catch {
      throw new CryptoError(
        CryptoErrorReason.UnwrapFailed,
        `cannot unwrap the data key of conversation ${conversationId} with master key version ${keyVersion}: authentication failed`,
      );
    }
  }

  private masterKey(version: number, conversationId: string): Uint8Array {
    const key = this.masterKeys.get(version);
    if (!key) {
      throw new CryptoError(
        CryptoErrorReason.UnknownKeyVersion,
        `master key version ${version} (conversation ${conversationId}) is not listed in ENCRYPTION_KEYS`,
      );
    }
    return key;
  }
}

function checkDataKey(dataKey: Uint8Array): void {
  if (dataKey.length !== KEY_BYTES) {
    throw new CryptoError(
      CryptoErrorReason.InvalidInput,
      `a data key must be ${KEY_BYTES} bytes, got ${dataKey.length}`,
    );
  }
}

/**
 * PostgreSQL returns uuids in lower case; a caller holding an upper-case copy of the same
 * id must produce the same associated data, or its messages would never open.
 */
function canonicalId(id: string): string {
  return UUID.test(id) ? id.toLowerCase() : id;
}

/** libsodium returns a fresh copy; narrow its type, or copy if that ever changes. */
function owned(bytes: Uint8Array): Bytes {
  return bytes.buffer instanceof ArrayBuffer && bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength
    ? (bytes as Bytes)
    : new Uint8Array(bytes);
}

/**
 * Canonical associated data: a domain tag, then each field in a fixed order, strings as
 * UTF-8 with a 4-byte big-endian length, integers big-endian at fixed width. Lengths
 * make the encoding injective: ("ab", "c") and ("a", "bc") differ.
 */
function encodeAad(domain: string, fields: (string | { u32: number } | { u64: bigint })[]): Uint8Array {
  let total = 4 + Buffer.byteLength(domain, 'utf8');
  for (const field of fields) {
    total += typeof field === 'string' ? 4 + Buffer.byteLength(field, 'utf8') : 'u32' in field ? 4 : 8;
  }
  // One buffer written in place: this runs for every message sealed or opened.
  const out = Buffer.allocUnsafe(total);
  let offset = writeLengthPrefixed(out, 0, domain);
  for (const field of fields) {
    if (typeof field === 'string') offset = writeLengthPrefixed(out, offset, field);
    else if ('u32' in field) offset = out.writeUInt32BE(field.u32, offset);
    else offset = out.writeBigUInt64BE(field.u64, offset);
  }
  return out;
}

function writeLengthPrefixed(out: Buffer, offset: number, value: string): number {
  const length = out.write(value, offset + 4, 'utf8');
  out.writeUInt32BE(length, offset);
  return offset + 4 + length;
}

function checkUint32(name: string, value: number): void {
  if (!Number.isInteger(value) || value < 0 || value > MAX_UINT32) {
    throw new CryptoError(
      CryptoErrorReason.InvalidInput,
      `${name} must be a whole number from 0 to ${MAX_UINT32}, got ${value}`,
    );
  }
}

function encodeDataKeyAad(conversationId: string, masterKeyVersion: number): Uint8Array {
  checkUint32('master key version', masterKeyVersion);
  return encodeAad(DATA_KEY_DOMAIN, [canonicalId(conversationId), { u32: masterKeyVersion }]);
}

function encodeMessageAad(aad: MessageAad): Uint8Array {
  checkUint32('message keyVersion', aad.keyVersion);
  if (aad.seq < 0n || aad.seq > MAX_UINT64) {
    throw new CryptoError(CryptoErrorReason.InvalidInput, `message seq must fit in 64 unsigned bits, got ${aad.seq}`);
  }
  return encodeAad(MESSAGE_DOMAIN, [
    canonicalId(aad.conversationId),
    canonicalId(aad.messageId),
    { u64: aad.seq },
    { u32: aad.keyVersion },
  ]);
}
