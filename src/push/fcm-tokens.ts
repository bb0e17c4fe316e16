import { createPrivateKey, type KeyObject } from 'node:crypto';

import { SignJWT } from 'jose';

import type { FcmConfig } from '../config/app-config.js';
import type { HttpReply } from './push-http.js';

/** The one OAuth2 scope FCM HTTP v1 sends need. */
export const FCM_SCOPE = 'https://www.googleapis.com/auth/firebase.messaging';
/** Google's grants accept an assertion valid for at most an hour. */
const ASSERTION_LIFETIME_SEC = 3_600;
/** A token is replaced this long before it expires (Google's own libraries use 5 minutes). */
const REFRESH_MARGIN_MS = 5 * 60_000;

/** A grant that failed; `retryable` for no answer, 429 and 5xx. */
export class TokenGrantError extends Error {
  constructor(
    readonly reason: string,
    readonly retryable: boolean,
    readonly status?: number,
  ) {
    super(`OAuth2 grant failed: ${reason}${status === undefined ? '' : ` (${status})`}`);
    this.name = 'TokenGrantError';
  }
}

type Post = (url: string, headers: Record<string, string>, body: string) => Promise<HttpReply>;

/**
 * OAuth2 access tokens of a service account, by the JWT-bearer grant (RFC 7523) made
 * here with jose: an RS256 assertion (iss = client_email, aud = token_uri, FCM's scope)
 * POSTed to the account's own `token_uri`. google-auth-library would do the same, but it
 * sends the grant to a built-in Google address whatever the account's token_uri says
 * (and puts that address in `aud`), which a proxy or a test token endpoint cannot serve.
 *
 * A token is cached until REFRESH_MARGIN_MS before it expires (half its life, if that is
 * shorter); callers that come while a grant is under way share it.
 */
export class ServiceAccountTokens {
  private readonly key: KeyObject;
  private current?: { token: string; refreshAt: number };
  private pending?: Promise<string>;

  constructor(
    private readonly account: FcmConfig,
    private readonly post: Post,
    private readonly now: () => number = Date.now,
  ) {
    // Checked as an RSA key at boot (FCM_SERVICE_ACCOUNT); this throws only for a key that changed under us.
    this.key = createPrivateKey(account.privateKey);
  }

  /** A valid access token: the cached one, or a fresh grant. Throws TokenGrantError. */
  get(): Promise<string> {
    if (this.current && this.now() < this.current.refreshAt) return Promise.resolve(this.current.token);
    this.pending ??= this.grant().finally(() => (this.pending = undefined));
    return this.pending;
  }

  /** Drops `token` (FCM refused it): the next get() makes a new grant. */
  invalidate(token: string): void {
    if (this.current?.token === token) this.current = undefined;
  }

  private async grant(): Promise<string> {
    const { clientEmail, privateKeyId, tokenUri } = this.account;
    const issuedAt = Math.floor(this.now() / 1000);
    const assertion = await new SignJWT({ scope: FCM_SCOPE })
      .setProtectedHeader({ alg: 'RS256', typ: 'JWT', ...(privateKeyId ? { kid: privateKeyId } : {}) })
      .setIssuer(clientEmail)
      .setAudience(tokenUri)
      .setIssuedAt(issuedAt)
      .setExpirationTime(issuedAt + ASSERTION_LIFETIME_SEC)
      .sign(this.key);
    const body = new URLSearchParams({ grant_type: 'urn:ietf:params:oauth:grant-type:jwt-bearer', assertion });
    let reply: HttpReply;
    try {
      reply = await this.post(
        tokenUri,
        { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
        body.toString(),
      );
    } catch (error) {
      throw new TokenGrantError(`network: ${error instanceof Error ? error.message : String(error)}`, true);
    }
    const json = parseJson(reply.body);
    if (reply.status !== 200) {
      // RFC 6749 section 5.2: `error` is a short code (invalid_grant, invalid_client), safe to log.
      const code = typeof json?.error === 'string' ? json.error.slice(0, 64) : `http_${reply.status}`;
      throw new TokenGrantError(code, reply.status === 429 || reply.status >= 500, reply.status);
    }
    const token = json?.access_token;
    const expiresIn = json?.expires_in;
    if (typeof token !== 'string' || token === '' || typeof expiresIn !== 'number' || !(expiresIn > 0)) {
      throw new TokenGrantError('malformed token response', true, reply.status);
    }
    const lifetimeMs = expiresIn * 1_000;
    this.current = { token, refreshAt: this.now() + lifetimeMs - Math.min(REFRESH_MARGIN_MS, lifetimeMs / 2) };
    return token;
  }
}

function parseJson(text: string): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(text);
    return typeof value === 'object' && value !== null ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}
