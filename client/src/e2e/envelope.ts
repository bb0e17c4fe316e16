import sodium from 'libsodium-wrappers';

/**
 * The e2e envelope, version 1 (client/README.md "End-to-end encryption"): what goes on
 * the wire as `ciphertext` (base64) for a message in an e2e conversation.
 *
 *     version      1 byte   0x01
 *     nonce       24 bytes  XChaCha20-Poly1305-IETF nonce of the body
 *     count        2 bytes  number of recipients, big-endian
 *     count ×      recipient: id length (2 bytes, big-endian), id (UTF-8 "userId/deviceId"),
 *                  sealed message key (80 bytes: crypto_box_seal of the 32-byte key)
 *     body         the rest: XChaCha20-Poly1305-IETF of the UTF-8 body under the message
 *                  key, with the associated data below (body length + 16 bytes)
 *
 * The associated data is the UTF-8 of
 * `msgsvc-e2e/1\n{conversationId}\n{senderId}\n{senderDeviceId}\n{clientMsgId}\n{contentType}`:
 * none of the fields before the last can hold a newline, so the encoding is unambiguous.
 * A body moved to another conversation, sender, device or clientMsgId, or relabelled
 * with another content type, fails to open.
 *
 * Randomness is injectable so that a known-answer test can pin the exact bytes; the
 * sealed key is built as libsodium's `crypto_box_seal` builds it (an ephemeral X25519
 * key pair, nonce = BLAKE2b-192(ephemeral pk ‖ recipient pk)), so any libsodium's
 * `crypto_box_seal_open` opens it.
 */

const ENVELOPE_VERSION = 1;
const NONCE_BYTES = 24;
const MESSAGE_KEY_BYTES = 32;
/** crypto_box_seal of a 32-byte key: ephemeral public key (32) + key (32) + MAC (16). */
export const SEALED_KEY_BYTES = 80;
const TAG_BYTES = 16;
/** version + nonce + recipient count */
export const HEADER_BYTES = 1 + NONCE_BYTES + 2;
const AAD_LABEL = 'msgsvc-e2e/1';

/** What the associated data binds: where, by whom and under which id a body was sent. */
export interface EnvelopeContext {
  conversationId: string;
  senderId: string;
  senderDeviceId: string;
  clientMsgId: string;
  contentType: string;
}

export interface RecipientKey {
  /** `userId/deviceId` */
  id: string;
  /** 32-byte X25519 public key */
  publicKey: Uint8Array;
}

export interface DeviceKeyPair {
  publicKey: Uint8Array;
  secretKey: Uint8Array;
}

/** Where the envelope's random bytes come from: libsodium's CSPRNG unless a test pins them. */
export type RandomBytes = (length: number) => Uint8Array;

/** Why an envelope did not open. */
class EnvelopeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'EnvelopeError';
  }
}

/** libsodium is ready to use (its WebAssembly is loaded). */
export async function sodiumReady(): Promise<void> {
  await sodium.ready;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

export function associatedData(context: EnvelopeContext): Uint8Array {
  const fields = [
    AAD_LABEL,
    context.conversationId,
    context.senderId,
    context.senderDeviceId,
    context.clientMsgId,
    context.contentType,
  ];
  return encoder.encode(fields.join('\n'));
}

/** The envelope's size in bytes for a body of `bodyBytes` UTF-8 bytes sealed to `recipientIds`. */
export function envelopeSize(bodyBytes: number, recipientIds: readonly string[]): number {
  let size = HEADER_BYTES + bodyBytes + TAG_BYTES;
  for (const id of recipientIds) size += 2 + encoder.encode(id).length + SEALED_KEY_BYTES;
  return size;
}

/**
 * Encrypts `body` under a fresh message key and seals that key to each recipient.
 *
 * @example
 *   const envelope = sealEnvelope('hi', context, [{ id: 'bob/phone', publicKey }]);
 *   socket.emit('send', { ..., ciphertext: toBase64(envelope) });
 */
export function sealEnvelope(
  body: string,
  context: EnvelopeContext,
  recipients: readonly RecipientKey[],
  randomBytes: RandomBytes = (length) => sodium.randombytes_buf(length),
): Uint8Array {
  if (recipients.length > 0xffff) throw new RangeError('too many recipients');
  const nonce = randomBytes(NONCE_BYTES);
  const messageKey = randomBytes(MESSAGE_KEY_BYTES);
  try {
    const sealed = recipients.map((recipient) => {
      const id = encoder.encode(recipient.id);
      if (id.length > 0xffff) throw new RangeError('recipient id too long');
      return { id, key: sealKey(messageKey, recipient.publicKey, randomBytes(32)) };
    });
    const encrypted = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
      encoder.encode(body),
      associatedData(context),
      null,
      nonce,
      messageKey,
    );
    const size = HEADER_BYTES + sealed.reduce((sum, r) => sum + 2 + r.id.length + SEALED_KEY_BYTES, 0);
    const envelope = new Uint8Array(size + encrypted.length);
    const view = new DataView(envelope.buffer);
    envelope[0] = ENVELOPE_VERSION;
    envelope.set(nonce, 1);
    view.setUint16(1 + NONCE_BYTES, sealed.length);
    let at = HEADER_BYTES;
    for (const recipient of sealed) {
      view.setUint16(at, recipient.id.length);
      envelope.set(recipient.id, at + 2);
      envelope.set(recipient.key, at + 2 + recipient.id.length);
      at += 2 + recipient.id.length + SEALED_KEY_BYTES;
    }
    envelope.set(encrypted, at);
    return envelope;
  } finally {
    sodium.memzero(messageKey);
  }
}

/** The recipients an envelope names, in order (no key needed). */
export function envelopeRecipients(envelope: Uint8Array): string[] {
  return parse(envelope).recipients.map((recipient) => recipient.id);
}

/** Opens the body with this device's key pair; throws EnvelopeError when it cannot. */
export function openEnvelope(
  envelope: Uint8Array,
  context: EnvelopeContext,
  self: { id: string; keyPair: DeviceKeyPair },
): string {
  const parsed = parse(envelope);
  const mine = parsed.recipients.find((recipient) => recipient.id === self.id);
  if (!mine) throw new EnvelopeError('this device is not a recipient');
  let messageKey: Uint8Array;
  try {
    messageKey = sodium.crypto_box_seal_open(mine.sealedKey, self.keyPair.publicKey, self.keyPair.secretKey);
  } catch {
    throw new EnvelopeError('the message key does not open with this device key');
  }
  try {
    const body = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
      null,
      parsed.body,
      associatedData(context),
      parsed.nonce,
      messageKey,
    );
    return decoder.decode(body);
  } catch {
    throw new EnvelopeError('the body does not authenticate');
  } finally {
    sodium.memzero(messageKey);
  }
}

/** A new X25519 key pair for this device. */
export function generateDeviceKeyPair(): DeviceKeyPair {
  const pair = sodium.crypto_box_keypair();
  return { publicKey: pair.publicKey, secretKey: pair.privateKey };
}

/**
 * A public key's fingerprint for comparing out of band: BLAKE2b-256 of the 32-byte key,
 * in hex, in 16 groups of 4.
 */
export function fingerprint(publicKey: Uint8Array): string {
  const hex = sodium.to_hex(sodium.crypto_generichash(32, publicKey, null));
  return hex.match(/.{4}/g)!.join(' ');
}

export function toBase64(bytes: Uint8Array): string {
  return sodium.to_base64(bytes, sodium.base64_variants.ORIGINAL);
}

export function fromBase64(text: string): Uint8Array {
  return sodium.from_base64(text, sodium.base64_variants.ORIGINAL);
}

/** crypto_box_seal with the ephemeral key pair made from `seed`. */
function sealKey(messageKey: Uint8Array, recipientPublicKey: Uint8Array, seed: Uint8Array): Uint8Array {
  if (recipientPublicKey.length !== sodium.crypto_box_PUBLICKEYBYTES) throw new RangeError('bad public key');
  const ephemeral = sodium.crypto_box_seed_keypair(seed);
  try {
    const nonceInput = new Uint8Array(64);
    nonceInput.set(ephemeral.publicKey, 0);
    nonceInput.set(recipientPublicKey, 32);
    const nonce = sodium.crypto_generichash(sodium.crypto_box_NONCEBYTES, nonceInput, null);
    const boxed = sodium.crypto_box_easy(messageKey, nonce, recipientPublicKey, ephemeral.privateKey);
    const sealed = new Uint8Array(SEALED_KEY_BYTES);
    sealed.set(ephemeral.publicKey, 0);
    sealed.set(boxed, 32);
    return sealed;
  } finally {
    sodium.memzero(ephemeral.privateKey);
    sodium.memzero(seed);
  }
}

interface ParsedEnvelope {
  nonce: Uint8Array;
  recipients: { id: string; sealedKey: Uint8Array }[];
  body: Uint8Array;
}

function parse(envelope: Uint8Array): ParsedEnvelope {
  if (envelope.length < HEADER_BYTES + TAG_BYTES) throw new EnvelopeError('envelope too short');
  if (envelope[0] !== ENVELOPE_VERSION) throw new EnvelopeError(`unknown envelope version ${envelope[0]}`);
  const view = new DataView(envelope.buffer, envelope.byteOffset, envelope.byteLength);
  const nonce = envelope.subarray(1, 1 + NONCE_BYTES);
  const count = view.getUint16(1 + NONCE_BYTES);
  const recipients: ParsedEnvelope['recipients'] = [];
  let at = HEADER_BYTES;
  for (let i = 0; i < count; i++) {
    if (at + 2 > envelope.length) throw new EnvelopeError('envelope truncated');
    const idLength = view.getUint16(at);
    const end = at + 2 + idLength + SEALED_KEY_BYTES;
    if (end > envelope.length) throw new EnvelopeError('envelope truncated');
    let id: string;
    try {
      id = decoder.decode(envelope.subarray(at + 2, at + 2 + idLength));
    } catch {
      throw new EnvelopeError('recipient id is not UTF-8');
    }
    recipients.push({ id, sealedKey: envelope.subarray(at + 2 + idLength, end) });
    at = end;
  }
  if (envelope.length - at < TAG_BYTES) throw new EnvelopeError('envelope truncated');
  return { nonce, recipients, body: envelope.subarray(at) };
}
