import { Injectable } from '@nestjs/common';
import webpush from 'web-push';

import { AppConfig } from '../config/app-config.js';
import type { PushAddress } from '../devices/devices.repository.js';
import { PushHttp, type HttpReply } from './push-http.js';
import { pushData } from './push.payload.js';
import {
  networkFailure,
  retryAfterMs,
  type PushFailureKind,
  type PushNotice,
  type PushProvider,
  type PushResult,
} from './push.provider.js';

type WebAddress = Extract<PushAddress, { platform: 'web' }>;

/**
 * A message's `Topic` (RFC 8030 section 5.4): at most 32 characters of the URL-safe base64
 * alphabet. A conversation id is a UUID, whose 32 hex digits fit once the dashes go; a
 * newer push of the same conversation then replaces one still waiting at the push service.
 */
export function topicOf(conversationId: string): string {
  return conversationId.replaceAll('-', '').slice(0, 32);
}

/** 404 and 410: the subscription expired or was withdrawn; 429 and 5xx: try again later. */
export function classifyWebPushFailure(status: number): PushFailureKind {
  if (status === 404 || status === 410) return 'unregister';
  if (status === 429 || status >= 500) return 'retry';
  return 'reject';
}

/**
 * Web Push (RFC 8030) for browsers: the payload encrypted to the subscription's keys with
 * `aes128gcm` (RFC 8291) and the request signed with the VAPID key (RFC 8292), both by the
 * `web-push` library (its generateRequestDetails); the request itself goes through PushHttp
 * like FCM's, for its deadline, keep-alive, bounded answer and CA settings. Each message
 * is content-free (the conversation and message ids), `Urgency: high`, with a TTL and the
 * conversation as Topic. Subscriptions are never logged: their endpoint is a capability.
 */
@Injectable()
export class WebPushClient implements PushProvider<WebAddress> {
  constructor(
    private readonly config: AppConfig,
    private readonly http: PushHttp,
  ) {}

  get enabled(): boolean {
    return this.config.webPush !== null;
  }

  /** The keys were checked as a P-256 pair at boot (VAPID_*): nothing to open. */
  open(): void {}

  async send(address: WebAddress, notice: PushNotice): Promise<PushResult> {
    const vapid = this.config.webPush;
    if (!vapid) return { ok: false, kind: 'retry', reason: 'not_open' };
    let request: webpush.RequestDetails & { body: Buffer };
    try {
      request = webpush.generateRequestDetails(address.subscription, JSON.stringify(pushData(notice)), {
        vapidDetails: vapid,
        TTL: Math.max(0, notice.expiresAt - Math.floor(Date.now() / 1000)),
        urgency: 'high',
        topic: topicOf(notice.conversationId),
        contentEncoding: 'aes128gcm',
      });
    } catch (error) {
      // Only the subscription varies between calls, and it was validated at registration:
      // one the library still cannot encrypt to is of no use.
      return {
        ok: false,
        kind: 'unregister',
        reason: 'invalid_subscription',
        detail: error instanceof Error ? error.message : String(error),
      };
    }
    let reply: HttpReply;
    try {
      reply = await this.http.post(request.endpoint, request.headers, request.body);
    } catch (error) {
      return networkFailure(error);
    }
    if (reply.status >= 200 && reply.status < 300) return { ok: true };
    return {
      ok: false,
      kind: classifyWebPushFailure(reply.status),
      status: reply.status,
      reason: `http_${reply.status}`,
      retryAfterMs: retryAfterMs(reply.headers['retry-after']),
    };
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
