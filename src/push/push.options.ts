import type { AppConfig } from '../config/app-config.js';

/**
 * Push tuning that is not part of the environment contract (PROTOCOL.md section 7 names
 * only the providers' credentials: APNS_*, FCM_*, VAPID_*). Production defaults live here; an embedder that builds the
 * app itself (the tests) attaches other values to its AppConfig with `setPushOptions`
 * before `createApp(config)`. Services receive the result through the PUSH_OPTIONS token.
 */
export interface PushOptions {
  /**
   * How long a push waits after its message was queued. When the job runs, it sends only
   * if the device still has no live socket and has not acked the message, so a device
   * that drops right after a live delivery is still reached, and one that acks or
   * reconnects within the grace period is not woken for nothing.
   */
  graceMs: number;
  /** Send attempts per push (first try included) for retryable answers (429, 5xx, no answer). */
  attempts: number;
  /** First retry delay; each further retry doubles it (with up to 20% jitter). */
  backoffMs: number;
  /** A provider's Retry-After is honoured up to this long (a longer one is cut to it). */
  maxRetryAfterMs: number;
  /**
   * Sender and a truncated text preview in server-mode conversations' APNs alerts. Off by
   * default: alerts then say only "New message". Never applies to e2e conversations, nor
   * to FCM and Web Push, whose messages carry ids only.
   */
  previews: boolean;
  /** Longest preview, in user-perceived characters, before the payload size cap. */
  previewMaxChars: number;
  /** The provider drops an undelivered push this long after it was sent (APNs expiry, FCM ttl, Web Push TTL). */
  expirySec: number;
  /** One provider request (the FCM token grant included) gives up, and is retried, after this long. */
  requestTimeoutMs: number;
  /** Pushes sent at once by this instance (APNs: over one HTTP/2 connection per environment). */
  concurrency: number;
  /** Completed jobs are kept this long (and at most keepCompletedCount), so a re-enqueue dedupes. */
  keepCompletedSec: number;
  keepCompletedCount: number;
  /** Jobs that failed for good are kept this long for inspection. */
  keepFailedSec: number;
  /**
   * PEM certificates to trust for the push endpoints (APNs, FCM and its token endpoint, Web
   * Push services) instead of the system's roots and NODE_EXTRA_CA_CERTS: for a test server
   * or a TLS-terminating proxy. Unset in production.
   */
  ca?: string[];
}

const DEFAULT_PUSH_OPTIONS: Readonly<PushOptions> = Object.freeze({
  graceMs: 2_000,
  attempts: 8,
  backoffMs: 1_000,
  maxRetryAfterMs: 3_600_000,
  previews: false,
  previewMaxChars: 120,
  expirySec: 86_400,
  requestTimeoutMs: 5_000,
  concurrency: 16,
  keepCompletedSec: 3_600,
  keepCompletedCount: 10_000,
  keepFailedSec: 7 * 86_400,
});

/** Injection token of the effective PushOptions. */
export const PUSH_OPTIONS = Symbol('PUSH_OPTIONS');

/** BullMQ key prefix and queue name: keys are `bull:push:*`. */
export const PUSH_QUEUE_PREFIX = 'bull';
/**
 * In a Redis Cluster, `{bull}:push:*`: BullMQ's scripts touch many keys of a queue at
 * once, which a cluster takes only within one slot, hence the hash tag. A single Redis
 * keeps the plain prefix, so that an upgrade finds the jobs it already holds.
 */
const PUSH_QUEUE_CLUSTER_PREFIX = '{bull}';

export const pushQueuePrefixFor = (mode: 'single' | 'cluster') =>
  mode === 'cluster' ? PUSH_QUEUE_CLUSTER_PREFIX : PUSH_QUEUE_PREFIX;
export const PUSH_QUEUE_NAME = 'push';

const attached = new WeakMap<AppConfig, Partial<PushOptions>>();

/** Attaches push tuning to one configuration (the app built from it uses it). Returns the config. */
export function setPushOptions(config: AppConfig, options: Partial<PushOptions>): AppConfig {
  attached.set(config, { ...attached.get(config), ...options });
  return config;
}

/** The push options of an app built from `config`: the defaults, then what was attached. */
export function pushOptionsFor(config: AppConfig): PushOptions {
  return { ...DEFAULT_PUSH_OPTIONS, ...attached.get(config) };
}
