import { createPublicKey, webcrypto, type KeyObject } from 'node:crypto';

type CryptoKey = webcrypto.CryptoKey;

import { Injectable } from '@nestjs/common';
import { createRemoteJWKSet, errors, jwtVerify, type JWTPayload, type JWTVerifyGetKey } from 'jose';

import { AppError, ErrorCode } from '../common/app-error.js';
import { AppConfig } from '../config/app-config.js';

/** Who a verified token speaks for. */
export interface Identity {
  /** The token's `sub`. */
  userId: string;
  /** `scope` contains `service`: may act for any user a request names. */
  isService: boolean;
  scopes: string[];
  expiresAt: Date;
}

const ASYMMETRIC_ALGORITHMS = ['RS256', 'ES256', 'EdDSA'];
const MAX_TOKEN_LENGTH = 8_192;

/**
 * Verifies JWTs as PROTOCOL.md section 5 says: algorithms pinned to the configured key
 * (HS256 for a secret; the key's own algorithm for a PEM key; RS256/ES256/EdDSA for a
 * JWKS), `exp` required, `iss`/`aud` when configured, 30 s clock tolerance. `alg: none`
 * and algorithm swaps (HS256 signed with a public key) are refused by the pinning.
 *
 * @example
 *   const identity = await verifier.verify(token); // throws AppError unauthorized|token_expired
 */
@Injectable()
export class TokenVerifier {
  private readonly key: CryptoKey | Promise<CryptoKey> | KeyObject | JWTVerifyGetKey;
  private readonly algorithms: string[];

  constructor(private readonly config: AppConfig) {
    const source = config.jwt.key;
    switch (source.kind) {
      case 'secret':
        // Imported once: handing jose the raw bytes would re-import the key on every verify.
        this.key = webcrypto.subtle.importKey('raw', source.secret, { name: 'HMAC', hash: 'SHA-256' }, false, [
          'verify',
        ]);
        this.algorithms = ['HS256'];
        break;
      case 'publicKey': {
        const key = createPublicKey(source.pem);
        this.key = key;
        this.algorithms = [algorithmOf(key)];
        break;
      }
      case 'jwks':
        this.key = createRemoteJWKSet(new URL(source.url), { cooldownDuration: 30_000, cacheMaxAge: 10 * 60_000 });
        this.algorithms = ASYMMETRIC_ALGORITHMS;
        break;
    }
  }

  async verify(token: unknown): Promise<Identity> {
    if (typeof token !== 'string' || token.length === 0) {
      throw new AppError(ErrorCode.Unauthorized, 'a token is required');
    }
    if (token.length > MAX_TOKEN_LENGTH) throw new AppError(ErrorCode.Unauthorized, 'token is malformed');
    let payload: JWTPayload;
    try {
      const options = {
        algorithms: this.algorithms,
        requiredClaims: ['exp', 'sub'],
        issuer: this.config.jwt.issuer,
        audience: this.config.jwt.audience,
        clockTolerance: this.config.jwt.clockToleranceSec,
      };
      const key = this.key instanceof Promise ? await this.key : this.key;
      const result =
        typeof key === 'function' ? await jwtVerify(token, key, options) : await jwtVerify(token, key, options);
      payload = result.payload;
    } catch (error) {
      throw toAuthError(error);
    }
    if (typeof payload.sub !== 'string' || payload.sub.length === 0 || payload.sub.length > 128) {
      throw new AppError(ErrorCode.Unauthorized, 'token has no valid sub');
    }
    const scopes = typeof payload.scope === 'string' ? payload.scope.split(' ').filter(Boolean) : [];
    return {
      userId: payload.sub,
      isService: scopes.includes('service'),
      scopes,
      expiresAt: new Date((payload.exp ?? 0) * 1000),
    };
  }
}

function algorithmOf(key: KeyObject): string {
  switch (key.asymmetricKeyType) {
    case 'rsa':
    case 'rsa-pss':
      return 'RS256';
    case 'ec':
      return 'ES256';
    case 'ed25519':
      return 'EdDSA';
    case 'dsa':
    case 'ed448':
    case 'x25519':
    case 'x448':
    case undefined:
      throw new Error(`JWT_PUBLIC_KEY: unsupported key type ${key.asymmetricKeyType ?? 'unknown'}`);
  }
}

function toAuthError(error: unknown): AppError {
  if (error instanceof errors.JWTExpired) return new AppError(ErrorCode.TokenExpired, 'token has expired');
  if (error instanceof errors.JWTClaimValidationFailed) {
    return new AppError(ErrorCode.Unauthorized, `token claim "${error.claim}" is not valid`);
  }
  if (error instanceof errors.JOSEAlgNotAllowed)
    return new AppError(ErrorCode.Unauthorized, 'token algorithm is not allowed');
  if (error instanceof errors.JWSSignatureVerificationFailed) {
    return new AppError(ErrorCode.Unauthorized, 'token signature is not valid');
  }
  if (error instanceof errors.JWKSNoMatchingKey || error instanceof errors.JWKSTimeout) {
    return new AppError(ErrorCode.Unauthorized, 'no key matches the token');
  }
  return new AppError(ErrorCode.Unauthorized, 'token is malformed');
}
