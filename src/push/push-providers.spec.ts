import { describe, expect, it } from 'vitest';

import { classifyFcmFailure, fcmReasonOf } from './fcm.client.js';
import { PushAttemptError, retryDelayMs } from './push-jobs.repository.js';
import { retryAfterMs } from './push.provider.js';
import { classifyWebPushFailure, topicOf } from './web-push.client.js';

const fcmError = (status: number, googleStatus: string, errorCode?: string) => ({
  status,
  body: JSON.stringify({
    error: {
      code: status,
      message: 'x',
      status: googleStatus,
      details: errorCode ? [{ '@type': 'type.googleapis.com/google.firebase.fcm.v1.FcmError', errorCode }] : [],
    },
  }),
});

describe('FCM failure handling', () => {
  it.each([
    [404, 'NOT_FOUND', 'UNREGISTERED', 'UNREGISTERED', 'unregister'],
    [400, 'INVALID_ARGUMENT', 'INVALID_ARGUMENT', 'INVALID_ARGUMENT', 'unregister'],
    [400, 'INVALID_ARGUMENT', undefined, 'INVALID_ARGUMENT', 'unregister'],
    [429, 'RESOURCE_EXHAUSTED', 'QUOTA_EXCEEDED', 'QUOTA_EXCEEDED', 'retry'],
    [503, 'UNAVAILABLE', 'UNAVAILABLE', 'UNAVAILABLE', 'retry'],
    [500, 'INTERNAL', 'INTERNAL', 'INTERNAL', 'retry'],
    [401, 'UNAUTHENTICATED', undefined, 'UNAUTHENTICATED', 'retry'],
    [401, 'UNAUTHENTICATED', 'THIRD_PARTY_AUTH_ERROR', 'THIRD_PARTY_AUTH_ERROR', 'reject'],
    [403, 'PERMISSION_DENIED', 'SENDER_ID_MISMATCH', 'SENDER_ID_MISMATCH', 'reject'],
    [403, 'PERMISSION_DENIED', undefined, 'PERMISSION_DENIED', 'reject'],
  ] as const)('%i %s %s: %s, %s', (status, googleStatus, errorCode, reason, kind) => {
    const reply = fcmError(status, googleStatus, errorCode);
    expect(fcmReasonOf(reply)).toBe(reason);
    expect(classifyFcmFailure(status, reason)).toBe(kind);
  });

  it('labels an answer it cannot read by its status', () => {
    expect(fcmReasonOf({ status: 502, body: '<html>bad gateway</html>' })).toBe('http_502');
    expect(fcmReasonOf(fcmError(418, 'SOMETHING_NEW', 'SOMETHING_ELSE'))).toBe('http_418');
    expect(classifyFcmFailure(502, 'http_502')).toBe('retry');
    expect(classifyFcmFailure(418, 'http_418')).toBe('reject');
  });
});

describe('Web Push failure handling', () => {
  it.each([
    [404, 'unregister'],
    [410, 'unregister'],
    [429, 'retry'],
    [500, 'retry'],
    [503, 'retry'],
    [400, 'reject'],
    [401, 'reject'],
    [403, 'reject'],
    [413, 'reject'],
  ] as const)('%i: %s', (status, kind) => {
    expect(classifyWebPushFailure(status)).toBe(kind);
  });

  it('makes a Topic of at most 32 URL-safe base64 characters from a conversation id', () => {
    const topic = topicOf('0b6f6c1e-5d0c-4f51-9d7e-3f7c2a1b9e10');
    expect(topic).toBe('0b6f6c1e5d0c4f519d7e3f7c2a1b9e10');
    expect(topic).toMatch(/^[A-Za-z0-9_-]{1,32}$/);
  });
});

describe('retry timing', () => {
  const options = { backoffMs: 1_000, maxRetryAfterMs: 60_000 };

  it('reads Retry-After as seconds or as an HTTP date', () => {
    const now = Date.parse('2026-12-04T12:00:00Z');
    expect(retryAfterMs('120', now)).toBe(120_000);
    expect(retryAfterMs('Fri, 04 Dec 2026 12:00:30 GMT', now)).toBe(30_000);
    expect(retryAfterMs('Fri, 04 Dec 2026 11:00:00 GMT', now)).toBe(0);
    expect(retryAfterMs(undefined, now)).toBeUndefined();
    expect(retryAfterMs('soon', now)).toBeUndefined();
  });

  it('doubles the backoff per try, less up to 20% jitter', () => {
    expect(retryDelayMs(1, options, new Error('x'), () => 0)).toBe(800);
    expect(retryDelayMs(1, options, new Error('x'), () => 0.999999)).toBe(999);
    expect(retryDelayMs(3, options, new Error('x'), () => 0)).toBe(3_200);
  });

  it('never retries sooner than the Retry-After a provider asked for, up to the cap', () => {
    expect(retryDelayMs(1, options, new PushAttemptError('UNAVAILABLE', true, 5_000), () => 0)).toBe(5_000);
    expect(retryDelayMs(4, options, new PushAttemptError('UNAVAILABLE', true, 2_000), () => 0)).toBe(6_400);
    expect(retryDelayMs(1, options, new PushAttemptError('QUOTA_EXCEEDED', true, 3_600_000), () => 0)).toBe(60_000);
  });
});
