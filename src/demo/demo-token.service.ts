import { Injectable } from '@nestjs/common';
import { SignJWT } from 'jose';

import { AppError } from '../common/app-error.js';
import { AppConfig } from '../config/app-config.js';

/** Dev tokens live an hour; the page's token provider asks again before they expire. */
const DEMO_TOKEN_TTL_SEC = 3_600;

/**
 * Signs development tokens for the demo page, as `npm run token` does: HS256 with the
 * configured JWT_SECRET, with the configured issuer and audience so that TokenVerifier
 * takes them. Never provided in production (DemoModule).
 */
@Injectable()
export class DemoTokenService {
  constructor(private readonly config: AppConfig) {}

  async issue(userId: string): Promise<{ token: string; expiresAt: string }> {
    const { key, issuer, audience } = this.config.jwt;
    if (key.kind !== 'secret') {
      // With a public key or a JWKS the private key is the identity provider's, not ours.
      throw AppError.notFound('dev tokens need JWT_SECRET; paste a token from your identity provider instead');
    }
    const expiresAt = Math.floor(Date.now() / 1000) + DEMO_TOKEN_TTL_SEC;
    let jwt = new SignJWT({})
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
      .setSubject(userId)
      .setIssuedAt()
      .setExpirationTime(expiresAt);
    if (issuer) jwt = jwt.setIssuer(issuer);
    if (audience?.[0]) jwt = jwt.setAudience(audience[0]);
    return { token: await jwt.sign(key.secret), expiresAt: new Date(expiresAt * 1000).toISOString() };
  }
}
