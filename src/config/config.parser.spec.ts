import { createECDH, generateKeyPairSync, randomBytes } from 'node:crypto';

import { describe, expect, it } from 'vitest';

import { generateVapidKeys } from '../../test/support/web-push-server.js';

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

  it('takes one Redis by default, and a Redis Cluster from comma-separated seeds with REDIS_MODE=cluster', () => {
    expect(parseEnv(valid).redisMode).toBe('single');
    const seeds = 'redis://a:7000, redis://b:7000,rediss://c:7000';
    const config = parseEnv({ ...valid, REDIS_MODE: 'cluster', REDIS_URL: seeds });
    expect(config.redisMode).toBe('cluster');
    expect(config.redisUrl).toBe(seeds);
  });

  it('refuses several Redis URLs without cluster mode, a database index in cluster mode, and an unknown mode', () => {
    expect(problemsOf({ ...valid, REDIS_URL: 'redis://a:1,redis://b:1' })).toEqual([
      'REDIS_URL: lists several URLs: set REDIS_MODE=cluster for a Redis Cluster',
    ]);
    expect(problemsOf({ ...valid, REDIS_MODE: 'cluster', REDIS_URL: 'redis://a:1,redis://b:1/3' })).toEqual([
      'REDIS_URL: must name no database in cluster mode (a cluster has only 0)',
    ]);
    expect(problemsOf({ ...valid, REDIS_MODE: 'cluster', REDIS_URL: 'redis://a:1,http://b:1' })).toEqual([
      'REDIS_URL: must be a redis:// or rediss:// URL',
    ]);
    expect(problemsOf({ ...valid, REDIS_MODE: 'sentinel' })).toEqual(['REDIS_MODE: must be single or cluster']);
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

  describe('push providers', () => {
    const rsaKey = generateKeyPairSync('rsa', { modulusLength: 2048 })
      .privateKey.export({ type: 'pkcs8', format: 'pem' })
      .toString();
    const account = (fields: Record<string, unknown> = {}) =>
      JSON.stringify({
        type: 'service_account',
        project_id: 'chat-app-1234',
        private_key_id: 'abc123',
        private_key: rsaKey,
        client_email: 'push@chat-app-1234.iam.gserviceaccount.com',
        token_uri: 'https://oauth2.googleapis.com/token',
        ...fields,
      });
    const vapid = () => {
      const { publicKey, privateKey } = generateVapidKeys();
      return { VAPID_PUBLIC_KEY: publicKey, VAPID_PRIVATE_KEY: privateKey, VAPID_SUBJECT: 'mailto:ops@example.com' };
    };

    it('leaves each provider off when its variables are unset', () => {
      const config = parseEnv(valid);
      expect(config.fcm).toBeNull();
      expect(config.webPush).toBeNull();
    });

    it('enables FCM from the service account JSON, keeping its token_uri', () => {
      const config = parseEnv({ ...valid, FCM_SERVICE_ACCOUNT: account({ token_uri: 'https://idp.example.com/t' }) });
      expect(config.fcm).toEqual({
        projectId: 'chat-app-1234',
        clientEmail: 'push@chat-app-1234.iam.gserviceaccount.com',
        privateKey: rsaKey.trim(),
        privateKeyId: 'abc123',
        tokenUri: 'https://idp.example.com/t',
        baseUrl: 'https://fcm.googleapis.com',
      });
      const local = parseEnv({
        ...valid,
        FCM_SERVICE_ACCOUNT: account({ token_uri: 'http://127.0.0.1:9000/token' }),
        FCM_BASE_URL: 'http://localhost:9001/',
      });
      expect(local.fcm).toMatchObject({ tokenUri: 'http://127.0.0.1:9000/token', baseUrl: 'http://localhost:9001' });
    });

    it('names what is wrong with a service account, without echoing it', () => {
      const problems = (value: string) => problemsOf({ ...valid, FCM_SERVICE_ACCOUNT: value });
      expect(problems('/etc/secrets/firebase.json')).toEqual([
        'FCM_SERVICE_ACCOUNT: must be the service account JSON itself (the contents of the file, not its path)',
      ]);
      expect(problems('[1]')).toEqual([expect.stringMatching(/^FCM_SERVICE_ACCOUNT: must be a JSON object/)]);
      const [broken] = problems(
        account({ type: 'authorized_user', private_key: 'not a key', token_uri: 'http://idp.example.com/token' }),
      );
      expect(broken).toMatch(/^FCM_SERVICE_ACCOUNT: /);
      expect(broken).toContain('"type" must be "service_account"');
      expect(broken).toContain('"private_key" is not a PEM private key');
      expect(broken).toContain('"token_uri" must be an https:// URL (http:// only to localhost)');
      expect(broken).not.toContain('not a key');
      const [missing] = problems(JSON.stringify({ type: 'service_account' }));
      for (const field of ['project_id', 'client_email', 'private_key', 'token_uri']) {
        expect(missing).toContain(`"${field}" is missing`);
      }
      const ecKey = generateKeyPairSync('ec', { namedCurve: 'P-256' })
        .privateKey.export({ type: 'pkcs8', format: 'pem' })
        .toString();
      expect(problems(account({ private_key: ecKey }))).toEqual([
        'FCM_SERVICE_ACCOUNT: "private_key" must be an RSA key',
      ]);
    });

    it('takes FCM_BASE_URL as an origin only', () => {
      for (const bad of ['https://fcm.example.com/v1', 'http://fcm.example.com', 'fcm.example.com']) {
        expect(problemsOf({ ...valid, FCM_SERVICE_ACCOUNT: account(), FCM_BASE_URL: bad }), bad).toEqual([
          expect.stringMatching(/^FCM_BASE_URL: /),
        ]);
      }
    });

    it('enables web push with all three VAPID settings, in unpadded base64url', () => {
      const keys = vapid();
      const config = parseEnv({ ...valid, ...keys, VAPID_PRIVATE_KEY: `${keys.VAPID_PRIVATE_KEY}=` });
      expect(config.webPush).toEqual({
        publicKey: keys.VAPID_PUBLIC_KEY,
        privateKey: keys.VAPID_PRIVATE_KEY,
        subject: 'mailto:ops@example.com',
      });
      expect(parseEnv({ ...valid, ...keys, VAPID_SUBJECT: 'https://example.com/contact' }).webPush?.subject).toBe(
        'https://example.com/contact',
      );
    });

    it('refuses partial, malformed or mismatched VAPID keys', () => {
      const keys = vapid();
      expect(problemsOf({ ...valid, VAPID_PUBLIC_KEY: keys.VAPID_PUBLIC_KEY })).toEqual([
        expect.stringMatching(/^VAPID_PRIVATE_KEY: required when any VAPID_\* setting is set/),
        expect.stringMatching(/^VAPID_SUBJECT: required/),
      ]);
      const offCurve = Buffer.from(keys.VAPID_PUBLIC_KEY, 'base64url');
      offCurve[64] ^= 1;
      const malformed = problemsOf({
        ...valid,
        VAPID_PUBLIC_KEY: offCurve.toString('base64url'),
        VAPID_PRIVATE_KEY: 'c2hvcnQ',
        VAPID_SUBJECT: 'ops@example.com',
      });
      expect(malformed.map((p) => p.split(':')[0]).sort()).toEqual([
        'VAPID_PRIVATE_KEY',
        'VAPID_PUBLIC_KEY',
        'VAPID_SUBJECT',
      ]);
      expect(problemsOf({ ...valid, ...keys, VAPID_PUBLIC_KEY: vapid().VAPID_PUBLIC_KEY })).toEqual([
        'VAPID_PUBLIC_KEY: is not the public key of VAPID_PRIVATE_KEY',
      ]);
    });

    it('takes a private key with a leading zero byte only at its full 32 bytes, as web-push does', () => {
      // 1 key in 256 starts with a zero byte; Node's ECDH.getPrivateKey() then returns 31 bytes.
      const scalar = Buffer.concat([Buffer.alloc(1), randomBytes(31)]);
      const ecdh = createECDH('prime256v1');
      ecdh.setPrivateKey(scalar);
      const keys = { ...vapid(), VAPID_PUBLIC_KEY: ecdh.getPublicKey().toString('base64url') };
      expect(parseEnv({ ...valid, ...keys, VAPID_PRIVATE_KEY: scalar.toString('base64url') }).webPush).toBeDefined();
      expect(problemsOf({ ...valid, ...keys, VAPID_PRIVATE_KEY: scalar.subarray(1).toString('base64url') })).toEqual([
        expect.stringMatching(/^VAPID_PRIVATE_KEY: must be base64url of a P-256 private key \(32 bytes\)/),
      ]);
    });
  });
});
