import { describe, expect, it } from 'vitest';

import { classifyApnsFailure } from './apns.client.js';

describe('APNs failure handling', () => {
  it.each([
    [410, 'Unregistered', 'unregister'],
    [410, 'ExpiredToken', 'unregister'],
    [400, 'BadDeviceToken', 'unregister'],
    [400, 'DeviceTokenNotForTopic', 'unregister'],
    [429, 'TooManyRequests', 'retry'],
    [500, 'InternalServerError', 'retry'],
    [503, 'ServiceUnavailable', 'retry'],
    [403, 'ExpiredProviderToken', 'retry'],
    [403, 'InvalidProviderToken', 'reject'],
    [400, 'PayloadTooLarge', 'reject'],
    [413, 'PayloadTooLarge', 'reject'],
    [400, 'TopicDisallowed', 'reject'],
  ] as const)('%i %s: %s', (status, reason, kind) => {
    expect(classifyApnsFailure({ status, reason })).toBe(kind);
  });

  it('retries when no answer came (connection refused, timeout)', () => {
    expect(classifyApnsFailure({ reason: 'network' })).toBe('retry');
  });
});
