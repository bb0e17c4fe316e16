// A local stand-in for a browser's push service (RFC 8030) over HTTPS on 127.0.0.1
// (self-signed certificate, see tls.ts), and for the browser itself: subscribe() makes a
// P-256 key pair and a 16-byte auth secret as a browser does, and the server decrypts
// each message's aes128gcm body with them (RFC 8291, with node:crypto: ECDH, HKDF,
// AES-128-GCM). It verifies the VAPID authorization (RFC 8292: ES256 JWT signed by the
// key in `k`, which must be the service's VAPID key; aud = this origin; sub; exp within
// 24 h) and the TTL, Urgency and Topic headers, answers as scripted per subscription
// (201 by default) and records everything.
import { createDecipheriv, createECDH, hkdfSync, randomBytes, randomUUID, type ECDH } from 'node:crypto';
import https from 'node:https';
import type { AddressInfo } from 'node:net';

import { decodeProtectedHeader, importJWK, jwtVerify } from 'jose';

import { selfSignedCertificate } from './tls.js';
import { waitForCount } from './wait-for-count.js';

export const VAPID_TEST_SUBJECT = 'mailto:push-ops@example.com';

/** A browser's subscription as it PUTs it (PushSubscription.toJSON()). */
export interface BrowserSubscription {
  endpoint: string;
  expirationTime: null;
  keys: { p256dh: string; auth: string };
}

interface WebPushReply {
  status: number;
  retryAfterSec?: number;
}

/** One message the push service received, with what it answered. */
interface RecordedWebPush {
  /** The subscription's id (the endpoint's last segment). */
  id: string;
  headers: Record<string, string>;
  /** The decrypted payload, parsed as JSON; undefined when it could not be decrypted. */
  payload: unknown;
  /** The decrypted bytes as text. */
  plaintext?: string;
  /** What was wrong with the request, when it was refused before the script. */
  problem?: string;
  /** The VAPID JWT's claims. */
  vapid?: { aud?: unknown; sub?: unknown; exp?: number };
  status: number;
  at: number;
}

export interface FakeWebPush {
  port: number;
  origin: string;
  cert: string;
  /** VAPID_PUBLIC_KEY, VAPID_PRIVATE_KEY, VAPID_SUBJECT for the service under test. */
  env: Record<string, string>;
  pushes: RecordedWebPush[];
  /** A new subscription, as a browser would make one against this push service. */
  subscribe(): BrowserSubscription;
  script(subscription: BrowserSubscription, replies: WebPushReply[]): void;
  pushesFor(subscription: BrowserSubscription): RecordedWebPush[];
  waitFor(subscription: BrowserSubscription, count: number, timeoutMs?: number): Promise<RecordedWebPush[]>;
  close(): Promise<void>;
}

const idOf = (endpoint: string) => new URL(endpoint).pathname.split('/').pop() ?? '';

const hkdf = (ikm: Buffer, salt: Buffer, info: Buffer, length: number) =>
  Buffer.from(hkdfSync('sha256', ikm, salt, info, length));

/**
 * Decrypts an aes128gcm body (RFC 8188 framing) sent to a subscription (RFC 8291):
 * header salt(16) ‖ rs(4) ‖ idlen(1) ‖ keyid = the sender's ephemeral public key.
 */
function decryptAes128gcm(body: Buffer, receiver: ECDH, authSecret: Buffer): Buffer {
  if (body.length < 21) throw new Error('body shorter than the aes128gcm header');
  const salt = body.subarray(0, 16);
  const recordSize = body.readUInt32BE(16);
  const idLength = body[20];
  const senderPublic = body.subarray(21, 21 + idLength);
  if (idLength !== 65) throw new Error(`keyid must be the sender's 65-byte P-256 key, got ${idLength} bytes`);
  const ciphertext = body.subarray(21 + idLength);
  if (ciphertext.length > recordSize) throw new Error('more than one record: the stand-in takes one');
  const ecdhSecret = receiver.computeSecret(senderPublic);
  const keyInfo = Buffer.concat([Buffer.from('WebPush: info\0'), receiver.getPublicKey(), senderPublic]);
  const ikm = hkdf(ecdhSecret, authSecret, keyInfo, 32);
  const cek = hkdf(ikm, salt, Buffer.from('Content-Encoding: aes128gcm\0'), 16);
  const nonce = hkdf(ikm, salt, Buffer.from('Content-Encoding: nonce\0'), 12);
  const decipher = createDecipheriv('aes-128-gcm', cek, nonce);
  decipher.setAuthTag(ciphertext.subarray(ciphertext.length - 16));
  const padded = Buffer.concat([decipher.update(ciphertext.subarray(0, ciphertext.length - 16)), decipher.final()]);
  // Plaintext ‖ 0x02 (last record) ‖ zero padding.
  let end = padded.length - 1;
  while (end >= 0 && padded[end] === 0) end -= 1;
  if (end < 0 || padded[end] !== 0x02) throw new Error('the last record must end with the 0x02 delimiter');
  return padded.subarray(0, end);
}

/** Checks `Authorization: vapid t=<jwt>, k=<key>`; the problem, or null with the claims. */
async function checkVapid(
  authorization: string | undefined,
  origin: string,
  vapidPublicKey: string,
): Promise<{ problem: string | null; claims?: RecordedWebPush['vapid'] }> {
  const match = /^vapid t=([^,\s]+),\s*k=([A-Za-z0-9_-]+)$/.exec(authorization ?? '');
  if (!match) return { problem: 'no vapid authorization' };
  const [, jwt, k] = match;
  if (k !== vapidPublicKey) return { problem: 'k is not the key the subscription was made with' };
  const point = Buffer.from(k, 'base64url');
  try {
    if (decodeProtectedHeader(jwt).alg !== 'ES256') return { problem: 'alg must be ES256' };
    const key = await importJWK(
      {
        kty: 'EC',
        crv: 'P-256',
        x: point.subarray(1, 33).toString('base64url'),
        y: point.subarray(33, 65).toString('base64url'),
      },
      'ES256',
    );
    const { payload } = await jwtVerify(jwt, key, {
      algorithms: ['ES256'],
      audience: origin,
      subject: VAPID_TEST_SUBJECT,
    });
    const claims = { aud: payload.aud, sub: payload.sub, exp: payload.exp };
    if (payload.exp === undefined) return { problem: 'exp is required', claims };
    if (payload.exp > Date.now() / 1000 + 24 * 3_600) return { problem: 'exp is more than 24 hours ahead', claims };
    return { problem: null, claims };
  } catch (error) {
    return { problem: `bad vapid jwt: ${error instanceof Error ? error.message : String(error)}` };
  }
}

/**
 * A VAPID key pair as `web-push generate-vapid-keys` prints it. Node's `ECDH.getPrivateKey()`
 * drops leading zero bytes (1 key in 256 comes out 31 bytes long), and web-push refuses a private
 * key that is not 32 bytes, so it is padded here the way web-push pads it.
 */
export function generateVapidKeys(): { publicKey: string; privateKey: string } {
  const ecdh = createECDH('prime256v1');
  ecdh.generateKeys();
  const privateKey = Buffer.alloc(32);
  const raw = ecdh.getPrivateKey();
  raw.copy(privateKey, 32 - raw.length);
  return { publicKey: ecdh.getPublicKey().toString('base64url'), privateKey: privateKey.toString('base64url') };
}

export async function startFakeWebPush(): Promise<FakeWebPush> {
  const tls = await selfSignedCertificate();
  const vapid = generateVapidKeys();
  const vapidPublicKey = vapid.publicKey;
  const browsers = new Map<string, { ecdh: ECDH; auth: Buffer }>();
  const scripts = new Map<string, WebPushReply[]>();
  const pushes: RecordedWebPush[] = [];

  const server = https.createServer({ key: tls.key, cert: tls.cert });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const origin = `https://127.0.0.1:${port}`;

  server.on('request', (request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const body = Buffer.concat(chunks);
      const id = idOf(`${origin}${request.url ?? '/'}`);
      const headers = Object.fromEntries(
        Object.entries(request.headers).map(([name, value]) => [
          name,
          Array.isArray(value) ? value.join(',') : String(value),
        ]),
      );
      const answer = (record: Omit<RecordedWebPush, 'id' | 'headers' | 'at'>, retryAfterSec?: number) => {
        pushes.push({ id, headers, at: Date.now(), ...record });
        response.writeHead(record.status, retryAfterSec === undefined ? {} : { 'retry-after': String(retryAfterSec) });
        response.end();
      };
      void checkVapid(headers.authorization, origin, vapidPublicKey).then(({ problem, claims }) => {
        const browser = browsers.get(id);
        if (request.method !== 'POST' || !browser)
          return answer({ payload: undefined, status: 404, problem: 'no such subscription' });
        if (problem) return answer({ payload: undefined, status: 403, problem, vapid: claims });
        const headerProblem =
          headers['content-encoding'] !== 'aes128gcm'
            ? 'Content-Encoding must be aes128gcm'
            : !/^\d+$/.test(headers.ttl ?? '')
              ? 'TTL is required'
              : headers.urgency !== undefined && !['very-low', 'low', 'normal', 'high'].includes(headers.urgency)
                ? 'bad Urgency'
                : headers.topic !== undefined && !/^[A-Za-z0-9_-]{1,32}$/.test(headers.topic)
                  ? 'Topic must be at most 32 URL-safe base64 characters'
                  : null;
        if (headerProblem) return answer({ payload: undefined, status: 400, problem: headerProblem, vapid: claims });
        let plaintext: string;
        try {
          plaintext = decryptAes128gcm(body, browser.ecdh, browser.auth).toString('utf8');
        } catch (error) {
          const why = `cannot decrypt: ${error instanceof Error ? error.message : String(error)}`;
          return answer({ payload: undefined, status: 400, problem: why, vapid: claims });
        }
        let payload: unknown;
        try {
          payload = JSON.parse(plaintext);
        } catch {
          payload = undefined;
        }
        const scripted = scripts.get(id)?.shift() ?? { status: 201 };
        answer({ payload, plaintext, status: scripted.status, vapid: claims }, scripted.retryAfterSec);
      });
    });
  });

  const pushesFor = (subscription: BrowserSubscription) => pushes.filter((p) => p.id === idOf(subscription.endpoint));
  return {
    port,
    origin,
    cert: tls.cert,
    env: {
      VAPID_PUBLIC_KEY: vapidPublicKey,
      VAPID_PRIVATE_KEY: vapid.privateKey,
      VAPID_SUBJECT: VAPID_TEST_SUBJECT,
    },
    pushes,
    subscribe: () => {
      const ecdh = createECDH('prime256v1');
      ecdh.generateKeys();
      const auth = randomBytes(16);
      const id = randomUUID();
      browsers.set(id, { ecdh, auth });
      return {
        endpoint: `${origin}/push/${id}`,
        expirationTime: null,
        keys: { p256dh: ecdh.getPublicKey().toString('base64url'), auth: auth.toString('base64url') },
      };
    },
    script: (subscription, replies) => scripts.set(idOf(subscription.endpoint), [...replies]),
    pushesFor,
    waitFor: (subscription, count, timeoutMs = 10_000) =>
      waitForCount(() => pushesFor(subscription), count, timeoutMs, 'the Web Push service'),
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
