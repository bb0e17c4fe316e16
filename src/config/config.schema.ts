import { createPrivateKey } from 'node:crypto';

import { z } from 'zod';

import { decodeBase64Url, isP256PublicPoint, p256PublicPointOf } from '../common/p256.js';

/** Log levels accepted in LOG_LEVEL, most verbose first. */
const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

const boolean = (fallback: boolean) =>
  z
    .string()
    .optional()
    .transform((value, ctx) => {
      if (value === undefined || value === '') return fallback;
      const normalized = value.trim().toLowerCase();
      if (['true', '1', 'yes', 'on'].includes(normalized)) return true;
      if (['false', '0', 'no', 'off'].includes(normalized)) return false;
      ctx.addIssue({ code: 'custom', message: `must be true or false, got "${value}"` });
      return z.NEVER;
    });

/** Like `boolean`, but unset stays undefined: the default depends on another variable. */
const optionalBoolean = () =>
  z
    .string()
    .optional()
    .transform((value, ctx) => {
      if (value === undefined || value.trim() === '') return undefined;
      const normalized = value.trim().toLowerCase();
      if (['true', '1', 'yes', 'on'].includes(normalized)) return true;
      if (['false', '0', 'no', 'off'].includes(normalized)) return false;
      ctx.addIssue({ code: 'custom', message: `must be true or false, got "${value}"` });
      return z.NEVER;
    });

const port = () =>
  z
    .string()
    .optional()
    .transform((value, ctx) => {
      if (value === undefined || value === '') return undefined;
      const parsed = Number(value);
      if (!Number.isInteger(parsed) || parsed < 0 || parsed > 65535) {
        ctx.addIssue({ code: 'custom', message: `must be a port number (0-65535), got "${value}"` });
        return z.NEVER;
      }
      return parsed;
    });

const positiveInt = (fallback: number, max: number) =>
  z
    .string()
    .optional()
    .transform((value, ctx) => {
      if (value === undefined || value.trim() === '') return fallback;
      const parsed = Number(value);
      if (!Number.isInteger(parsed) || parsed < 1 || parsed > max) {
        ctx.addIssue({ code: 'custom', message: `must be a whole number from 1 to ${max}, got "${value}"` });
        return z.NEVER;
      }
      return parsed;
    });

/** As positiveInt, and 0 (turns the limit off). */
const limitOrOff = (fallback: number, max: number) =>
  z
    .string()
    .optional()
    .transform((value, ctx) => {
      if (value === undefined || value.trim() === '') return fallback;
      const parsed = Number(value);
      if (!Number.isInteger(parsed) || parsed < 0 || parsed > max) {
        ctx.addIssue({ code: 'custom', message: `must be a whole number from 0 (off) to ${max}, got "${value}"` });
        return z.NEVER;
      }
      return parsed;
    });

const optionalText = z
  .string()
  .optional()
  .transform((value) => (value === undefined || value.trim() === '' ? undefined : value.trim()));

const urlWithProtocols = (protocols: string[], what: string) =>
  z
    .string({ error: `required: ${what}` })
    .trim()
    .min(1, `required: ${what}`)
    .refine(
      (value) => {
        try {
          return protocols.includes(new URL(value).protocol);
        } catch {
          return false;
        }
      },
      `must be a ${protocols.map((p) => `${p}//`).join(' or ')} URL`,
    );

const redisUrl = urlWithProtocols(['redis:', 'rediss:'], 'Redis connection URL');

/**
 * REDIS_URL: one redis:// or rediss:// URL, or (REDIS_MODE=cluster) a comma-separated list
 * of seed nodes; the cluster's other nodes are discovered from them. Checked against the
 * mode in crossFieldProblems.
 */
const redisUrls = z
  .string({ error: 'required: Redis connection URL' })
  .trim()
  .min(1, 'required: Redis connection URL')
  .superRefine((value, ctx) => {
    for (const url of value.split(',')) {
      const checked = redisUrl.safeParse(url);
      if (!checked.success) ctx.addIssue({ code: 'custom', message: checked.error.issues[0].message });
    }
  });

/** The seed URLs of REDIS_URL (one in single mode). */
export const redisUrlList = (value: string) => value.split(',').map((url) => url.trim());

const LOOPBACK_HOSTS = new Set(['localhost', '127.0.0.1', '[::1]']);

/**
 * An https URL, or http to this machine only (a local proxy or test server): the FCM
 * grant and sends carry credentials, which must not cross a network in the clear.
 */
function secureUrlProblem(value: string): string | null {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return 'must be an https:// URL';
  }
  if (url.protocol === 'https:') return null;
  if (url.protocol === 'http:' && (LOOPBACK_HOSTS.has(url.hostname) || url.hostname.startsWith('127.'))) return null;
  return 'must be an https:// URL (http:// only to localhost)';
}

/** The fields of a Firebase service account JSON that FCM needs. */
interface ServiceAccount {
  projectId: string;
  clientEmail: string;
  privateKey: string;
  privateKeyId?: string;
  tokenUri: string;
}

/** FCM_SERVICE_ACCOUNT: the service account JSON itself (not a path); unset or blank: undefined. */
const serviceAccount = optionalText.transform((value, ctx): ServiceAccount | undefined => {
  if (value === undefined) return undefined;
  const fail = (message: string) => {
    ctx.addIssue({ code: 'custom', message });
    return z.NEVER;
  };
  let json: unknown;
  try {
    json = JSON.parse(value);
  } catch {
    return fail('must be the service account JSON itself (the contents of the file, not its path)');
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    return fail('must be a JSON object (a Firebase service account)');
  }
  const account = json as Record<string, unknown>;
  const text = (field: string) => {
    const found = account[field];
    return typeof found === 'string' && found.trim() !== '' ? found.trim() : undefined;
  };
  const problems: string[] = [];
  if (account.type !== undefined && account.type !== 'service_account') {
    problems.push(`"type" must be "service_account", got ${JSON.stringify(account.type)}`);
  }
  const projectId = text('project_id');
  const clientEmail = text('client_email');
  const privateKey = text('private_key');
  const tokenUri = text('token_uri');
  for (const [field, found] of Object.entries({
    project_id: projectId,
    client_email: clientEmail,
    private_key: privateKey,
    token_uri: tokenUri,
  })) {
    if (found === undefined) problems.push(`"${field}" is missing`);
  }
  if (privateKey !== undefined) {
    try {
      if (createPrivateKey(privateKey).asymmetricKeyType !== 'rsa') problems.push('"private_key" must be an RSA key');
    } catch {
      problems.push('"private_key" is not a PEM private key');
    }
  }
  const uriProblem = tokenUri === undefined ? null : secureUrlProblem(tokenUri);
  if (uriProblem) problems.push(`"token_uri" ${uriProblem}`);
  if (problems.length > 0) return fail(problems.join('; '));
  return {
    projectId: projectId!,
    clientEmail: clientEmail!,
    privateKey: privateKey!,
    privateKeyId: text('private_key_id'),
    tokenUri: tokenUri!,
  };
});

/** FCM_BASE_URL: an origin (no path), without a trailing slash. */
const fcmBaseUrl = optionalText.transform((value, ctx) => {
  if (value === undefined) return undefined;
  const problem = secureUrlProblem(value);
  if (problem || new URL(value).pathname !== '/' || new URL(value).search !== '') {
    ctx.addIssue({
      code: 'custom',
      message: problem ?? 'must be an origin like https://fcm.googleapis.com, without /v1 or another path',
    });
    return z.NEVER;
  }
  return new URL(value).origin;
});

/** A VAPID key in the form `web-push generate-vapid-keys` prints. */
const vapidKey = (kind: 'public' | 'private') =>
  optionalText.refine(
    (value) => {
      if (value === undefined) return true;
      const bytes = decodeBase64Url(value);
      if (bytes === null) return false;
      return kind === 'public' ? isP256PublicPoint(bytes) : p256PublicPointOf(bytes) !== null;
    },
    kind === 'public'
      ? 'must be base64url of an uncompressed P-256 public point (65 bytes), as web-push generate-vapid-keys prints'
      : 'must be base64url of a P-256 private key (32 bytes), as web-push generate-vapid-keys prints',
  );

/** VAPID_SUBJECT: how a push service reaches the operator. */
const vapidSubject = optionalText.refine((value) => {
  if (value === undefined) return true;
  try {
    const url = new URL(value);
    return url.protocol === 'https:' || (url.protocol === 'mailto:' && url.pathname.includes('@'));
  } catch {
    return false;
  }
}, 'must be a mailto: address or an https: URL (RFC 8292 contact), e.g. mailto:ops@example.com');

/** One master key of ENCRYPTION_KEYS. */
export interface MasterKey {
  version: number;
  key: Uint8Array;
}

const encryptionKeys = z
  .string({ error: 'required: comma-separated version:base64 32-byte master keys' })
  .trim()
  .min(1, 'required: comma-separated version:base64 32-byte master keys')
  .transform((value, ctx) => {
    const keys: MasterKey[] = [];
    for (const [index, entry] of value.split(',').entries()) {
      const separator = entry.indexOf(':');
      const versionText = entry.slice(0, separator).trim();
      const version = Number(versionText);
      if (separator < 1 || !/^\d+$/.test(versionText) || version < 1) {
        ctx.addIssue({
          code: 'custom',
          message: `entry ${index + 1} must look like "<version>:<base64 key>" with a positive whole version`,
        });
        continue;
      }
      const key = Buffer.from(entry.slice(separator + 1).trim(), 'base64');
      if (key.length !== 32) {
        ctx.addIssue({
          code: 'custom',
          message: `key version ${version} must be 32 bytes of base64, got ${key.length} bytes`,
        });
        continue;
      }
      if (keys.some((existing) => existing.version === version)) {
        ctx.addIssue({ code: 'custom', message: `key version ${version} is listed twice` });
        continue;
      }
      keys.push({ version, key: new Uint8Array(key) });
    }
    return keys;
  });

/**
 * The environment contract (PROTOCOL.md section 7). Every variable is read here and
 * nowhere else; `parseConfig` reports all problems at once.
 */
export const envSchema = z.object({
  NODE_ENV: z.enum(['development', 'production', 'test']).default('development'),
  PORT: port().transform((value) => value ?? 3000),
  HOST: optionalText.transform((value) => value ?? '0.0.0.0'),
  DATABASE_URL: urlWithProtocols(['postgresql:', 'postgres:'], 'PostgreSQL connection URL'),
  REDIS_URL: redisUrls,
  REDIS_MODE: z.enum(['single', 'cluster'], { error: 'must be single or cluster' }).default('single'),
  JWT_SECRET: optionalText,
  JWT_PUBLIC_KEY: optionalText,
  JWT_JWKS_URL: optionalText,
  JWT_ISSUER: optionalText,
  JWT_AUDIENCE: optionalText,
  ENCRYPTION_KEYS: encryptionKeys,
  ENCRYPTION_ACTIVE_KEY: optionalText,
  CORS_ORIGINS: optionalText,
  APNS_KEY: optionalText,
  APNS_KEY_ID: optionalText,
  APNS_TEAM_ID: optionalText,
  APNS_TOPIC: optionalText,
  APNS_PRODUCTION: boolean(false),
  APNS_HOST: optionalText,
  APNS_PORT: port(),
  FCM_SERVICE_ACCOUNT: serviceAccount,
  FCM_BASE_URL: fcmBaseUrl,
  VAPID_PUBLIC_KEY: vapidKey('public'),
  VAPID_PRIVATE_KEY: vapidKey('private'),
  VAPID_SUBJECT: vapidSubject,
  MIGRATE_ON_START: boolean(true),
  MAX_CONNECTIONS_PER_USER: positiveInt(50, 1_000_000),
  MAX_CONNECTIONS_PER_IP: limitOrOff(2_000, 1_000_000),
  SOCKET_SEND_BUFFER_BYTES: positiveInt(4 * 1024 * 1024, 1024 * 1024 * 1024),
  SHUTDOWN_GRACE_MS: positiveInt(10_000, 600_000),
  // The web chat at /demo; unset: on outside production, off in production.
  DEMO_ENABLED: optionalBoolean(),
  // Tuning beyond the contract's list (all optional).
  MAX_MESSAGE_BYTES: positiveInt(65_536, 1_048_576),
  MAX_BATCH: positiveInt(100, 1_000),
  OFFLINE_QUEUE_MAX: positiveInt(50_000, 10_000_000),
  PRESENCE_TTL_MS: positiveInt(30_000, 3_600_000),
  TYPING_TIMEOUT_MS: positiveInt(6_000, 600_000),
  TYPING_COALESCE_MS: positiveInt(1_000, 60_000),
  RATE_LIMIT_EVENTS_PER_SEC: positiveInt(1_000, 1_000_000),
  RATE_LIMIT_CONNECTS_PER_MIN: positiveInt(600, 1_000_000),
  LOG_LEVEL: optionalText.pipe(
    z
      .enum(LOG_LEVELS, { error: `must be one of ${LOG_LEVELS.join(', ')}` })
      .optional()
      .transform((value) => value ?? 'info'),
  ),
});

/** A problem that involves several variables, or one variable's relation to another. */
export interface ConfigProblem {
  name: string;
  message: string;
}

const present = (value: string | undefined): value is string => value !== undefined && value.trim() !== '';

/**
 * The checks that span variables. They read the raw environment so they run (and report)
 * even when single variables already failed.
 */
export function crossFieldProblems(env: Record<string, string | undefined>): ConfigProblem[] {
  const problems: ConfigProblem[] = [];
  const jwtSources = [env.JWT_SECRET, env.JWT_PUBLIC_KEY, env.JWT_JWKS_URL].filter(present);
  if (jwtSources.length === 0) {
    problems.push({
      name: 'JWT_SECRET',
      message: 'required: JWT_SECRET (HS256, at least 32 bytes), or JWT_PUBLIC_KEY or JWT_JWKS_URL',
    });
  } else if (jwtSources.length > 1) {
    problems.push({ name: 'JWT_SECRET', message: 'set only one of JWT_SECRET, JWT_PUBLIC_KEY and JWT_JWKS_URL' });
  }
  if (present(env.JWT_SECRET) && Buffer.byteLength(env.JWT_SECRET.trim(), 'utf8') < 32) {
    problems.push({ name: 'JWT_SECRET', message: 'must be at least 32 bytes' });
  }
  if (present(env.JWT_PUBLIC_KEY) && !env.JWT_PUBLIC_KEY.includes('-----BEGIN PUBLIC KEY-----')) {
    problems.push({ name: 'JWT_PUBLIC_KEY', message: 'must be a PEM public key (-----BEGIN PUBLIC KEY-----)' });
  }
  if (present(env.JWT_JWKS_URL) && !/^https?:\/\/\S+$/.test(env.JWT_JWKS_URL.trim())) {
    problems.push({ name: 'JWT_JWKS_URL', message: 'must be an http(s) URL' });
  }
  if (present(env.ENCRYPTION_ACTIVE_KEY)) {
    const keys = encryptionKeys.safeParse(env.ENCRYPTION_KEYS);
    const active = Number(env.ENCRYPTION_ACTIVE_KEY);
    if (keys.success && !keys.data.some((key) => key.version === active)) {
      problems.push({
        name: 'ENCRYPTION_ACTIVE_KEY',
        message: `must name a version listed in ENCRYPTION_KEYS, got "${env.ENCRYPTION_ACTIVE_KEY}"`,
      });
    }
  }
  const redisUrlsGiven = present(env.REDIS_URL) ? redisUrlList(env.REDIS_URL) : [];
  if (env.REDIS_MODE?.trim() === 'cluster') {
    // A cluster has database 0 only.
    const withDb = redisUrlsGiven.find((url) => URL.canParse(url) && !['', '/', '/0'].includes(new URL(url).pathname));
    if (withDb !== undefined) {
      problems.push({ name: 'REDIS_URL', message: 'must name no database in cluster mode (a cluster has only 0)' });
    }
  } else if (redisUrlsGiven.length > 1) {
    problems.push({ name: 'REDIS_URL', message: 'lists several URLs: set REDIS_MODE=cluster for a Redis Cluster' });
  }
  const apnsNames = ['APNS_KEY', 'APNS_KEY_ID', 'APNS_TEAM_ID', 'APNS_TOPIC'] as const;
  const apnsSet = apnsNames.filter((name) => present(env[name]));
  if (apnsSet.length > 0 && apnsSet.length < apnsNames.length) {
    for (const name of apnsNames.filter((n) => !present(env[n]))) {
      problems.push({ name, message: 'required when any APNS_* token setting is set (push needs all four)' });
    }
  }
  if (present(env.APNS_KEY) && !env.APNS_KEY.includes('PRIVATE KEY')) {
    problems.push({ name: 'APNS_KEY', message: 'must be the contents of the .p8 key (-----BEGIN PRIVATE KEY-----)' });
  }
  // A socket must hold a few of the largest messages: below that, a client that reads
  // would be cut as a slow consumer for one large message or a page of them.
  const sendBuffer = envSchema.shape.SOCKET_SEND_BUFFER_BYTES.safeParse(env.SOCKET_SEND_BUFFER_BYTES);
  const maxMessage = envSchema.shape.MAX_MESSAGE_BYTES.safeParse(env.MAX_MESSAGE_BYTES);
  if (sendBuffer.success && maxMessage.success && sendBuffer.data < 4 * maxMessage.data) {
    problems.push({
      name: 'SOCKET_SEND_BUFFER_BYTES',
      message: `must be at least 4 × MAX_MESSAGE_BYTES (${4 * maxMessage.data}), got ${sendBuffer.data}`,
    });
  }
  const vapidNames = ['VAPID_PUBLIC_KEY', 'VAPID_PRIVATE_KEY', 'VAPID_SUBJECT'] as const;
  const vapidSet = vapidNames.filter((name) => present(env[name]));
  if (vapidSet.length > 0 && vapidSet.length < vapidNames.length) {
    for (const name of vapidNames.filter((n) => !present(env[n]))) {
      problems.push({ name, message: 'required when any VAPID_* setting is set (web push needs all three)' });
    }
  }
  if (present(env.VAPID_PUBLIC_KEY) && present(env.VAPID_PRIVATE_KEY)) {
    const publicKey = decodeBase64Url(env.VAPID_PUBLIC_KEY.trim());
    const privateKey = decodeBase64Url(env.VAPID_PRIVATE_KEY.trim());
    const derived = privateKey && p256PublicPointOf(privateKey);
    if (publicKey && derived && !derived.equals(publicKey)) {
      problems.push({ name: 'VAPID_PUBLIC_KEY', message: 'is not the public key of VAPID_PRIVATE_KEY' });
    }
  }
  for (const origin of (env.CORS_ORIGINS ?? '')
    .split(',')
    .map((o) => o.trim())
    .filter(Boolean)) {
    if (origin === '*') continue;
    if (!URL.canParse(origin)) {
      problems.push({ name: 'CORS_ORIGINS', message: `"${origin}" is not an origin like https://app.example.com` });
    }
  }
  return problems;
}
