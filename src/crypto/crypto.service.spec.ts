import { randomBytes, randomUUID } from 'node:crypto';

import { Logger } from '@nestjs/common';
import { beforeAll, describe, expect, it } from 'vitest';

import type { AppConfig } from '../config/app-config.js';
import { parseEnv } from '../config/config.parser.js';
import type { ConversationKeyRow, ConversationKeysRepository } from './conversation-keys.repository.js';
import { CryptoError, CryptoErrorReason } from './crypto.errors.js';
import { CryptoService, type MessageAad } from './crypto.service.js';
import { KeyRotationService } from './key-rotation.service.js';

const MASTER_1 = randomBytes(32).toString('base64');
const MASTER_2 = randomBytes(32).toString('base64');

function configWith(keys: string, active?: number): AppConfig {
  return parseEnv({
    DATABASE_URL: 'postgresql://u:p@localhost:5432/unused',
    REDIS_URL: 'redis://localhost:6379',
    JWT_SECRET: 'unit-test-secret-unit-test-secret-0123',
    ENCRYPTION_KEYS: keys,
    ENCRYPTION_ACTIVE_KEY: active === undefined ? undefined : String(active),
  });
}

async function cryptoWith(keys: string, active?: number): Promise<CryptoService> {
  const crypto = new CryptoService(configWith(keys, active));
  await crypto.onModuleInit();
  return crypto;
}

/** Runs `fn` and returns the CryptoError it throws (fails the test if it throws anything else). */
function cryptoErrorOf(fn: () => unknown): CryptoError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(CryptoError);
    return error as CryptoError;
  }
  throw new Error('expected a CryptoError, nothing was thrown');
}

const body = new TextEncoder().encode('hello, encrypted world');

describe('CryptoService', () => {
  let crypto: CryptoService;
  let conversationId: string;
  let dataKey: Uint8Array;
  let aad: MessageAad;

  beforeAll(async () => {
    crypto = await cryptoWith(`1:${MASTER_1}`);
    conversationId = randomUUID();
    const { wrappedKey, keyVersion } = crypto.createDataKey(conversationId);
    dataKey = crypto.unwrapDataKey(conversationId, wrappedKey, keyVersion);
    aad = { conversationId, messageId: randomUUID(), seq: 42n, keyVersion: 1 };
  });

  it('binds the documented associated data: length-prefixed domain and ids, then seq (u64) and key version (u32), big-endian', async () => {
    const sodium = (await import('libsodium-wrappers')).default;
    const lengthPrefixed = (value: string) => {
      const bytes = Buffer.from(value, 'utf8');
      const length = Buffer.alloc(4);
      length.writeUInt32BE(bytes.length);
      return Buffer.concat([length, bytes]);
    };
    const message = { conversationId: randomUUID(), messageId: 'é-not-a-uuid', seq: 2n ** 40n + 7n, keyVersion: 3 };
    const seq = Buffer.alloc(8);
    seq.writeBigUInt64BE(message.seq);
    const keyVersion = Buffer.alloc(4);
    keyVersion.writeUInt32BE(message.keyVersion);
    const associated = Buffer.concat([
      lengthPrefixed('messaging-service/message/v1'),
      lengthPrefixed(message.conversationId),
      lengthPrefixed(message.messageId),
      seq,
      keyVersion,
    ]);
    const nonce = randomBytes(24);
    const ciphertext = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(body, associated, null, nonce, dataKey);

    expect(crypto.open(dataKey, ciphertext, nonce, message)).toEqual(body);
    const upper = { ...message, conversationId: message.conversationId.toUpperCase() };
    expect(crypto.open(dataKey, ciphertext, nonce, upper)).toEqual(body);
    const sealed = crypto.seal(dataKey, body, message);
    expect(
      Buffer.from(
        sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(null, sealed.ciphertext, associated, sealed.nonce, dataKey),
      ),
    ).toEqual(Buffer.from(body));
  });

  it('round-trips a message body', () => {
    const { ciphertext, nonce } = crypto.seal(dataKey, body, aad);
    expect(nonce).toHaveLength(24);
    expect(Buffer.from(ciphertext).includes(Buffer.from(body))).toBe(false);
    expect(crypto.open(dataKey, ciphertext, nonce, aad)).toEqual(body);
  });

  it('round-trips an empty body', () => {
    const { ciphertext, nonce } = crypto.seal(dataKey, new Uint8Array(0), aad);
    expect(crypto.open(dataKey, ciphertext, nonce, aad)).toHaveLength(0);
  });

  it('uses a fresh nonce for every seal', () => {
    const first = crypto.seal(dataKey, body, aad);
    const second = crypto.seal(dataKey, body, aad);
    expect(first.nonce).not.toEqual(second.nonce);
    expect(first.ciphertext).not.toEqual(second.ciphertext);
  });

  it('never repeats a nonce across pool refills (5,000 seals, 24 random bytes each)', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 5_000; i++) {
      const { nonce } = crypto.seal(dataKey, body, aad);
      expect(nonce).toHaveLength(24);
      seen.add(Buffer.from(nonce).toString('hex'));
    }
    expect(seen.size).toBe(5_000);
    // Random, not a counter: on average half of each nonce's bits differ from the next one's.
    const nonces = [...seen].map((hex) => Buffer.from(hex, 'hex'));
    let differing = 0;
    for (let i = 1; i < nonces.length; i++) {
      for (let b = 0; b < 24; b++) differing += popcount(nonces[i][b] ^ nonces[i - 1][b]);
    }
    expect(differing / (nonces.length - 1)).toBeGreaterThan(80);
    expect(differing / (nonces.length - 1)).toBeLessThan(112);
  });

  it('rejects a ciphertext with any one byte flipped', () => {
    const { ciphertext, nonce } = crypto.seal(dataKey, body, aad);
    for (let i = 0; i < ciphertext.length; i++) {
      const tampered = ciphertext.slice();
      tampered[i] ^= 0x01;
      expect(cryptoErrorOf(() => crypto.open(dataKey, tampered, nonce, aad)).reason).toBe(CryptoErrorReason.OpenFailed);
    }
  });

  it('rejects a nonce with any one byte flipped', () => {
    const { ciphertext, nonce } = crypto.seal(dataKey, body, aad);
    for (let i = 0; i < nonce.length; i++) {
      const tampered = nonce.slice();
      tampered[i] ^= 0x80;
      expect(cryptoErrorOf(() => crypto.open(dataKey, ciphertext, tampered, aad)).reason).toBe(
        CryptoErrorReason.OpenFailed,
      );
    }
  });

  it('rejects a truncated ciphertext or a nonce of the wrong length', () => {
    const { ciphertext, nonce } = crypto.seal(dataKey, body, aad);
    cryptoErrorOf(() => crypto.open(dataKey, ciphertext.subarray(0, 10), nonce, aad));
    cryptoErrorOf(() => crypto.open(dataKey, ciphertext, nonce.subarray(0, 12), aad));
  });

  it.each([
    ['another message id', { messageId: randomUUID() }],
    ['another seq', { seq: 43n }],
    ['another conversation', { conversationId: randomUUID() }],
    ['another data key generation', { keyVersion: 2 }],
  ] as const)('will not open a ciphertext moved to %s', (_, change) => {
    const { ciphertext, nonce } = crypto.seal(dataKey, body, aad);
    const error = cryptoErrorOf(() => crypto.open(dataKey, ciphertext, nonce, { ...aad, ...change }));
    expect(error.reason).toBe(CryptoErrorReason.OpenFailed);
  });

  it('will not open a ciphertext under another conversation data key', () => {
    const otherId = randomUUID();
    const other = crypto.createDataKey(otherId);
    const otherKey = crypto.unwrapDataKey(otherId, other.wrappedKey, other.keyVersion);
    const { ciphertext, nonce } = crypto.seal(dataKey, body, aad);
    cryptoErrorOf(() => crypto.open(otherKey, ciphertext, nonce, aad));
  });

  it('treats upper- and lower-case spellings of a uuid as the same id', () => {
    const { ciphertext, nonce } = crypto.seal(dataKey, body, aad);
    const upper = { ...aad, conversationId: aad.conversationId.toUpperCase(), messageId: aad.messageId.toUpperCase() };
    expect(crypto.open(dataKey, ciphertext, nonce, upper)).toEqual(body);
  });

  it('rejects out-of-range AAD fields and data keys of the wrong length', () => {
    expect(cryptoErrorOf(() => crypto.seal(dataKey, body, { ...aad, seq: -1n })).reason).toBe(
      CryptoErrorReason.InvalidInput,
    );
    expect(cryptoErrorOf(() => crypto.seal(dataKey, body, { ...aad, seq: 1n << 64n })).reason).toBe(
      CryptoErrorReason.InvalidInput,
    );
    expect(cryptoErrorOf(() => crypto.seal(dataKey, body, { ...aad, keyVersion: 1.5 })).reason).toBe(
      CryptoErrorReason.InvalidInput,
    );
    expect(cryptoErrorOf(() => crypto.seal(new Uint8Array(16), body, aad)).reason).toBe(CryptoErrorReason.InvalidInput);
  });

  it('wraps a data key as 72 bytes: 24-byte nonce, 32-byte key, 16-byte tag', () => {
    const { wrappedKey, keyVersion } = crypto.createDataKey(randomUUID());
    expect(wrappedKey).toHaveLength(72);
    expect(keyVersion).toBe(1);
  });

  it('gives each conversation its own data key', () => {
    const a = randomUUID();
    const b = randomUUID();
    const wrappedA = crypto.createDataKey(a);
    const wrappedB = crypto.createDataKey(b);
    expect(crypto.unwrapDataKey(a, wrappedA.wrappedKey, 1)).not.toEqual(
      crypto.unwrapDataKey(b, wrappedB.wrappedKey, 1),
    );
  });

  it('will not unwrap a wrapped key copied to another conversation', () => {
    const { wrappedKey, keyVersion } = crypto.createDataKey(conversationId);
    const error = cryptoErrorOf(() => crypto.unwrapDataKey(randomUUID(), wrappedKey, keyVersion));
    expect(error.reason).toBe(CryptoErrorReason.UnwrapFailed);
  });

  it('will not unwrap a wrapped key labelled with another master key version', async () => {
    const both = await cryptoWith(`1:${MASTER_1},2:${MASTER_2}`, 1);
    const { wrappedKey } = both.createDataKey(conversationId);
    expect(cryptoErrorOf(() => both.unwrapDataKey(conversationId, wrappedKey, 2)).reason).toBe(
      CryptoErrorReason.UnwrapFailed,
    );
  });

  it('will not unwrap a tampered or truncated wrapped key', () => {
    const { wrappedKey, keyVersion } = crypto.createDataKey(conversationId);
    for (let i = 0; i < wrappedKey.length; i++) {
      const tampered = wrappedKey.slice();
      tampered[i] ^= 0x01;
      cryptoErrorOf(() => crypto.unwrapDataKey(conversationId, tampered, keyVersion));
    }
    cryptoErrorOf(() => crypto.unwrapDataKey(conversationId, wrappedKey.subarray(0, 40), keyVersion));
  });

  it('fails cleanly on an unknown master key version, naming no key material', () => {
    const { wrappedKey } = crypto.createDataKey(conversationId);
    const error = cryptoErrorOf(() => crypto.unwrapDataKey(conversationId, wrappedKey, 7));
    expect(error.reason).toBe(CryptoErrorReason.UnknownKeyVersion);
    expect(error.code).toBe('internal');
    expect(error.message).toContain('version 7');
    expect(error.message).not.toContain(MASTER_1);
    expect(error.message).not.toContain(Buffer.from(dataKey).toString('base64'));
  });

  it('returns the same data key from the cache on repeated unwraps', () => {
    const { wrappedKey, keyVersion } = crypto.createDataKey(conversationId);
    const first = crypto.unwrapDataKey(conversationId, wrappedKey, keyVersion);
    expect(crypto.unwrapDataKey(conversationId, wrappedKey, keyVersion)).toBe(first);
    // A cached entry is bound to its conversation: the same bytes elsewhere still fail.
    cryptoErrorOf(() => crypto.unwrapDataKey(randomUUID(), wrappedKey, keyVersion));
  });

  it('refuses a config whose active master key version is not listed', () => {
    const config = configWith(`1:${MASTER_1}`);
    const broken = { ...config, encryption: { ...config.encryption, activeVersion: 3 } } as AppConfig;
    expect(cryptoErrorOf(() => new CryptoService(broken)).reason).toBe(CryptoErrorReason.UnknownKeyVersion);
  });
});

describe('master key rotation', () => {
  it('re-wraps a version-1 key under version 2 without changing the data key', async () => {
    const before = await cryptoWith(`1:${MASTER_1}`);
    const conversationId = randomUUID();
    const wrappedV1 = before.createDataKey(conversationId);
    expect(wrappedV1.keyVersion).toBe(1);
    const dataKeyV1 = before.unwrapDataKey(conversationId, wrappedV1.wrappedKey, 1);
    const aad: MessageAad = { conversationId, messageId: randomUUID(), seq: 1n, keyVersion: 1 };
    const sealed = before.seal(dataKeyV1, body, aad);

    const after = await cryptoWith(`1:${MASTER_1},2:${MASTER_2}`, 2);
    const wrappedV2 = after.rewrapDataKey(conversationId, wrappedV1.wrappedKey, wrappedV1.keyVersion);
    expect(wrappedV2.keyVersion).toBe(2);
    expect(wrappedV2.wrappedKey).not.toEqual(wrappedV1.wrappedKey);

    const dataKeyV2 = after.unwrapDataKey(conversationId, wrappedV2.wrappedKey, wrappedV2.keyVersion);
    expect(dataKeyV2).toEqual(dataKeyV1);
    expect(after.open(dataKeyV2, sealed.ciphertext, sealed.nonce, aad)).toEqual(body);

    // Once version 1 is retired, only the re-wrapped key still unwraps.
    const retired = await cryptoWith(`2:${MASTER_2}`);
    expect(retired.unwrapDataKey(conversationId, wrappedV2.wrappedKey, 2)).toEqual(dataKeyV1);
  });

  it('cannot unwrap a version-1 key with a config that no longer lists version 1', async () => {
    const before = await cryptoWith(`1:${MASTER_1}`);
    const conversationId = randomUUID();
    const { wrappedKey, keyVersion } = before.createDataKey(conversationId);
    const retired = await cryptoWith(`2:${MASTER_2}`);
    expect(cryptoErrorOf(() => retired.unwrapDataKey(conversationId, wrappedKey, keyVersion)).reason).toBe(
      CryptoErrorReason.UnknownKeyVersion,
    );
    expect(cryptoErrorOf(() => retired.rewrapDataKey(conversationId, wrappedKey, keyVersion)).reason).toBe(
      CryptoErrorReason.UnknownKeyVersion,
    );
  });

  it('will not unwrap with a different key listed under the same version number', async () => {
    const before = await cryptoWith(`1:${MASTER_1}`);
    const conversationId = randomUUID();
    const { wrappedKey, keyVersion } = before.createDataKey(conversationId);
    const impostor = await cryptoWith(`1:${MASTER_2}`);
    expect(cryptoErrorOf(() => impostor.unwrapDataKey(conversationId, wrappedKey, keyVersion)).reason).toBe(
      CryptoErrorReason.UnwrapFailed,
    );
  });
});

/** An in-memory stand-in for the conversations table, with the same optimistic check. */
class MemoryConversationKeys implements Pick<
  ConversationKeysRepository,
  'findNotAtVersion' | 'countAtVersion' | 'replaceWrappedKey'
> {
  readonly rows = new Map<string, ConversationKeyRow>();
  /** Called before each replace, to simulate a concurrent writer. */
  beforeReplace: (id: string) => void = () => undefined;

  findNotAtVersion(version: number, afterId: string | null, limit: number): Promise<ConversationKeyRow[]> {
    const page = [...this.rows.values()]
      .filter((row) => row.keyVersion !== version && (afterId === null || row.id > afterId))
      .sort((a, b) => (a.id < b.id ? -1 : 1))
      .slice(0, limit)
      .map((row) => ({ ...row }));
    return Promise.resolve(page);
  }

  countAtVersion(version: number): Promise<number> {
    return Promise.resolve([...this.rows.values()].filter((row) => row.keyVersion === version).length);
  }

  replaceWrappedKey(
    id: string,
    expectedKeyVersion: number,
    next: { wrappedKey: Uint8Array<ArrayBuffer>; keyVersion: number },
  ): Promise<boolean> {
    this.beforeReplace(id);
    const row = this.rows.get(id);
    if (!row || row.keyVersion !== expectedKeyVersion) return Promise.resolve(false);
    this.rows.set(id, { id, ...next });
    return Promise.resolve(true);
  }
}

describe('KeyRotationService', () => {
  beforeAll(() => Logger.overrideLogger(false));

  async function setup(count: number, alreadyAtV2: number) {
    const v1 = await cryptoWith(`1:${MASTER_1}`);
    const v2 = await cryptoWith(`1:${MASTER_1},2:${MASTER_2}`, 2);
    const repository = new MemoryConversationKeys();
    const dataKeys = new Map<string, Uint8Array>();
    for (let i = 0; i < count + alreadyAtV2; i++) {
      const id = randomUUID();
      const wrapped = (i < count ? v1 : v2).createDataKey(id);
      repository.rows.set(id, { id, ...wrapped });
      dataKeys.set(id, (i < count ? v1 : v2).unwrapDataKey(id, wrapped.wrappedKey, wrapped.keyVersion));
    }
    const rotation = new KeyRotationService(repository as unknown as ConversationKeysRepository, v2);
    return { v2, repository, dataKeys, rotation };
  }

  it('re-wraps every key not under the active version, across pages, keeping each data key', async () => {
    const { v2, repository, dataKeys, rotation } = await setup(7, 2);
    expect(await rotation.rotateAll({ batchSize: 3 })).toEqual({ rewrapped: 7, alreadyCurrent: 2 });
    for (const row of repository.rows.values()) {
      expect(row.keyVersion).toBe(2);
      expect(v2.unwrapDataKey(row.id, row.wrappedKey, row.keyVersion)).toEqual(dataKeys.get(row.id));
    }
    expect(await rotation.rotateAll({ batchSize: 3 })).toEqual({ rewrapped: 0, alreadyCurrent: 9 });
  });

  it('handles a page that ends exactly at the batch size', async () => {
    const { rotation } = await setup(4, 0);
    expect(await rotation.rotateAll({ batchSize: 2 })).toEqual({ rewrapped: 4, alreadyCurrent: 0 });
  });

  it('leaves a row alone when another run re-wrapped it first', async () => {
    const { v2, repository, rotation } = await setup(3, 0);
    const [raced] = [...repository.rows.keys()].sort();
    repository.beforeReplace = (id) => {
      const row = repository.rows.get(id);
      if (id === raced && row?.keyVersion === 1) {
        repository.rows.set(id, { id, ...v2.rewrapDataKey(id, row.wrappedKey, row.keyVersion) });
      }
    };
    expect(await rotation.rotateAll()).toEqual({ rewrapped: 2, alreadyCurrent: 1 });
  });

  it('stops with a CryptoError at a key whose master version is not configured', async () => {
    const { repository, rotation } = await setup(1, 0);
    const id = randomUUID();
    repository.rows.set(id, { id, wrappedKey: new Uint8Array(72), keyVersion: 5 });
    await expect(rotation.rotateAll()).rejects.toBeInstanceOf(CryptoError);
  });
});

function popcount(byte: number): number {
  let count = 0;
  for (let v = byte; v > 0; v >>= 1) count += v & 1;
  return count;
}
