import { Inject, Injectable } from '@nestjs/common';
import { Notification, Provider, type ProviderOptions, type ResponseFailure } from '@parse/node-apn';

import { AppConfig, type ApnsConfig } from '../config/app-config.js';
import type { ApnsEnvironment, PushAddress } from '../devices/devices.repository.js';
import { buildPayload } from './push.payload.js';
import { PUSH_OPTIONS, type PushOptions } from './push.options.js';
import type { PushFailureKind, PushNotice, PushProvider, PushResult } from './push.provider.js';

type IosAddress = Extract<PushAddress, { platform: 'ios' }>;

const UNREGISTER_400 = new Set(['BadDeviceToken', 'DeviceTokenNotForTopic']);

export function classifyApnsFailure(result: { status?: number; reason: string }): PushFailureKind {
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

function resultOf(failure: ResponseFailure | undefined): PushResult {
  if (!failure) return { ok: false, kind: 'retry', reason: 'no_answer' };
  const status = typeof failure.status === 'number' ? failure.status : undefined;
  // The library's own messages (timeouts, connection errors) never include the token.
  if (status === undefined) return { ok: false, kind: 'retry', reason: 'network', detail: failure.error?.message };
  const given = failure.response?.reason;
  const reason = given && KNOWN_REASONS.has(given) ? given : `http_${status}`;
  return { ok: false, kind: classifyApnsFailure({ status, reason }), status, reason };
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
export class ApnsClient implements PushProvider<IosAddress> {
  private readonly providers = new Map<ApnsEnvironment, Provider>();

  constructor(
    private readonly config: AppConfig,
    @Inject(PUSH_OPTIONS) private readonly options: PushOptions,
  ) {}

  get enabled(): boolean {
    return this.config.apns !== null;
  }

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

  /**
   * One alert: to the device's APNs environment (else APNS_PRODUCTION's) and topic (else
   * APNS_TOPIC), priority 10, the conversation as thread and collapse id.
   */
  async send(address: IosAddress, notice: PushNotice): Promise<PushResult> {
    const apns = this.config.apns;
    const environment = address.environment ?? (apns?.production ? 'production' : 'sandbox');
    const provider = this.providers.get(environment);
    if (!apns || !provider) return { ok: false, kind: 'retry', reason: 'not_open' };
    const notification = new Notification();
    notification.rawPayload = buildPayload(
      {
        conversationId: notice.conversationId,
        messageId: notice.messageId,
        e2e: notice.e2e,
        // This message at least is unacked.
        badge: notice.alert?.badge ?? 1,
        preview: notice.alert?.preview,
      },
      this.options.previewMaxChars,
    );
    notification.topic = address.topic ?? apns.topic;
    notification.pushType = 'alert';
    notification.priority = 10;
    notification.expiry = notice.expiresAt;
    // Notifications with the same collapse id (≤ 64 bytes) replace each other on the device.
    notification.collapseId = notice.conversationId;
    const { sent, failed } = await provider.send(notification, address.token);
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
