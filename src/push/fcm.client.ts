import { Injectable } from '@nestjs/common';

import { AppConfig } from '../config/app-config.js';
import type { PushAddress } from '../devices/devices.repository.js';
import { ServiceAccountTokens, TokenGrantError } from './fcm-tokens.js';
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

type AndroidAddress = Extract<PushAddress, { platform: 'android' }>;

/** FCM HTTP v1's message body for one Android device. */
export interface FcmMessage {
  message: {
    token: string;
    /** Data-only: the app wakes, fetches and shows (or not) what it wants. */
    data: Record<string, string>;
    android: { priority: 'HIGH'; ttl: string; collapseKey: string };
  };
}

/** The FcmError codes FCM documents; anything else is reported by status to bound metric labels. */
const FCM_ERROR_CODES = new Set([
  'UNSPECIFIED_ERROR',
  'INVALID_ARGUMENT',
  'UNREGISTERED',
  'SENDER_ID_MISMATCH',
  'QUOTA_EXCEEDED',
  'UNAVAILABLE',
  'INTERNAL',
  'THIRD_PARTY_AUTH_ERROR',
]);
/** Google API statuses (google.rpc.Code) seen without an FcmError detail. */
const GOOGLE_STATUSES = new Set([
  'INVALID_ARGUMENT',
  'UNAUTHENTICATED',
  'PERMISSION_DENIED',
  'NOT_FOUND',
  'RESOURCE_EXHAUSTED',
  'INTERNAL',
  'UNAVAILABLE',
]);

/** The reason FCM gave for a non-200 answer: its FcmError code, else its status, else `http_<status>`. */
export function fcmReasonOf(reply: Pick<HttpReply, 'status' | 'body'>): string {
  let error: { status?: unknown; details?: unknown } | undefined;
  try {
    error = (JSON.parse(reply.body) as { error?: typeof error }).error;
  } catch {
    error = undefined;
  }
  const details = Array.isArray(error?.details) ? (error.details as { errorCode?: unknown }[]) : [];
  const code = details.map((detail) => detail?.errorCode).find((c) => typeof c === 'string' && FCM_ERROR_CODES.has(c));
  if (typeof code === 'string') return code;
  if (typeof error?.status === 'string' && GOOGLE_STATUSES.has(error.status)) return error.status;
  return `http_${reply.status}`;
}

/**
 * How a failed send is handled: UNREGISTERED (404) and INVALID_ARGUMENT (400: the token is
 * malformed; the message shape is ours and fixed) forget the token; 429, 5xx and a refused
 * access token (401, after dropping it) are retried; the rest is counted as failed.
 */
export function classifyFcmFailure(status: number, reason: string): PushFailureKind {
  if (reason === 'UNREGISTERED' || reason === 'INVALID_ARGUMENT' || status === 404) return 'unregister';
  if (status === 429 || status >= 500) return 'retry';
  if (status === 401 && reason !== 'THIRD_PARTY_AUTH_ERROR') return 'retry';
  return 'reject';
}

/**
 * Android push over FCM HTTP v1 (`POST {FCM_BASE_URL}/v1/projects/{project_id}/messages:send`),
 * authorised by the service account's OAuth2 access token (ServiceAccountTokens). Each
 * message is data-only and content-free: the conversation and message ids, high priority
 * (so a dozing device wakes), a TTL, and the conversation as collapse key. Tokens are
 * never logged.
 */
@Injectable()
export class FcmClient implements PushProvider<AndroidAddress> {
  private tokens?: ServiceAccountTokens;

  constructor(
    private readonly config: AppConfig,
    private readonly http: PushHttp,
  ) {}

  get enabled(): boolean {
    return this.config.fcm !== null;
  }

  open(): void {
    const fcm = this.config.fcm;
    if (!fcm) return;
    this.tokens = new ServiceAccountTokens(fcm, (url, headers, body) => this.http.post(url, headers, body));
  }

  async send(address: AndroidAddress, notice: PushNotice): Promise<PushResult> {
    const fcm = this.config.fcm;
    if (!fcm || !this.tokens) return { ok: false, kind: 'retry', reason: 'not_open' };
    let accessToken: string;
    try {
      accessToken = await this.tokens.get();
    } catch (error) {
      if (!(error instanceof TokenGrantError)) throw error;
      return {
        ok: false,
        kind: error.retryable ? 'retry' : 'reject',
        status: error.status,
        reason: error.retryable ? 'oauth_unavailable' : 'oauth_refused',
        detail: error.message,
      };
    }
    const url = `${fcm.baseUrl}/v1/projects/${encodeURIComponent(fcm.projectId)}/messages:send`;
    let reply: HttpReply;
    try {
      reply = await this.http.post(
        url,
        { authorization: `Bearer ${accessToken}`, 'content-type': 'application/json; charset=utf-8' },
        JSON.stringify(this.messageFor(address, notice)),
      );
    } catch (error) {
      return networkFailure(error);
    }
    if (reply.status === 200) return { ok: true };
    const reason = fcmReasonOf(reply);
    // Revoked or expired before its time: the next try makes a new grant.
    if (reply.status === 401) this.tokens.invalidate(accessToken);
    return {
      ok: false,
      kind: classifyFcmFailure(reply.status, reason),
      status: reply.status,
      reason,
      retryAfterMs: retryAfterMs(reply.headers['retry-after']),
    };
  }

  close(): Promise<void> {
    this.tokens = undefined;
    return Promise.resolve();
  }

  private messageFor(address: AndroidAddress, notice: PushNotice): FcmMessage {
    const ttlSec = Math.max(0, notice.expiresAt - Math.floor(Date.now() / 1000));
    return {
      message: {
        token: address.token,
        data: pushData(notice),
        android: { priority: 'HIGH', ttl: `${ttlSec}s`, collapseKey: notice.conversationId },
      },
    };
  }
}
