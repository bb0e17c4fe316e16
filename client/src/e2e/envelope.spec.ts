import sodium from 'libsodium-wrappers';
import { beforeAll, describe, expect, it } from 'vitest';

import {
  associatedData,
  envelopeRecipients,
  envelopeSize,
  fingerprint,
  HEADER_BYTES,
  openEnvelope,
  SEALED_KEY_BYTES,
  sealEnvelope,
  sodiumReady,
  type DeviceKeyPair,
  type EnvelopeContext,
  type RandomBytes,
} from './envelope.js';

const context: EnvelopeContext = {
  conversationId: '6f1c2a52-9d3e-4b7a-8c11-0a2b3c4d5e6f',
  senderId: 'alice',
  senderDeviceId: 'phone',
  clientMsgId: 'msg-1',
  contentType: 'text/plain',
};

/** A device key pair from a fixed seed (the secret key is SHA-512(seed)[0..32]). */
function keyPairFrom(seedByte: number): DeviceKeyPair {
  const pair = sodium.crypto_box_seed_keypair(new Uint8Array(32).fill(seedByte));
  return { publicKey: pair.publicKey, secretKey: pair.privateKey };
}

/** Deterministic "randomness": the n-th call returns bytes n, n+1, n+2… (mod 256). */
function countingRandom(): RandomBytes {
  let call = 0;
  return (length) => {
    call++;
    return Uint8Array.from({ length }, (_, i) => (call * 16 + i) & 0xff);
  };
}

describe('the e2e envelope', () => {
  let bob: DeviceKeyPair;
  let alice: DeviceKeyPair;
  beforeAll(async () => {
    await sodiumReady();
    bob = keyPairFrom(0x42);
    alice = keyPairFrom(0x17);
  });

  it('matches the known answer for fixed keys, nonce, message key and ephemeral seeds', () => {
    const envelope = sealEnvelope(
      'hello',
      context,
      [
        { id: 'bob/phone', publicKey: bob.publicKey },
        { id: 'alice/phone', publicKey: alice.publicKey },
      ],
      countingRandom(),
    );
    expect(sodium.to_hex(envelope)).toBe(KNOWN_ANSWER);
    expect(envelope.length).toBe(envelopeSize(5, ['bob/phone', 'alice/phone']));
  });

  it('is laid out as documented: version, nonce, count, recipients, body', () => {
    const random = countingRandom();
    const envelope = sealEnvelope('hello', context, [{ id: 'bob/phone', publicKey: bob.publicKey }], random);
    const expected = countingRandom();
    const nonce = expected(24);
    const messageKey = expected(32);
    expect(envelope[0]).toBe(1);
    expect(envelope.subarray(1, 25)).toEqual(nonce);
    expect([envelope[25], envelope[26]]).toEqual([0, 1]);
    expect([envelope[27], envelope[28]]).toEqual([0, 9]);
    expect(new TextDecoder().decode(envelope.subarray(29, 38))).toBe('bob/phone');
    // The sealed key is a standard crypto_box_seal: libsodium's own open gives the message key.
    const sealed = envelope.subarray(38, 38 + SEALED_KEY_BYTES);
    expect(sodium.crypto_box_seal_open(sealed, bob.publicKey, bob.secretKey)).toEqual(messageKey);
    const body = envelope.subarray(38 + SEALED_KEY_BYTES);
    const plain = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
      null,
      body,
      associatedData(context),
      nonce,
      messageKey,
    );
    expect(new TextDecoder().decode(plain)).toBe('hello');
    expect(envelope.length).toBe(HEADER_BYTES + 2 + 9 + SEALED_KEY_BYTES + 5 + 16);
  });

  it('opens for every recipient and names them', () => {
    const envelope = sealEnvelope('héllo ✓', context, [
      { id: 'bob/phone', publicKey: bob.publicKey },
      { id: 'alice/phone', publicKey: alice.publicKey },
    ]);
    expect(envelopeRecipients(envelope)).toEqual(['bob/phone', 'alice/phone']);
    expect(openEnvelope(envelope, context, { id: 'bob/phone', keyPair: bob })).toBe('héllo ✓');
    expect(openEnvelope(envelope, context, { id: 'alice/phone', keyPair: alice })).toBe('héllo ✓');
  });

  it('opens an envelope sealed with libsodium crypto_box_seal by another client', () => {
    // Interoperability: a client that seals with crypto_box_seal directly.
    const nonce = sodium.randombytes_buf(24);
    const key = sodium.randombytes_buf(32);
    const sealed = sodium.crypto_box_seal(key, bob.publicKey);
    const body = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
      new TextEncoder().encode('interop'),
      associatedData(context),
      null,
      nonce,
      key,
    );
    const id = new TextEncoder().encode('bob/phone');
    const envelope = new Uint8Array([1, ...nonce, 0, 1, 0, id.length, ...id, ...sealed, ...body]);
    expect(openEnvelope(envelope, context, { id: 'bob/phone', keyPair: bob })).toBe('interop');
  });

  describe('refuses to open', () => {
    let envelope: Uint8Array;
    beforeAll(() => {
      envelope = sealEnvelope('secret', context, [{ id: 'bob/phone', publicKey: bob.publicKey }]);
    });
    const open = (bytes: Uint8Array, ctx: EnvelopeContext = context) =>
      openEnvelope(bytes, ctx, { id: 'bob/phone', keyPair: bob });

    it('with any byte flipped', () => {
      expect(open(envelope)).toBe('secret');
      for (let at = 0; at < envelope.length; at++) {
        const tampered = envelope.slice();
        tampered[at] ^= 0x01;
        expect(() => open(tampered), `byte ${at}`).toThrow();
      }
    });

    it.each([
      ['conversationId', { conversationId: '00000000-0000-4000-8000-000000000000' }],
      ['senderId', { senderId: 'mallory' }],
      ['senderDeviceId', { senderDeviceId: 'laptop' }],
      ['clientMsgId', { clientMsgId: 'msg-2' }],
      ['contentType', { contentType: 'image/png' }],
    ])('under another %s', (_, change) => {
      expect(() => open(envelope, { ...context, ...change })).toThrow('the body does not authenticate');
    });

    it('with fields swapped between them in the associated data', () => {
      const swapped = { ...context, senderId: context.senderDeviceId, senderDeviceId: context.senderId };
      expect(() => open(envelope, swapped)).toThrow('the body does not authenticate');
    });

    it('truncated anywhere', () => {
      for (let length = 0; length < envelope.length; length++) {
        expect(() => open(envelope.subarray(0, length)), `length ${length}`).toThrow();
      }
    });

    it('for a device it was not sealed to, or with another key', () => {
      expect(() => openEnvelope(envelope, context, { id: 'alice/phone', keyPair: alice })).toThrow(
        'this device is not a recipient',
      );
      expect(() => openEnvelope(envelope, context, { id: 'bob/phone', keyPair: alice })).toThrow(
        'the message key does not open',
      );
    });

    it('of another version', () => {
      const other = envelope.slice();
      other[0] = 2;
      expect(() => open(other)).toThrow('unknown envelope version 2');
    });
  });

  it('prints a fingerprint of 16 groups of 4 hex digits that changes with the key', () => {
    expect(fingerprint(bob.publicKey)).toMatch(/^[0-9a-f]{4}( [0-9a-f]{4}){15}$/);
    expect(fingerprint(bob.publicKey)).toBe(fingerprint(keyPairFrom(0x42).publicKey));
    expect(fingerprint(bob.publicKey)).not.toBe(fingerprint(alice.publicKey));
  });
});

/**
 * Pinned from this implementation; the layout test above checks the same construction
 * against libsodium's own crypto_box_seal_open and AEAD decrypt.
 */
const KNOWN_ANSWER = [
  '01', // version
  '101112131415161718191a1b1c1d1e1f2021222324252627', // nonce
  '0002', // recipient count
  '0009', // id length
  '626f622f70686f6e65', // "bob/phone"
  'ea684d18e78b20cc4ecc6ffbf99f1e51a754a28814083dfe0acdc092ff7fa01da4576af9e4ad5e87f2848021db4410e4f649b8d927291e507aa24d42d96f4f82af949c1f006fc51e2a13eaa8fbed9e96', // sealed key
  '000b', // id length
  '616c6963652f70686f6e65', // "alice/phone"
  'f14b5173130a1b80687f273d49e8f4740a793a949b83b105837f2a61e8fee14f9ebc4da61f72146e843dcde328be099409658786593adf25e3bf060cb147d82128344b632e738c9094e447313789673f', // sealed key
  '03d0ec1db3b38081dccc2bd70cd27e185c371ec35c', // body: 5 bytes + 16-byte tag
].join('');
