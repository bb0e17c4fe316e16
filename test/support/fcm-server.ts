// A local stand-in for Google's OAuth2 token endpoint and FCM HTTP v1, over HTTPS on
// 127.0.0.1 (self-signed certificate, see tls.ts). It checks what Google checks: the
// JWT-bearer grant's RS256 signature against the service account's public key, its
// issuer, audience (the token_uri) and scope; each send's bearer token (one it issued),
// project and message shape. Sends are answered as scripted per registration token
// (200 by default), in FCM's error format, and everything is recorded.
import { generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import https from 'node:https';
import type { AddressInfo } from 'node:net';

import { jwtVerify } from 'jose';

import { selfSignedCertificate } from './tls.js';
import { waitForCount } from './wait-for-count.js';

const FCM_TEST_PROJECT = 'chat-test-1234';
const CLIENT_EMAIL = `push@${FCM_TEST_PROJECT}.iam.gserviceaccount.com`;
const SCOPE = 'https://www.googleapis.com/auth/firebase.messaging';
const STATUS_BY_CODE: Record<number, string> = {
  400: 'INVALID_ARGUMENT',
  401: 'UNAUTHENTICATED',
  403: 'PERMISSION_DENIED',
  404: 'NOT_FOUND',
  429: 'RESOURCE_EXHAUSTED',
  500: 'INTERNAL',
  503: 'UNAVAILABLE',
};

/** A scripted answer to a send: a status, FCM's errorCode, a Retry-After in seconds. */
interface FcmReply {
  status: number;
  errorCode?: string;
  retryAfterSec?: number;
}

/** One send the server received, with what it answered. */
export interface RecordedFcmSend {
  /** The registration token the message was for ('' when the body had none). */
  token: string;
  authorization: string;
  path: string;
  /** The parsed JSON body. */
  body: unknown;
  raw: string;
  status: number;
  errorCode?: string;
  at: number;
}

/** One grant the token endpoint received. */
interface RecordedGrant {
  /** The assertion verified (signature, iss, aud, scope, lifetime). */
  valid: boolean;
  problem?: string;
  issued?: string;
  at: number;
}

export interface FakeFcm {
  port: number;
  cert: string;
  /** FCM_SERVICE_ACCOUNT (token_uri on this server) and FCM_BASE_URL. */
  env: Record<string, string>;
  tokenUri: string;
  sends: RecordedFcmSend[];
  grants: RecordedGrant[];
  /** Answers the next sends for `token` with `replies`, in order; then 200 again. */
  script(token: string, replies: FcmReply[]): void;
  /** Makes every access token issued so far unknown (as a revocation would). */
  revokeAccessTokens(): void;
  sendsFor(token: string): RecordedFcmSend[];
  waitFor(token: string, count: number, timeoutMs?: number): Promise<RecordedFcmSend[]>;
  close(): Promise<void>;
}

/** A random FCM registration token, shaped like Android's. */
export const fcmToken = () => `${randomBytes(8).toString('base64url')}:APA91b${randomBytes(100).toString('base64url')}`;

/** What FCM accepts as a v1 message for one Android token; a problem, or null. */
function messageProblem(body: unknown): string | null {
  const message = (body as { message?: Record<string, unknown> } | null)?.message;
  if (typeof message !== 'object' || message === null) return 'message is required';
  const allowed = new Set(['token', 'data', 'android', 'notification', 'name', 'fcm_options', 'fcmOptions']);
  const unknown = Object.keys(message).filter((key) => !allowed.has(key));
  if (unknown.length > 0) return `Unknown name "${unknown[0]}" at 'message'`;
  if (typeof message.token !== 'string' || message.token === '') return 'message.token is required';
  const data = message.data;
  if (
    data !== undefined &&
    (typeof data !== 'object' || Object.values(data as object).some((v) => typeof v !== 'string'))
  ) {
    return 'message.data values must be strings';
  }
  const android = message.android as Record<string, unknown> | undefined;
  if (android !== undefined) {
    const knownAndroid = new Set([
      'priority',
      'ttl',
      'collapseKey',
      'collapse_key',
      'data',
      'notification',
      'restrictedPackageName',
      'directBootOk',
    ]);
    const unknownAndroid = Object.keys(android).filter((key) => !knownAndroid.has(key));
    if (unknownAndroid.length > 0) return `Unknown name "${unknownAndroid[0]}" at 'message.android'`;
    if (android.priority !== undefined && !['NORMAL', 'HIGH', 'normal', 'high'].includes(android.priority as string)) {
      return 'Invalid value at message.android.priority';
    }
    if (android.ttl !== undefined && (typeof android.ttl !== 'string' || !/^\d+(\.\d{1,9})?s$/.test(android.ttl))) {
      return 'Invalid value at message.android.ttl (Duration)';
    }
  }
  return null;
}

function errorBody(status: number, message: string, errorCode?: string): string {
  return JSON.stringify({
    error: {
      code: status,
      message,
      status: STATUS_BY_CODE[status] ?? 'UNKNOWN',
      details: errorCode ? [{ '@type': 'type.googleapis.com/google.firebase.fcm.v1.FcmError', errorCode }] : [],
    },
  });
}

async function verifyGrant(form: URLSearchParams, publicKey: KeyObject, tokenUri: string): Promise<string | null> {
  if (form.get('grant_type') !== 'urn:ietf:params:oauth:grant-type:jwt-bearer') return 'unsupported grant_type';
  const assertion = form.get('assertion');
  if (!assertion) return 'no assertion';
  try {
    const { payload } = await jwtVerify(assertion, publicKey, {
      algorithms: ['RS256'],
      issuer: CLIENT_EMAIL,
      audience: tokenUri,
      requiredClaims: ['iat', 'exp'],
    });
    if (payload.scope !== SCOPE) return `wrong scope ${String(payload.scope)}`;
    if (payload.exp! - payload.iat! > 3_600) return 'assertion lives longer than an hour';
    return null;
  } catch (error) {
    return `bad assertion: ${error instanceof Error ? error.message : String(error)}`;
  }
}

export async function startFakeFcm(): Promise<FakeFcm> {
  const tls = await selfSignedCertificate();
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const sends: RecordedFcmSend[] = [];
  const grants: RecordedGrant[] = [];
  const scripts = new Map<string, FcmReply[]>();
  const accessTokens = new Set<string>();

  const server = https.createServer({ key: tls.key, cert: tls.cert });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const origin = `https://127.0.0.1:${port}`;
  const tokenUri = `${origin}/oauth2/token`;

  server.on('request', (request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      const reply = (status: number, body: string, headers: Record<string, string> = {}) => {
        response.writeHead(status, { 'content-type': 'application/json; charset=UTF-8', ...headers });
        response.end(body);
      };
      if (request.method === 'POST' && request.url === '/oauth2/token') {
        void verifyGrant(new URLSearchParams(raw), publicKey, tokenUri).then((problem) => {
          if (problem) {
            grants.push({ valid: false, problem, at: Date.now() });
            return reply(400, JSON.stringify({ error: 'invalid_grant', error_description: problem }));
          }
          const issued = `ya29.${randomBytes(24).toString('base64url')}`;
          accessTokens.add(issued);
          grants.push({ valid: true, issued, at: Date.now() });
          reply(200, JSON.stringify({ access_token: issued, expires_in: 3_599, token_type: 'Bearer' }));
        });
        return;
      }
      const path = request.url ?? '';
      const authorization = request.headers.authorization ?? '';
      let body: unknown;
      try {
        body = JSON.parse(raw);
      } catch {
        body = undefined;
      }
      const token = (body as { message?: { token?: unknown } } | undefined)?.message?.token;
      const record = (status: number, errorCode?: string) =>
        sends.push({
          token: typeof token === 'string' ? token : '',
          authorization,
          path,
          body,
          raw,
          status,
          errorCode,
          at: Date.now(),
        });
      if (request.method !== 'POST' || path !== `/v1/projects/${FCM_TEST_PROJECT}/messages:send`) {
        record(404);
        return reply(404, errorBody(404, 'no such method'));
      }
      const bearer = /^Bearer (\S+)$/.exec(authorization)?.[1];
      if (!bearer || !accessTokens.has(bearer)) {
        record(401);
        return reply(401, errorBody(401, 'Request had invalid authentication credentials.'));
      }
      const problem = body === undefined ? 'Invalid JSON payload received.' : messageProblem(body);
      if (problem) {
        record(400, 'INVALID_ARGUMENT');
        return reply(400, errorBody(400, problem, 'INVALID_ARGUMENT'));
      }
      const scripted = (typeof token === 'string' ? scripts.get(token)?.shift() : undefined) ?? { status: 200 };
      record(scripted.status, scripted.errorCode);
      if (scripted.status === 200) {
        return reply(
          200,
          JSON.stringify({ name: `projects/${FCM_TEST_PROJECT}/messages/${randomBytes(8).toString('hex')}` }),
        );
      }
      reply(
        scripted.status,
        errorBody(scripted.status, 'scripted failure', scripted.errorCode),
        scripted.retryAfterSec === undefined ? {} : { 'retry-after': String(scripted.retryAfterSec) },
      );
    });
  });

  const sendsFor = (token: string) => sends.filter((s) => s.token === token);
  return {
    port,
    cert: tls.cert,
    tokenUri,
    env: {
      FCM_SERVICE_ACCOUNT: JSON.stringify({
        type: 'service_account',
        project_id: FCM_TEST_PROJECT,
        private_key_id: randomBytes(20).toString('hex'),
        private_key: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
        client_email: CLIENT_EMAIL,
        client_id: '1234567890',
        auth_uri: 'https://accounts.google.com/o/oauth2/auth',
        token_uri: tokenUri,
      }),
      FCM_BASE_URL: origin,
    },
    sends,
    grants,
    script: (token, replies) => scripts.set(token, [...replies]),
    revokeAccessTokens: () => accessTokens.clear(),
    sendsFor,
    waitFor: (token, count, timeoutMs = 10_000) => waitForCount(() => sendsFor(token), count, timeoutMs, 'FCM'),
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
