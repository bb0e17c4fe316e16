import { createPublicKey, type KeyObject } from 'node:crypto';

import { Injectable } from '@nestjs/common';
import { createVerifier, TokenError, type Algorithm } from 'fast-jwt';
import { createRemoteJWKSet, errors, jwtVerify, type JWTPayload } from 'jose';

import { AppError, ErrorCode } from '../common/app-error.js';
import { AppConfig } from '../config/app-config.js';
import { USER_ID } from '../common/ids.js';

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
const REQUIRED_CLAIMS = ['exp', 'sub'];

/**
 * Verifies JWTs as PROTOCOL.md section 5 says: algorithms pinned to the configured key
 * (HS256 for a secret; the key's own algorithm for a PEM key; RS256/ES256/EdDSA for a
 * JWKS), `exp` required, `iss`/`aud` when configured, 30 s clock tolerance. `alg: none`
 * and algorithm swaps (HS256 signed with a public key) are refused by the pinning.
 *
 * A secret or a PEM key is checked synchronously with fast-jwt (node:crypto): every
 * connection verifies a token, and WebCrypto's asynchronous HMAC costs a thread-pool
 * round trip each. A JWKS, whose keys are fetched and cached by URL, goes through jose.
 *
 * @example
 *   const identity = await verifier.verify(token); // throws AppError unauthorized|token_expired
 */
@Injectable()
export class TokenVerifier {
  /** Checks signature and claims; synchronous for a local key, a promise for a JWKS. */
  private readonly check: (token: string) => JWTPayload | Promise<JWTPayload>;

  constructor(config: AppConfig) {
    const { key: source, issuer, audience, clockToleranceSec } = config.jwt;
    const options = {
      // fast-jwt checks iss/aud only when present: a configured one must be there.
      requiredClaims: [...REQUIRED_CLAIMS, ...(issuer ? ['iss'] : []), ...(audience ? ['aud'] : [])],
      allowedIss: issuer,
      allowedAud: audience,
      clockTolerance: clockToleranceSec * 1000,
      cache: false,
    };
    switch (source.kind) {
      case 'secret':
        this.check = createVerifier({ ...options, key: Buffer.from(source.secret), algorithms: ['HS256'] });
        break;
      case 'publicKey': {
        const algorithm = algorithmOf(createPublicKey(source.pem));
        this.check = createVerifier({ ...options, key: source.pem, algorithms: [algorithm] });
        break;
      }
      case 'jwks': {
        const keys = createRemoteJWKSet(new URL(source.url), { cooldownDuration: 30_000, cacheMaxAge: 10 * 60_000 });
        const jwksOptions = {
          algorithms: ASYMMETRIC_ALGORITHMS,
          requiredClaims: REQUIRED_CLAIMS,
          issuer,
          audience,
          clockTolerance: clockToleranceSec,
        };
        this.check = async (token) => (await jwtVerify(token, keys, jwksOptions)).payload;
        break;
      }
    }
  }

  async verify(token: unknown): Promise<Identity> {
    if (typeof token !== 'string' || token.length === 0) {
      throw new AppError(ErrorCode.Unauthorized, 'a token is required');
    }
    if (token.length > MAX_TOKEN_LENGTH) throw new AppError(ErrorCode.Unauthorized, 'token is malformed');
    let payload: JWTPayload;
    try {
      payload = await this.check(token);
    } catch (error) {
      throw toAuthError(error);
    }
    if (typeof payload.sub !== 'string' || !USER_ID.test(payload.sub)) {
      throw new AppError(ErrorCode.Unauthorized, 'token has no valid sub');
    }
    if (typeof payload.exp !== 'number') throw new AppError(ErrorCode.Unauthorized, 'token claim "exp" is not valid');
    const scopes = typeof payload.scope === 'string' ? payload.scope.split(' ').filter(Boolean) : [];
    return {
      userId: payload.sub,
      isService: scopes.includes('service'),
      scopes,
      expiresAt: new Date(payload.exp * 1000),
    };
  }
}

function algorithmOf(key: KeyObject): Algorithm {
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
  if (error instanceof TokenError) return fromFastJwt(error);
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

/** fast-jwt's error codes, in the same words as jose's above. */
function fromFastJwt(error: TokenError): AppError {
  const { codes } = TokenError;
  if (error.code === codes.expired) return new AppError(ErrorCode.TokenExpired, 'token has expired');
  if (error.code === codes.invalidAlgorithm) {
    return new AppError(ErrorCode.Unauthorized, 'token algorithm is not allowed');
  }
  if (error.code === codes.invalidSignature) {
    return new AppError(ErrorCode.Unauthorized, 'token signature is not valid');
  }
  const claimCodes: string[] = [
    codes.missingRequiredClaim,
    codes.invalidClaimType,
    codes.invalidClaimValue,
    codes.inactive,
  ];
  if (claimCodes.includes(error.code)) {
    const claim = /(?:The|of) (\w+) claim/.exec(error.message)?.[1];
    return new AppError(
      ErrorCode.Unauthorized,
      claim ? `token claim "${claim}" is not valid` : 'token claims are not valid',
    );
  }
  return new AppError(ErrorCode.Unauthorized, 'token is malformed');
}
