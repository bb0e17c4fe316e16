import { generateKeyPairSync } from 'node:crypto';

import { decodeProtectedHeader, jwtVerify } from 'jose';
import { describe, expect, it } from 'vitest';

import type { FcmConfig } from '../config/app-config.js';
import { FCM_SCOPE, ServiceAccountTokens, TokenGrantError } from './fcm-tokens.js';
import type { HttpReply } from './push-http.js';

const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const account: FcmConfig = {
  projectId: 'chat-app',
  clientEmail: 'push@chat-app.iam.gserviceaccount.com',
  privateKey: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
  privateKeyId: 'key-1',
  tokenUri: 'https://idp.example.com/oauth2/token',
  baseUrl: 'https://fcm.googleapis.com',
};

interface Grant {
  url: string;
  headers: Record<string, string>;
  params: URLSearchParams;
}

/** A token endpoint that answers from `replies` in turn (then the last one again) and records the grants. */
function tokenEndpoint(replies: (HttpReply | Error)[]) {
  const grants: Grant[] = [];
  let count = 0;
  const post = (url: string, headers: Record<string, string>, body: string): Promise<HttpReply> => {
    grants.push({ url, headers, params: new URLSearchParams(body) });
    const reply = replies[Math.min(count, replies.length - 1)];
    count += 1;
    return reply instanceof Error ? Promise.reject(reply) : Promise.resolve(reply);
  };
  return { grants, post };
}

const tokenReply = (token: string, expiresIn = 3_600): HttpReply => ({
  status: 200,
  headers: {},
  body: JSON.stringify({ access_token: token, expires_in: expiresIn, token_type: 'Bearer' }),
});

describe('service account OAuth2 tokens', () => {
  it("makes an RS256 JWT-bearer grant to the account's own token_uri", async () => {
    const endpoint = tokenEndpoint([tokenReply('ya29.first')]);
    const tokens = new ServiceAccountTokens(account, endpoint.post);
    expect(await tokens.get()).toBe('ya29.first');

    const [grant] = endpoint.grants;
    expect(grant.url).toBe(account.tokenUri);
    expect(grant.headers['content-type']).toBe('application/x-www-form-urlencoded');
    expect(grant.params.get('grant_type')).toBe('urn:ietf:params:oauth:grant-type:jwt-bearer');
    const assertion = grant.params.get('assertion')!;
    expect(decodeProtectedHeader(assertion)).toMatchObject({ alg: 'RS256', kid: 'key-1' });
    const { payload } = await jwtVerify(assertion, publicKey, {
      algorithms: ['RS256'],
      issuer: account.clientEmail,
      audience: account.tokenUri,
    });
    expect(payload.scope).toBe(FCM_SCOPE);
    expect(payload.exp! - payload.iat!).toBe(3_600);
  });

  it('reuses a token until five minutes before it expires, and shares a grant under way', async () => {
    let now = 1_000_000;
    const endpoint = tokenEndpoint([tokenReply('ya29.first'), tokenReply('ya29.second')]);
    const tokens = new ServiceAccountTokens(account, endpoint.post, () => now);
    expect(await Promise.all([tokens.get(), tokens.get(), tokens.get()])).toEqual(Array(3).fill('ya29.first'));
    expect(endpoint.grants).toHaveLength(1);

    now += 3_600_000 - 5 * 60_000 - 1;
    expect(await tokens.get()).toBe('ya29.first');
    now += 1;
    expect(await tokens.get()).toBe('ya29.second');
    expect(endpoint.grants).toHaveLength(2);
  });

  it('keeps a short-lived token for half its life', async () => {
    let now = 0;
    const endpoint = tokenEndpoint([tokenReply('a', 60), tokenReply('b', 60)]);
    const tokens = new ServiceAccountTokens(account, endpoint.post, () => now);
    await tokens.get();
    now = 29_999;
    expect(await tokens.get()).toBe('a');
    now = 30_000;
    expect(await tokens.get()).toBe('b');
  });

  it('makes a new grant once a token is invalidated, and only for that token', async () => {
    const endpoint = tokenEndpoint([tokenReply('a'), tokenReply('b')]);
    const tokens = new ServiceAccountTokens(account, endpoint.post);
    await tokens.get();
    tokens.invalidate('not-the-current-one');
    expect(await tokens.get()).toBe('a');
    tokens.invalidate('a');
    expect(await tokens.get()).toBe('b');
  });

  it('says which failures are worth retrying, and tries again on the next call', async () => {
    const failures: [HttpReply | Error, string, boolean][] = [
      [new Error('connect ECONNREFUSED'), 'network: connect ECONNREFUSED', true],
      [{ status: 503, headers: {}, body: '' }, 'http_503', true],
      [{ status: 429, headers: {}, body: '{"error":"rate_limited"}' }, 'rate_limited', true],
      [{ status: 400, headers: {}, body: '{"error":"invalid_grant","error_description":"x"}' }, 'invalid_grant', false],
      [{ status: 401, headers: {}, body: '{"error":"invalid_client"}' }, 'invalid_client', false],
      [{ status: 200, headers: {}, body: '{"access_token":""}' }, 'malformed token response', true],
    ];
    for (const [reply, reason, retryable] of failures) {
      const endpoint = tokenEndpoint([reply, tokenReply('after')]);
      const tokens = new ServiceAccountTokens(account, endpoint.post);
      const error = await tokens.get().catch((e: unknown) => e);
      expect(error).toBeInstanceOf(TokenGrantError);
      expect(error).toMatchObject({ reason, retryable });
      expect(await tokens.get()).toBe('after');
    }
  });
});
