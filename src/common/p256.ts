import { createECDH, ECDH } from 'node:crypto';

/**
 * Key checks shared by the configuration (VAPID keys) and device registration (a
 * browser's PushSubscription keys). Web Push (RFC 8291/8292) writes P-256 keys as
 * unpadded base64url of the raw bytes.
 */

const BASE64URL = /^[A-Za-z0-9_-]*={0,2}$/;

/** The bytes of a base64url string (padding tolerated); null when it is not base64url. */
export function decodeBase64Url(text: string): Buffer | null {
  if (!BASE64URL.test(text)) return null;
  const bytes = Buffer.from(text, 'base64url');
  // Buffer ignores stray trailing bits; a re-encoding that differs means the text was not canonical.
  return bytes.toString('base64url') === text.replace(/=+$/, '') ? bytes : null;
}

/** True when `bytes` is an uncompressed P-256 point (0x04 ‖ X ‖ Y, 65 bytes) on the curve. */
export function isP256PublicPoint(bytes: Uint8Array): boolean {
  if (bytes.length !== 65 || bytes[0] !== 0x04) return false;
  try {
    // OpenSSL decodes the point, which fails for one that is not on the curve.
    ECDH.convertKey(bytes, 'prime256v1');
    return true;
  } catch {
    return false;
  }
}

/** The uncompressed public point of a P-256 private scalar; null when it is not one. */
export function p256PublicPointOf(privateScalar: Uint8Array): Buffer | null {
  if (privateScalar.length !== 32) return null;
  try {
    const ecdh = createECDH('prime256v1');
    ecdh.setPrivateKey(privateScalar);
    return ecdh.getPublicKey();
  } catch {
    // Zero, or not below the group order.
    return null;
  }
}
