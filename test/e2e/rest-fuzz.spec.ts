import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { startTestApp, type TestApp } from '../support/app.js';
import { mintToken } from '../support/clients.js';
import { createConversation, userId } from '../support/fixtures.js';

/** Any Unicode code point but a lone surrogate half (which no URL can carry as text). */
const codePoint = fc
  .integer({ min: 0, max: 0x10ffff })
  .filter((c) => c < 0xd800 || c > 0xdfff)
  .map((c) => String.fromCodePoint(c));

/**
 * A path or query segment as a client could put it on the wire: any Unicode text
 * (control characters and NUL included), or raw bytes that need not be UTF-8 at all.
 */
const segment = fc.oneof(
  fc.string({ unit: codePoint, maxLength: 40 }).map((text) => encodeURIComponent(text)),
  fc
    .uint8Array({ maxLength: 40 })
    .map((bytes) => [...bytes].map((b) => `%${b.toString(16).padStart(2, '0')}`).join('')),
  fc.constantFrom('%00', 'a%00b', '%C0%80', '%FF', '..', '%2F', ' ', '9007199254740993', '-1', 'x'.repeat(300)),
);

// Every id of a REST route reaches SQL only once validated: whatever bytes a path or query
// parameter holds, the answer is a 4xx, never `internal`.
describe('REST parameters under fuzzing', () => {
  let service: TestApp;
  let user: string;
  let conversationId: string;
  let userToken: string;
  let serviceToken: string;

  beforeAll(async () => {
    service = await startTestApp({ RATE_LIMIT_EVENTS_PER_SEC: '100000' });
    user = userId('fuzz');
    conversationId = await createConversation(service, user, [userId('other')]);
    userToken = await mintToken(user);
    serviceToken = await mintToken('fuzz-service', { claims: { scope: 'service' } });
  });

  afterAll(async () => {
    await service.close();
  });

  const routes: { name: string; request: (x: string) => { method: string; path: string; body?: unknown } }[] = [
    { name: 'GET conversations ?cursor', request: (x) => ({ method: 'GET', path: `/v1/conversations?cursor=${x}` }) },
    { name: 'GET conversations ?limit', request: (x) => ({ method: 'GET', path: `/v1/conversations?limit=${x}` }) },
    { name: 'GET conversations ?userId', request: (x) => ({ method: 'GET', path: `/v1/conversations?userId=${x}` }) },
    { name: 'GET conversation :id', request: (x) => ({ method: 'GET', path: `/v1/conversations/${x}` }) },
    {
      name: 'POST members :id',
      request: (x) => ({ method: 'POST', path: `/v1/conversations/${x}/members`, body: { userIds: ['u'] } }),
    },
    {
      name: 'DELETE member :userId',
      request: (x) => ({ method: 'DELETE', path: `/v1/conversations/${conversationId}/members/${x}` }),
    },
    {
      name: 'POST messages :id',
      request: (x) => ({
        method: 'POST',
        path: `/v1/conversations/${x}/messages`,
        body: { clientMsgId: 'c', body: 'b' },
      }),
    },
    {
      name: 'GET messages ?beforeSeq',
      request: (x) => ({ method: 'GET', path: `/v1/conversations/${conversationId}/messages?beforeSeq=${x}` }),
    },
    {
      name: 'GET messages ?afterSeq&limit',
      request: (x) => ({
        method: 'GET',
        path: `/v1/conversations/${conversationId}/messages?afterSeq=${x}&limit=${x}`,
      }),
    },
    {
      name: 'POST read :id',
      request: (x) => ({ method: 'POST', path: `/v1/conversations/${x}/read`, body: { seq: 1 } }),
    },
    {
      name: 'PUT device :deviceId',
      request: (x) => ({ method: 'PUT', path: `/v1/devices/${x}`, body: { platform: 'web' } }),
    },
    { name: 'DELETE device ?userId', request: (x) => ({ method: 'DELETE', path: `/v1/devices/d1?userId=${x}` }) },
    { name: 'GET keys :userId', request: (x) => ({ method: 'GET', path: `/v1/users/${x}/devices/keys` }) },
  ];

  it.each(routes)('never answers 5xx: $name', async ({ request }) => {
    await fc.assert(
      fc.asyncProperty(segment, fc.boolean(), async (x, asService) => {
        const { method, path, body } = request(x);
        const response = await fetch(`${service.url}${path}`, {
          method,
          headers: {
            authorization: `Bearer ${asService ? serviceToken : userToken}`,
            ...(body === undefined ? {} : { 'content-type': 'application/json' }),
          },
          body: body === undefined ? undefined : JSON.stringify(body),
        });
        const text = await response.text();
        expect(response.status, `${method} ${path} → ${response.status} ${text.slice(0, 200)}`).toBeLessThan(500);
      }),
      { numRuns: 40 },
    );
  });
});
