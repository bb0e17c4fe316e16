import { randomBytes } from 'node:crypto';

import { describe, expect, it } from 'vitest';

import { ConfigError, parseEnv } from './config.parser.js';

const key = (bytes = 32) => randomBytes(bytes).toString('base64');
const valid = {
  NODE_ENV: 'production',
  DATABASE_URL: 'postgresql://u:p@db:5432/messaging',
  REDIS_URL: 'redis://cache:6379',
  JWT_SECRET: 'x'.repeat(32),
  ENCRYPTION_KEYS: `1:${key()},2:${key()}`,
};

function problemsOf(env: Record<string, string | undefined>): string[] {
  try {
    parseEnv(env);
  } catch (error) {
    if (error instanceof ConfigError) return error.problems;
    throw error;
  }
  return [];
}

describe('configuration', () => {
  it('parses a complete production environment with defaults for the rest', () => {
    const config = parseEnv(valid);
    expect(config.port).toBe(3000);
    expect(config.host).toBe('0.0.0.0');
    expect(config.migrateOnStart).toBe(true);
    expect(config.logLevel).toBe('info');
    expect(config.encryption.activeVersion).toBe(2);
    expect(config.encryption.keys.map((k) => k.version)).toEqual([1, 2]);
    expect(config.apns).toBeNull();
    expect(config.corsOrigins).toEqual([]);
    expect(config.jwt.key.kind).toBe('secret');
    expect(config.jwt.clockToleranceSec).toBe(30);
  });

  it('reports every missing variable at once', () => {
    const problems = problemsOf({ NODE_ENV: 'production' });
    for (const name of ['DATABASE_URL', 'REDIS_URL', 'JWT_SECRET', 'ENCRYPTION_KEYS']) {
      expect(problems.some((p) => p.startsWith(`${name}:`))).toBe(true);
    }
  });

  it('names each bad value', () => {
    const problems = problemsOf({
      ...valid,
      PORT: 'eighty',
      DATABASE_URL: 'mysql://x',
      REDIS_URL: 'http://x',
      JWT_SECRET: 'short',
      ENCRYPTION_KEYS: `1:${key(16)}`,
      MIGRATE_ON_START: 'maybe',
      LOG_LEVEL: 'loud',
      APNS_KEY_ID: 'ABC',
    });
    for (const name of [
      'PORT',
      'DATABASE_URL',
      'REDIS_URL',
      'JWT_SECRET',
      'ENCRYPTION_KEYS',
      'MIGRATE_ON_START',
      'LOG_LEVEL',
      'APNS_KEY',
      'APNS_TEAM_ID',
      'APNS_TOPIC',
    ]) {
      expect(
        problems.some((p) => p.startsWith(`${name}:`)),
        `${name} in ${problems.join('; ')}`,
      ).toBe(true);
    }
  });

  it('refuses an active key version that is not listed', () => {
    expect(problemsOf({ ...valid, ENCRYPTION_ACTIVE_KEY: '7' })).toEqual([
      expect.stringMatching(/^ENCRYPTION_ACTIVE_KEY:/),
    ]);
    expect(parseEnv({ ...valid, ENCRYPTION_ACTIVE_KEY: '1' }).encryption.activeVersion).toBe(1);
  });

  it('refuses a socket send buffer smaller than four of the largest messages', () => {
    expect(problemsOf({ ...valid, SOCKET_SEND_BUFFER_BYTES: String(256 * 1024 - 1) })).toEqual([
      'SOCKET_SEND_BUFFER_BYTES: must be at least 4 × MAX_MESSAGE_BYTES (262144), got 262143',
    ]);
    expect(problemsOf({ ...valid, SOCKET_SEND_BUFFER_BYTES: '4096', MAX_MESSAGE_BYTES: '1024' })).toEqual([]);
    expect(parseEnv(valid).socketSendBufferBytes).toBe(4 * 1024 * 1024);
  });

  it('refuses two JWT key sources at once', () => {
    expect(problemsOf({ ...valid, JWT_JWKS_URL: 'https://idp.example.com/jwks' })).toEqual([
      expect.stringMatching(/^JWT_SECRET: set only one/),
    ]);
  });

  it('enables push only with all four APNs settings', () => {
    const config = parseEnv({
      ...valid,
      APNS_KEY: '-----BEGIN PRIVATE KEY-----\\nabc\\n-----END PRIVATE KEY-----',
      APNS_KEY_ID: 'KEY123',
      APNS_TEAM_ID: 'TEAM123',
      APNS_TOPIC: 'com.example.chat',
      APNS_PORT: '8443',
      APNS_HOST: 'localhost',
    });
    expect(config.apns).toMatchObject({ keyId: 'KEY123', port: 8443, host: 'localhost', production: false });
    expect(config.apns?.key).toContain('\nabc\n');
  });

  it('parses lists and booleans', () => {
    const config = parseEnv({
      ...valid,
      CORS_ORIGINS: 'https://a.example.com, https://b.example.com',
      JWT_AUDIENCE: 'chat',
      MIGRATE_ON_START: 'false',
      APNS_PRODUCTION: 'true',
    });
    expect(config.corsOrigins).toEqual(['https://a.example.com', 'https://b.example.com']);
    expect(config.jwt.audience).toEqual(['chat']);
    expect(config.migrateOnStart).toBe(false);
  });

  it('turns the demo on outside production and off in production unless DEMO_ENABLED says otherwise', () => {
    expect(parseEnv(valid).demoEnabled).toBe(false);
    expect(parseEnv({ ...valid, DEMO_ENABLED: 'true' }).demoEnabled).toBe(true);
    expect(parseEnv({ ...valid, NODE_ENV: 'development' }).demoEnabled).toBe(true);
    expect(parseEnv({ ...valid, NODE_ENV: 'test', DEMO_ENABLED: 'off' }).demoEnabled).toBe(false);
    expect(problemsOf({ ...valid, DEMO_ENABLED: 'sometimes' })).toEqual([expect.stringMatching(/^DEMO_ENABLED:/)]);
  });
});
