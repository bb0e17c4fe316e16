// A local stand-in for APNs: the HTTP/2 provider API over TLS on 127.0.0.1, with a
// self-signed certificate made at test time (openssl CLI) and an ES256 auth key pair made
// with node:crypto. It checks each request as APNs would (path, headers, JWT, payload
// size), answers as scripted per device token (200 by default), and records everything.
// startAppWithApns() boots the service against it, with test push options (push-services.ts).
import { generateKeyPairSync, randomBytes, randomUUID, type KeyObject } from 'node:crypto';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';

import { decodeProtectedHeader, jwtVerify } from 'jose';

import type { PushOptions } from '../../src/push/push.options.js';
import type { TestApp } from './app.js';
import { startAppWithPushServices, type PushTestApp } from './push-services.js';
import { selfSignedCertificate } from './tls.js';
import { waitForCount } from './wait-for-count.js';

export const APNS_TEST_TOPIC = 'com.example.chat';
const TEAM_ID = 'TEAM123456';
const KEY_ID = 'KEY1234567';
const MAX_PAYLOAD_BYTES = 4_096;
const PUSH_TYPES = new Set(['alert', 'background', 'voip', 'complication', 'fileprovider', 'mdm', 'liveactivity']);

/** A scripted answer: a status and, for errors, APNs' `reason`. */
interface ApnsReply {
  status: number;
  reason?: string;
}

/** One request the server received, with what it answered. */
interface RecordedPush {
  token: string;
  headers: Record<string, string>;
  /** The parsed JSON body (undefined if it was not JSON). */
  payload: unknown;
  /** The body as received. */
  raw: string;
  bytes: number;
  status: number;
  reason?: string;
  /** Date.now() when the request was answered. */
  at: number;
  /** Which TLS connection (HTTP/2 session) it came on, numbered from 1. */
  session: number;
}

export interface FakeApns {
  port: number;
  /** The server's certificate (self-signed): trust it with PushOptions.ca. */
  cert: string;
  /** APNS_* variables for the service under test. */
  env: Record<string, string>;
  requests: RecordedPush[];
  /** HTTP/2 sessions opened so far. */
  sessions(): number;
  /** Answers the next requests for `token` with `replies`, in order; then 200 again. */
  script(token: string, replies: ApnsReply[]): void;
  requestsFor(token: string): RecordedPush[];
  /** Resolves once `count` requests for `token` were answered (fails after `timeoutMs`). */
  waitFor(token: string, count: number, timeoutMs?: number): Promise<RecordedPush[]>;
  close(): Promise<void>;
}

/** A random device token (32 bytes, hex), as iOS hands out. */
export const deviceToken = () => randomBytes(32).toString('hex');

async function verifyProviderToken(authorization: string | undefined, publicKey: KeyObject): Promise<string | null> {
  const match = /^bearer (\S+)$/i.exec(authorization ?? '');
  if (!match) return 'MissingProviderToken';
  try {
    if (decodeProtectedHeader(match[1]).kid !== KEY_ID) return 'InvalidProviderToken';
    await jwtVerify(match[1], publicKey, { algorithms: ['ES256'], issuer: TEAM_ID, maxTokenAge: '1h' });
    return null;
  } catch {
    return 'InvalidProviderToken';
  }
}

/** Checks a request as APNs does; the error answer, or null when it is well-formed. */
async function check(
  headers: http2.IncomingHttpHeaders,
  raw: string,
  publicKey: KeyObject,
): Promise<{ token: string; error: ApnsReply | null }> {
  const token = /^\/3\/device\/([0-9a-fA-F]+)$/.exec(headers[':path'] ?? '')?.[1] ?? '';
  if (headers[':method'] !== 'POST') return { token, error: { status: 405, reason: 'MethodNotAllowed' } };
  if (!token) return { token, error: { status: 404, reason: 'BadPath' } };
  const tokenProblem = await verifyProviderToken(headers.authorization, publicKey);
  if (tokenProblem) return { token, error: { status: 403, reason: tokenProblem } };
  const header = (name: string) => {
    const value = headers[name];
    return Array.isArray(value) ? value.join(',') : value;
  };
  if (!header('apns-topic')) return { token, error: { status: 400, reason: 'MissingTopic' } };
  if (header('apns-topic') !== APNS_TEST_TOPIC) return { token, error: { status: 400, reason: 'TopicDisallowed' } };
  if (!PUSH_TYPES.has(header('apns-push-type') ?? ''))
    return { token, error: { status: 400, reason: 'InvalidPushType' } };
  const priority = header('apns-priority');
  if (priority !== undefined && !['5', '10'].includes(priority)) {
    return { token, error: { status: 400, reason: 'BadPriority' } };
  }
  const expiration = header('apns-expiration');
  if (expiration !== undefined && !/^\d+$/.test(expiration)) {
    return { token, error: { status: 400, reason: 'BadExpirationDate' } };
  }
  if (Buffer.byteLength(header('apns-collapse-id') ?? '') > 64) {
    return { token, error: { status: 400, reason: 'BadCollapseId' } };
  }
  if (Buffer.byteLength(raw) > MAX_PAYLOAD_BYTES) return { token, error: { status: 413, reason: 'PayloadTooLarge' } };
  if (raw === '') return { token, error: { status: 400, reason: 'PayloadEmpty' } };
  return { token, error: null };
}

export async function startFakeApns(): Promise<FakeApns> {
  const tls = await selfSignedCertificate();
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const requests: RecordedPush[] = [];
  const scripts = new Map<string, ApnsReply[]>();
  const open = new Set<http2.ServerHttp2Session>();
  const sessionIds = new WeakMap<http2.Http2Session, number>();
  let sessionCount = 0;

  const server = http2.createSecureServer({ key: tls.key, cert: tls.cert });
  server.on('session', (session) => {
    sessionCount += 1;
    sessionIds.set(session, sessionCount);
    open.add(session);
    session.on('close', () => open.delete(session));
  });
  server.on('stream', (stream, headers) => {
    const chunks: Buffer[] = [];
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      void check(headers, raw, publicKey).then(({ token, error }) => {
        const reply = error ?? scripts.get(token)?.shift() ?? { status: 200 };
        let payload: unknown;
        try {
          payload = JSON.parse(raw);
        } catch {
          payload = undefined;
        }
        requests.push({
          token,
          headers: Object.fromEntries(
            Object.entries(headers)
              .filter(([name]) => !name.startsWith(':'))
              .map(([name, value]) => [name, Array.isArray(value) ? value.join(',') : String(value)]),
          ),
          payload,
          raw,
          bytes: Buffer.byteLength(raw),
          status: reply.status,
          reason: reply.reason,
          at: Date.now(),
          session: stream.session ? (sessionIds.get(stream.session) ?? 0) : 0,
        });
        if (stream.destroyed) return;
        stream.respond({ ':status': reply.status, 'apns-id': headers['apns-id'] ?? randomUUID() });
        stream.end(
          reply.status === 200
            ? undefined
            : JSON.stringify(
                reply.status === 410
                  ? { reason: reply.reason ?? 'Unregistered', timestamp: Date.now() }
                  : { reason: reply.reason ?? 'InternalServerError' },
              ),
        );
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  const requestsFor = (token: string) => requests.filter((r) => r.token === token);
  return {
    port,
    cert: tls.cert,
    env: {
      APNS_KEY: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
      APNS_KEY_ID: KEY_ID,
      APNS_TEAM_ID: TEAM_ID,
      APNS_TOPIC: APNS_TEST_TOPIC,
      APNS_HOST: '127.0.0.1',
      APNS_PORT: String(port),
    },
    requests,
    sessions: () => sessionCount,
    script: (token, replies) => scripts.set(token, [...replies]),
    requestsFor,
    waitFor: (token, count, timeoutMs = 10_000) => waitForCount(() => requestsFor(token), count, timeoutMs, 'APNs'),
    close: async () => {
      for (const session of open) session.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * Boots the service in this process against `apns` alone (see startAppWithPushServices);
 * `reuse` runs it on an earlier one's database and Redis index (a restart).
 */
export function startAppWithApns(
  apns: FakeApns,
  options: Partial<PushOptions> = {},
  reuse?: Pick<TestApp, 'databaseUrl' | 'redisUrl'>,
): Promise<PushTestApp> {
  return startAppWithPushServices({ apns }, options, reuse);
}

export type { PushTestApp } from './push-services.js';
