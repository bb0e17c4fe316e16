import type { LogLevel, MasterKey } from './config.schema.js';

/** JWT verification settings (PROTOCOL.md section 5). */
export type JwtKeySource =
  { kind: 'secret'; secret: Uint8Array } | { kind: 'publicKey'; pem: string } | { kind: 'jwks'; url: string };

export interface ApnsConfig {
  key: string;
  keyId: string;
  teamId: string;
  topic: string;
  production: boolean;
  host?: string;
  port?: number;
}

/** Android push over FCM HTTP v1, from FCM_SERVICE_ACCOUNT and FCM_BASE_URL. */
export interface FcmConfig {
  /** The service account's Firebase project: sends go to /v1/projects/{projectId}/messages:send. */
  projectId: string;
  /** The service account's identity, the `iss` of its OAuth2 JWT grant. */
  clientEmail: string;
  /** Its RSA private key (PEM), which signs the grant. */
  privateKey: string;
  /** Its `private_key_id`, sent as the grant's `kid` when the account has one. */
  privateKeyId?: string;
  /** Where the grant goes: the account's own `token_uri`, never a built-in address. */
  tokenUri: string;
  /** The FCM origin, without a trailing slash or `/v1` (default https://fcm.googleapis.com). */
  baseUrl: string;
}

/** Web Push with VAPID (RFC 8292), from VAPID_PUBLIC_KEY, VAPID_PRIVATE_KEY and VAPID_SUBJECT. */
export interface WebPushConfig {
  /** base64url of the raw P-256 public point (65 bytes): what browsers subscribe with. */
  publicKey: string;
  /** base64url of the private scalar (32 bytes). */
  privateKey: string;
  /** The operator's contact, `mailto:` or `https:`. */
  subject: string;
}

/**
 * The validated, typed configuration. Services receive it by injection
 * (`constructor(private readonly config: AppConfig)`); nothing else reads process.env.
 */
export class AppConfig {
  readonly nodeEnv!: 'development' | 'production' | 'test';
  readonly port!: number;
  readonly host!: string;
  readonly databaseUrl!: string;
  /** One URL, or in cluster mode the seed nodes' URLs, comma-separated (see redisUrlList). */
  readonly redisUrl!: string;
  /** `cluster`: a Redis Cluster (ioredis Cluster, hash-tagged keys). */
  readonly redisMode!: 'single' | 'cluster';
  readonly jwt!: { key: JwtKeySource; issuer?: string; audience?: string[]; clockToleranceSec: number };
  readonly encryption!: { keys: MasterKey[]; activeVersion: number };
  readonly corsOrigins!: string[];
  /** Each push provider is null (off) when its variables are unset. */
  readonly apns!: ApnsConfig | null;
  readonly fcm!: FcmConfig | null;
  readonly webPush!: WebPushConfig | null;
  readonly migrateOnStart!: boolean;
  /**
   * Serve the web chat at /demo. Its dev token endpoint is mounted only outside
   * production, whatever this says.
   */
  readonly demoEnabled!: boolean;
  /** Limits reported in `session` and enforced: body bytes, ids per ack, page size. */
  readonly limits!: { maxMessageBytes: number; maxBatch: number };
  /** Entries one device's offline queue holds at most; past it the oldest are dropped. */
  readonly offlineQueueMax!: number;
  /** How long a socket stays online in Redis without its instance refreshing it. */
  readonly presenceTtlMs!: number;
  /** Typing ends by itself after timeoutMs; relays are at most one per coalesceMs. */
  readonly typing!: { timeoutMs: number; coalesceMs: number };
  /** Requests per second one socket may make (bursts up to twice that); handshakes per user per minute. */
  readonly rateLimits!: { eventsPerSecond: number; connectsPerMinute: number };
  /** Live sockets one user, and one peer address (0: no cap), may hold on this instance. */
  readonly connectionCaps!: { perUser: number; perIp: number };
  /** Bytes written to one socket and not yet taken by the peer; past it the socket is dropped. */
  readonly socketSendBufferBytes!: number;
  /** After SIGTERM: how long in-flight work may take before the process exits regardless. */
  readonly shutdownGraceMs!: number;
  readonly logLevel!: LogLevel;

  constructor(values: AppConfigValues) {
    Object.assign(this, values);
  }

  get isProduction(): boolean {
    return this.nodeEnv === 'production';
  }
}

export type AppConfigValues = Omit<AppConfig, 'isProduction'>;
