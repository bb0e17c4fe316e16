import { AppConfig } from './app-config.js';
import { crossFieldProblems, envSchema } from './config.schema.js';

/** Every problem found in the environment, one line each: `NAME: what is wrong`. */
export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(
      `Invalid configuration (${problems.length} problem${problems.length === 1 ? '' : 's'}):\n${problems.map((p) => `  - ${p}`).join('\n')}`,
    );
    this.name = 'ConfigError';
  }
}

/** FCM's own origin; FCM_BASE_URL replaces it (tests, proxies). */
const DEFAULT_FCM_BASE_URL = 'https://fcm.googleapis.com';

const list = (value: string | undefined): string[] =>
  (value ?? '')
    .split(',')
    .map((item) => item.trim())
    .filter(Boolean);

/** Reads and validates an environment; throws ConfigError listing every problem. */
export function parseEnv(env: Record<string, string | undefined>): AppConfig {
  const result = envSchema.safeParse(env);
  const problems = [
    ...(result.success ? [] : result.error.issues).map((issue) => {
      const name = issue.path.length > 0 ? issue.path.join('.') : 'environment';
      return `${name}: ${issue.message}`;
    }),
    ...crossFieldProblems(env).map((problem) => `${problem.name}: ${problem.message}`),
  ];
  if (!result.success || problems.length > 0) throw new ConfigError(problems);
  const e = result.data;
  const versions = e.ENCRYPTION_KEYS.map((key) => key.version);
  return new AppConfig({
    nodeEnv: e.NODE_ENV,
    port: e.PORT,
    host: e.HOST,
    databaseUrl: e.DATABASE_URL,
    redisUrl: e.REDIS_URL,
    redisMode: e.REDIS_MODE,
    jwt: {
      key: e.JWT_SECRET
        ? { kind: 'secret', secret: new TextEncoder().encode(e.JWT_SECRET) }
        : e.JWT_PUBLIC_KEY
          ? { kind: 'publicKey', pem: e.JWT_PUBLIC_KEY.replace(/\\n/g, '\n') }
          : { kind: 'jwks', url: e.JWT_JWKS_URL ?? '' },
      issuer: e.JWT_ISSUER,
      audience: e.JWT_AUDIENCE ? list(e.JWT_AUDIENCE) : undefined,
      clockToleranceSec: 30,
    },
    encryption: {
      keys: e.ENCRYPTION_KEYS,
      activeVersion: e.ENCRYPTION_ACTIVE_KEY ? Number(e.ENCRYPTION_ACTIVE_KEY) : Math.max(...versions),
    },
    corsOrigins: list(e.CORS_ORIGINS),
    apns:
      e.APNS_KEY && e.APNS_KEY_ID && e.APNS_TEAM_ID && e.APNS_TOPIC
        ? {
            key: e.APNS_KEY.replace(/\\n/g, '\n'),
            keyId: e.APNS_KEY_ID,
            teamId: e.APNS_TEAM_ID,
            topic: e.APNS_TOPIC,
            production: e.APNS_PRODUCTION,
            host: e.APNS_HOST,
            port: e.APNS_PORT,
          }
        : null,
    fcm: e.FCM_SERVICE_ACCOUNT ? { ...e.FCM_SERVICE_ACCOUNT, baseUrl: e.FCM_BASE_URL ?? DEFAULT_FCM_BASE_URL } : null,
    webPush:
      e.VAPID_PUBLIC_KEY && e.VAPID_PRIVATE_KEY && e.VAPID_SUBJECT
        ? {
            // Unpadded, the form browsers and the web-push library take.
            publicKey: e.VAPID_PUBLIC_KEY.replace(/=+$/, ''),
            privateKey: e.VAPID_PRIVATE_KEY.replace(/=+$/, ''),
            subject: e.VAPID_SUBJECT,
          }
        : null,
    migrateOnStart: e.MIGRATE_ON_START,
    demoEnabled: e.DEMO_ENABLED ?? e.NODE_ENV !== 'production',
    limits: { maxMessageBytes: e.MAX_MESSAGE_BYTES, maxBatch: e.MAX_BATCH },
    offlineQueueMax: e.OFFLINE_QUEUE_MAX,
    presenceTtlMs: e.PRESENCE_TTL_MS,
    typing: { timeoutMs: e.TYPING_TIMEOUT_MS, coalesceMs: e.TYPING_COALESCE_MS },
    rateLimits: { eventsPerSecond: e.RATE_LIMIT_EVENTS_PER_SEC, connectsPerMinute: e.RATE_LIMIT_CONNECTS_PER_MIN },
    connectionCaps: { perUser: e.MAX_CONNECTIONS_PER_USER, perIp: e.MAX_CONNECTIONS_PER_IP },
    socketSendBufferBytes: e.SOCKET_SEND_BUFFER_BYTES,
    shutdownGraceMs: e.SHUTDOWN_GRACE_MS,
    logLevel: e.LOG_LEVEL,
  });
}
