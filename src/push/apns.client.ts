import { Inject, Injectable } from '@nestjs/common';
import { Notification, Provider, type ProviderOptions, type ResponseFailure } from '@parse/node-apn';

import { AppConfig, type ApnsConfig } from '../config/app-config.js';
import type { ApnsEnvironment } from '../devices/devices.repository.js';
import type { ApnsPayload } from './push.payload.js';
import { PUSH_OPTIONS, type PushOptions } from './push.options.js';

/** One notification to one device token. */
export interface ApnsRequest {
  environment: ApnsEnvironment;
  token: string;
  topic: string;
  payload: ApnsPayload;
  /** Notifications with the same id replace each other on the device (≤ 64 bytes). */
  collapseId: string;
  /** Unix seconds after which APNs drops it undelivered. */
  expiry: number;
}

/** What APNs (or the way to it) answered. */
export type ApnsResult = { ok: true } | { ok: false; status?: number; reason: string; detail?: string };

/** How a failed send is handled. */
export type ApnsFailureKind =
  /** Try again later (429, 5xx, expired provider token, no answer). */
  | 'retry'
  /** The token is dead for this app: forget it, do not retry. */
  | 'unregister'
  /** Retrying cannot help (a bad request, a bad provider key). */
  | 'reject';

const UNREGISTER_400 = new Set(['BadDeviceToken', 'DeviceTokenNotForTopic']);

export function classifyApnsFailure(result: { status?: number; reason: string }): ApnsFailureKind {
  const { status, reason } = result;
  if (status === undefined) return 'retry';
  if (status === 410) return 'unregister';
  if (status === 400 && UNREGISTER_400.has(reason)) return 'unregister';
  if (status === 429 || status >= 500) return 'retry';
  if (status === 403 && reason === 'ExpiredProviderToken') return 'retry';
  return 'reject';
}

/** Reasons APNs documents; anything else is reported as `other` to bound metric labels. */
const KNOWN_REASONS = new Set([
  'BadCollapseId',
  'BadDeviceToken',
  'BadExpirationDate',
  'BadMessageId',
  'BadPriority',
  'BadTopic',
  'DeviceTokenNotForTopic',
  'DuplicateHeaders',
  'IdleTimeout',
  'InvalidPushType',
  'MissingDeviceToken',
  'MissingTopic',
  'PayloadEmpty',
  'TopicDisallowed',
  'BadCertificate',
  'BadCertificateEnvironment',
  'ExpiredProviderToken',
  'Forbidden',
  'InvalidProviderToken',
  'MissingProviderToken',
  'UnrelatedKeyIdInToken',
  'BadEnvironmentKeyInToken',
  'BadPath',
  'MethodNotAllowed',
  'ExpiredToken',
  'Unregistered',
  'PayloadTooLarge',
  'TooManyProviderTokenUpdates',
  'TooManyRequests',
  'InternalServerError',
  'ServiceUnavailable',
  'Shutdown',
]);

function resultOf(failure: ResponseFailure | undefined): ApnsResult {
  if (!failure) return { ok: false, reason: 'no_answer' };
  const status = typeof failure.status === 'number' ? failure.status : undefined;
  // The library's own messages (timeouts, connection errors) never include the token.
  if (status === undefined) return { ok: false, reason: 'network', detail: failure.error?.message };
  const reason = failure.response?.reason;
  return { ok: false, status, reason: reason && KNOWN_REASONS.has(reason) ? reason : `http_${status}` };
}

const SHUTDOWN_TIMEOUT_MS = 1_000;

/**
 * Provider.shutdown reports through its callback only (its typing promises a Promise it
 * does not return), and never calls back once a connection error destroyed the session
 * (it waits for that session's close): so the wait is bounded.
 */
function shutdown(provider: Provider): Promise<void> {
  return new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, SHUTDOWN_TIMEOUT_MS);
    timer.unref();
    void provider.shutdown(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/**
 * Sends notifications over APNs' HTTP/2 provider API with token (JWT) authentication,
 * through @parse/node-apn: one Provider, so one long-lived HTTP/2 connection, per
 * environment, opened on first use and reused. Retries are the job queue's business, so
 * the library's own immediate retries are off. Device tokens are never logged.
 */
@Injectable()
export class ApnsClient {
  private readonly providers = new Map<ApnsEnvironment, Provider>();

  constructor(
    private readonly config: AppConfig,
    @Inject(PUSH_OPTIONS) private readonly options: PushOptions,
  ) {}

  /** Builds both providers; throws (at boot) when APNS_KEY is not a usable ES256 key. */
  open(): void {
    const apns = this.config.apns;
    if (!apns) return;
    for (const environment of ['sandbox', 'production'] as const) {
      try {
        this.providers.set(environment, new Provider(this.providerOptions(apns, environment)));
      } catch (error) {
        throw new Error(
          `APNS_KEY: not a usable APNs auth key (.p8 contents, ES256): ${error instanceof Error ? error.message : String(error)}`,
          { cause: error },
        );
      }
    }
  }

  async send(request: ApnsRequest): Promise<ApnsResult> {
    const provider = this.providers.get(request.environment);
    if (!provider) return { ok: false, reason: 'not_open' };
    const notification = new Notification();
    notification.rawPayload = request.payload;
    notification.topic = request.topic;
    notification.pushType = 'alert';
    notification.priority = 10;
    notification.expiry = request.expiry;
    notification.collapseId = request.collapseId;
    const { sent, failed } = await provider.send(notification, request.token);
    return sent.length > 0 ? { ok: true } : resultOf(failed[0]);
  }

  /** Closes every connection. */
  async close(): Promise<void> {
    const providers = [...this.providers.values()];
    this.providers.clear();
    await Promise.all(providers.map((provider) => shutdown(provider)));
  }

  private providerOptions(apns: ApnsConfig, environment: ApnsEnvironment): ProviderOptions {
    const options: ProviderOptions = {
      token: { key: apns.key, keyId: apns.keyId, teamId: apns.teamId },
      production: environment === 'production',
      connectionRetryLimit: 0,
      requestTimeout: this.options.requestTimeoutMs,
    };
    // Only what is set: the library warns about explicit null/undefined options.
    if (apns.host !== undefined) options.address = apns.host;
    if (apns.port !== undefined) options.port = apns.port;
    if (this.options.ca !== undefined) options.ca = this.options.ca;
    return options;
  }
}
