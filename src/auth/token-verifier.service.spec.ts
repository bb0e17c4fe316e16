import { generateKeyPairSync, createHmac } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

import { SignJWT } from 'jose';
import { describe, expect, it } from 'vitest';

import { AppError } from '../common/app-error.js';
import { parseEnv } from '../config/config.parser.js';
import { TokenVerifier } from './token-verifier.service.js';

const SECRET = 'unit-test-secret-unit-test-secret-0123456789';
const baseEnv = {
  DATABASE_URL: 'postgresql://localhost/x',
  REDIS_URL: 'redis://localhost',
  ENCRYPTION_KEYS: `1:${Buffer.alloc(32).toString('base64')}`,
};
const now = () => Math.floor(Date.now() / 1000);

function verifier(env: Record<string, string> = {}): TokenVerifier {
  return new TokenVerifier(parseEnv({ ...baseEnv, JWT_SECRET: SECRET, ...env }));
}

function hs256(claims: Record<string, unknown>, secret = SECRET): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).sign(new TextEncoder().encode(secret));
}

async function codeOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof AppError) return error.code;
    throw error;
  }
  return 'accepted';
}

const b64url = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');

describe('TokenVerifier', () => {
  it('accepts a valid HS256 token and reads sub, scope and exp', async () => {
    const exp = now() + 600;
    const identity = await verifier().verify(await hs256({ sub: 'alice', exp, scope: 'chat service' }));
    expect(identity).toEqual({
      userId: 'alice',
      isService: true,
      scopes: ['chat', 'service'],
      expiresAt: new Date(exp * 1000),
    });
  });

  it('refuses a missing token as unauthorized', async () => {
    expect(await codeOf(verifier().verify(undefined))).toBe('unauthorized');
    expect(await codeOf(verifier().verify(''))).toBe('unauthorized');
    expect(await codeOf(verifier().verify('not.a.jwt'))).toBe('unauthorized');
  });

  it('refuses a bad signature', async () => {
    expect(
      await codeOf(verifier().verify(await hs256({ sub: 'a', exp: now() + 60 }, 'another-secret-another-secret-0123'))),
    ).toBe('unauthorized');
  });

  it('refuses alg none', async () => {
    const token = `${b64url({ alg: 'none', typ: 'JWT' })}.${b64url({ sub: 'a', exp: now() + 60 })}.`;
    expect(await codeOf(verifier().verify(token))).toBe('unauthorized');
  });

  it('refuses an expired token as token_expired, within the 30 s tolerance accepts it', async () => {
    expect(await codeOf(verifier().verify(await hs256({ sub: 'a', exp: now() - 120 })))).toBe('token_expired');
    expect(await codeOf(verifier().verify(await hs256({ sub: 'a', exp: now() - 10 })))).toBe('accepted');
  });

  it('requires exp and sub', async () => {
    expect(await codeOf(verifier().verify(await hs256({ sub: 'a' })))).toBe('unauthorized');
    expect(await codeOf(verifier().verify(await hs256({ exp: now() + 60 })))).toBe('unauthorized');
  });

  it('refuses a sub that is no user id: control characters (NUL included), or over 128 characters', async () => {
    for (const sub of ['a\u0000b', 'tab\there', '\u007f', 'x'.repeat(129), '']) {
      expect(await codeOf(verifier().verify(await hs256({ sub, exp: now() + 60 }))), JSON.stringify(sub)).toBe(
        'unauthorized',
      );
    }
    expect(await codeOf(verifier().verify(await hs256({ sub: 'ünïcödé user@example.com', exp: now() + 60 })))).toBe(
      'accepted',
    );
  });

  it('checks issuer and audience when configured', async () => {
    const strict = verifier({ JWT_ISSUER: 'https://idp.example.com', JWT_AUDIENCE: 'chat' });
    const good = await hs256({ sub: 'a', exp: now() + 60, iss: 'https://idp.example.com', aud: 'chat' });
    expect(await codeOf(strict.verify(good))).toBe('accepted');
    expect(
      await codeOf(strict.verify(await hs256({ sub: 'a', exp: now() + 60, iss: 'https://evil', aud: 'chat' }))),
    ).toBe('unauthorized');
    expect(
      await codeOf(
        strict.verify(await hs256({ sub: 'a', exp: now() + 60, iss: 'https://idp.example.com', aud: 'other' })),
      ),
    ).toBe('unauthorized');
  });

  it('with an RSA public key, accepts RS256 and refuses HS256 signed with that public key', async () => {
    const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const pem = publicKey.export({ type: 'spki', format: 'pem' }).toString();
    const rsa = new TokenVerifier(parseEnv({ ...baseEnv, JWT_PUBLIC_KEY: pem }));
    const good = await new SignJWT({ sub: 'a', exp: now() + 60 }).setProtectedHeader({ alg: 'RS256' }).sign(privateKey);
    expect(await codeOf(rsa.verify(good))).toBe('accepted');

    const header = b64url({ alg: 'HS256', typ: 'JWT' });
    const payload = b64url({ sub: 'a', exp: now() + 60 });
    const signature = createHmac('sha256', pem).update(`${header}.${payload}`).digest('base64url');
    expect(await codeOf(rsa.verify(`${header}.${payload}.${signature}`))).toBe('unauthorized');
  });

  it('with an Ed25519 public key, accepts EdDSA tokens', async () => {
    const { publicKey, privateKey } = generateKeyPairSync('ed25519');
    const pem = publicKey.export({ type: 'spki', format: 'pem' }).toString();
    const ed = new TokenVerifier(parseEnv({ ...baseEnv, JWT_PUBLIC_KEY: pem }));
    const token = await new SignJWT({ sub: 'a', exp: now() + 60 })
      .setProtectedHeader({ alg: 'EdDSA' })
      .sign(privateKey);
    expect(await codeOf(ed.verify(token))).toBe('accepted');
  });
});

describe('TokenVerifier, claims and headers', () => {
  it('refuses a token not valid yet (nbf past the tolerance), accepts one within it', async () => {
    expect(await codeOf(verifier().verify(await hs256({ sub: 'a', exp: now() + 600, nbf: now() + 120 })))).toBe(
      'unauthorized',
    );
    expect(await codeOf(verifier().verify(await hs256({ sub: 'a', exp: now() + 600, nbf: now() + 10 })))).toBe(
      'accepted',
    );
  });

  it('accepts an audience list that contains the configured audience', async () => {
    const strict = verifier({ JWT_AUDIENCE: 'chat' });
    expect(await codeOf(strict.verify(await hs256({ sub: 'a', exp: now() + 60, aud: ['other', 'chat'] })))).toBe(
      'accepted',
    );
    expect(await codeOf(strict.verify(await hs256({ sub: 'a', exp: now() + 60, aud: ['other'] })))).toBe(
      'unauthorized',
    );
  });

  it('refuses claims of the wrong type and another HMAC algorithm', async () => {
    expect(await codeOf(verifier().verify(await hs256({ sub: 'a', exp: String(now() + 60) })))).toBe('unauthorized');
    expect(await codeOf(verifier().verify(await hs256({ sub: 42, exp: now() + 60 })))).toBe('unauthorized');
    const hs512 = await new SignJWT({ sub: 'a', exp: now() + 60 })
      .setProtectedHeader({ alg: 'HS512' })
      .sign(new TextEncoder().encode(SECRET));
    expect(await codeOf(verifier().verify(hs512))).toBe('unauthorized');
  });

  it('refuses a header that names a critical extension it does not know', async () => {
    const header = b64url({ alg: 'HS256', crit: ['x-unknown'], 'x-unknown': 1 });
    const payload = b64url({ sub: 'a', exp: now() + 60 });
    const signature = createHmac('sha256', SECRET).update(`${header}.${payload}`).digest('base64url');
    expect(await codeOf(verifier().verify(`${header}.${payload}.${signature}`))).toBe('unauthorized');
  });

  it('refuses a token without the issuer or audience that is configured', async () => {
    const strict = verifier({ JWT_ISSUER: 'https://idp.example.com', JWT_AUDIENCE: 'chat' });
    expect(await codeOf(strict.verify(await hs256({ sub: 'a', exp: now() + 60, aud: 'chat' })))).toBe('unauthorized');
    expect(
      await codeOf(strict.verify(await hs256({ sub: 'a', exp: now() + 60, iss: 'https://idp.example.com' }))),
    ).toBe('unauthorized');
  });

  it('says which claim failed', async () => {
    const strict = verifier({ JWT_ISSUER: 'https://idp.example.com' });
    await expect(strict.verify(await hs256({ sub: 'a', exp: now() + 60, iss: 'https://evil' }))).rejects.toThrow(
      'token claim "iss" is not valid',
    );
  });
});

describe('TokenVerifier with a JWKS URL', () => {
  it('accepts a token signed by a key of the set, refuses one signed by another key', async () => {
    const { publicKey, privateKey } = generateKeyPairSync('ed25519');
    const other = generateKeyPairSync('ed25519');
    const jwks = { keys: [{ ...publicKey.export({ format: 'jwk' }), kid: 'k1', alg: 'EdDSA', use: 'sig' }] };
    const server = createServer((_request, response) => {
      response.setHeader('content-type', 'application/json');
      response.end(JSON.stringify(jwks));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks.json`;
      const remote = new TokenVerifier(parseEnv({ ...baseEnv, JWT_JWKS_URL: url }));
      const sign = (key: typeof privateKey) =>
        new SignJWT({ sub: 'a', exp: now() + 60 }).setProtectedHeader({ alg: 'EdDSA', kid: 'k1' }).sign(key);

      expect(await codeOf(remote.verify(await sign(privateKey)))).toBe('accepted');
      expect(await codeOf(remote.verify(await sign(other.privateKey)))).toBe('unauthorized');
    } finally {
      server.close();
    }
  });
});
