import type { PushAddress } from '../devices/devices.repository.js';

/**
 * What every push provider (APNs, FCM, Web Push) is given and answers. The job pipeline
 * (PushService, PushDeliveryService, PushJobsRepository) is the same for all three; only
 * the last step, one request to one provider, differs.
 */

/** One push: which message, for how long it is worth delivering. Content-free. */
export interface PushNotice {
  conversationId: string;
  messageId: string;
  /** e2e conversations: the app fetches and decrypts; nothing of the message is in the push. */
  e2e: boolean;
  /** Unix seconds after which the provider drops it undelivered. */
  expiresAt: number;
  /**
   * APNs alerts only (the other providers send data-only messages): the device's unacked
   * count for the badge, and a preview when the operator enabled previews.
   */
  alert?: { badge: number; preview?: { sender: string; text: string } };
}

/** How a failed send is handled. */
export type PushFailureKind =
  /** Try again later (429, 5xx, an expired provider credential, no answer). */
  | 'retry'
  /** The address is dead for this app: forget it, do not retry. */
  | 'unregister'
  /** Retrying cannot help (a bad request, bad credentials). */
  | 'reject';

/** What a provider (or the way to it) answered. */
export type PushResult =
  | { ok: true }
  | {
      ok: false;
      kind: PushFailureKind;
      /** The HTTP status, when an answer came. */
      status?: number;
      /** A bounded label for metrics and logs: the provider's reason, or `http_<status>`, `network`. */
      reason: string;
      /** More for the log (never an address or a token). */
      detail?: string;
      /** The provider's Retry-After, in ms from now: no retry comes sooner. */
      retryAfterMs?: number;
    };

/** One provider: sends to the addresses of its platform. */
export interface PushProvider<A extends PushAddress> {
  /** Configured: off (and never called) when its environment variables are unset. */
  readonly enabled: boolean;
  /** Checks the credentials and sets up connections; throws at boot when they are unusable. */
  open(): void;
  send(address: A, notice: PushNotice): Promise<PushResult>;
  close(): Promise<void>;
}

/** No answer came (connection refused, reset, timed out): worth another try. */
export function networkFailure(error: unknown): PushResult {
  return {
    ok: false,
    kind: 'retry',
    reason: 'network',
    detail: error instanceof Error ? error.message : String(error),
  };
}

/** `Retry-After` (delta-seconds or an HTTP-date) in ms from `now`; undefined when absent or unreadable. */
export function retryAfterMs(header: string | string[] | undefined, now = Date.now()): number | undefined {
  const value = Array.isArray(header) ? header[0] : header;
  if (value === undefined || value.trim() === '') return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1_000;
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}
