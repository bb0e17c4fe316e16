import { generateKeyPairSync, type KeyObject } from 'node:crypto';

import { SignJWT, UnsecuredJWT, decodeJwt, decodeProtectedHeader } from 'jose';
import { io } from 'socket.io-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { SendData, SessionPayload, WireError } from '@messaging-service/client/protocol';
import { startTestApp, TEST_JWT_SECRET, type TestApp } from '../support/app.js';
import {
  connect,
  connectRefused,
  dataOf,
  mintToken,
  type ClientSocket,
  type ConnectOptions,
  type TestClient,
} from '../support/clients.js';
import { createConversation, userId } from '../support/fixtures.js';
import { startPrivateRedis } from '../support/databases.js';
import { pollStatus } from '../support/service-process.js';

type Transport = 'websocket' | 'polling';

const SESSION_FIELDS = ['deviceId', 'limits', 'serverTime', 'sessionId', 'tokenExpiresAt', 'unacked', 'userId'];
const ISO_8601 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;
/** How a client sees a server-side `disconnect(true)`: the DISCONNECT packet, or the closed transport. */
const SERVER_CLOSE_REASONS = ['io server disconnect', 'transport close'];

const nowSec = () => Math.floor(Date.now() / 1000);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const encoder = new TextEncoder();

/** Resolves with the reason of the socket's next disconnect; fails after `timeoutMs`. */
function nextDisconnect(socket: ClientSocket, timeoutMs = 5_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`still connected after ${timeoutMs} ms`)), timeoutMs);
    socket.once('disconnect', (reason) => {
      clearTimeout(timer);
      resolve(reason);
    });
  });
}

/** The `exp` of a token as the ISO string the server reports. */
const expiryOf = (token: string) => new Date((decodeJwt(token).exp ?? 0) * 1000).toISOString();

/** A refusal exactly as PROTOCOL.md section 1 puts it: message = code, data = { code, message }. */
function expectRefusal(refusal: { message: string; data: unknown }, code: string): void {
  expect(refusal).toEqual({ message: code, data: { code, message: expect.any(String) } });
  expect((refusal.data as { message: string }).message.length).toBeGreaterThan(0);
}

describe('the /v1 handshake', () => {
  let service: TestApp;
  const open: ClientSocket[] = [];

  const client = async (user: string, options: ConnectOptions = {}): Promise<TestClient> => {
    const c = await connect(service.url, user, options);
    open.push(c.socket);
    return c;
  };

  /** Connects with the token in an `Authorization: Bearer` header and only deviceId in `auth`. */
  const connectWithHeader = (token: string, deviceId: string, transports: Transport[]) =>
    new Promise<{ socket: ClientSocket; session: SessionPayload }>((resolve, reject) => {
      const socket: ClientSocket = io(`${service.url}/v1`, {
        auth: { deviceId },
        extraHeaders: { Authorization: `Bearer ${token}` },
        transports,
        reconnection: false,
        forceNew: true,
      });
      open.push(socket);
      socket.once('session', (session) => resolve({ socket, session }));
      socket.once('connect_error', reject);
    });

  const refused = (auth: Record<string, unknown>, headers?: Record<string, string>) =>
    connectRefused(service.url, auth, headers);

  beforeAll(async () => {
    service = await startTestApp({ MAX_MESSAGE_BYTES: '2048', MAX_BATCH: '50' });
  });

  afterAll(async () => {
    for (const socket of open) socket.disconnect();
    await service.close();
  });

  describe('a successful connect', () => {
    it('is greeted by session with exactly the contract fields', async () => {
      const user = userId('alice');
      const token = await mintToken(user, { ttlSec: 600 });
      const before = Date.now();
      const c = await client(user, { token, deviceId: 'phone-1' });
      const after = Date.now();

      expect(c.events[0]?.event).toBe('session');
      const { session } = c;
      expect(Object.keys(session).sort()).toEqual(SESSION_FIELDS);
      expect(Object.keys(session.limits).sort()).toEqual(['maxBatch', 'maxMessageBytes']);
      expect(session).toEqual({
        userId: user,
        deviceId: 'phone-1',
        sessionId: expect.any(String),
        serverTime: expect.stringMatching(ISO_8601),
        tokenExpiresAt: expiryOf(token),
        unacked: 0,
        limits: { maxMessageBytes: 2048, maxBatch: 50 },
      });
      expect(session.sessionId.length).toBeGreaterThan(0);
      expect(new Date(session.serverTime).toISOString()).toBe(session.serverTime);
      expect(Date.parse(session.serverTime)).toBeGreaterThanOrEqual(before - 1_000);
      expect(Date.parse(session.serverTime)).toBeLessThanOrEqual(after + 1_000);
      expect(c.socket.connected).toBe(true);
    });

    it('gives every connection its own sessionId', async () => {
      const user = userId('alice');
      const first = await client(user, { deviceId: 'phone' });
      const second = await client(user, { deviceId: 'laptop' });
      const third = await client(user, { deviceId: 'phone' });
      const ids = new Set([first.session.sessionId, second.session.sessionId, third.session.sessionId]);
      expect(ids.size).toBe(3);
    });

    it("reports the device's offline-queue length in unacked", async () => {
      const alice = userId('alice');
      const bob = userId('bob');
      const conversationId = await createConversation(service, alice, [bob]);
      const bobPhone = await client(bob, { deviceId: 'phone' });
      expect(bobPhone.session.unacked).toBe(0);
      bobPhone.close();
      const sender = await client(alice, { deviceId: 'phone' });
      for (const clientMsgId of ['u1', 'u2', 'u3']) {
        dataOf(await sender.request<SendData>('send', { conversationId, clientMsgId, body: clientMsgId }));
      }
      const again = await client(bob, { deviceId: 'phone' });
      expect(again.session.unacked).toBe(3);
      // A device of the same user never seen before has an empty queue.
      expect((await client(bob, { deviceId: 'tablet' })).session.unacked).toBe(0);
    });

    it('accepts a deviceId of exactly 64 allowed characters', async () => {
      const deviceId = `${'A'.repeat(20)}${'z'.repeat(20)}0123456789_-${'x'.repeat(12)}`;
      expect(deviceId).toHaveLength(64);
      const c = await client(userId('alice'), { deviceId });
      expect(c.session.deviceId).toBe(deviceId);
    });

    it('accepts a token that expired within the 30 s clock tolerance', async () => {
      const user = userId('alice');
      const token = await mintToken(user, { ttlSec: -10 });
      const c = await client(user, { token });
      expect(c.session.tokenExpiresAt).toBe(expiryOf(token));
      dataOf(await c.request('ping', {}));
    });

    for (const transports of [['websocket'], ['polling'], ['polling', 'websocket']] as Transport[][]) {
      it(`works over transports ${JSON.stringify(transports)}`, async () => {
        const user = userId('alice');
        const c = await client(user, { transports });
        expect(c.session.userId).toBe(user);
        const reply = dataOf(await c.request<{ t: unknown; serverTime: string }>('ping', { t: 'hi' }));
        expect(reply.t).toBe('hi');
      });
    }

    for (const transports of [['websocket'], ['polling']] as Transport[][]) {
      it(`takes the token from an Authorization: Bearer header over ${transports[0]}`, async () => {
        const user = userId('alice');
        const token = await mintToken(user);
        const { socket, session } = await connectWithHeader(token, 'header-device', transports);
        expect(session).toMatchObject({ userId: user, deviceId: 'header-device', tokenExpiresAt: expiryOf(token) });
        expect(socket.connected).toBe(true);
      });
    }
  });

  describe('refusals', () => {
    it('refuses a handshake without a token as unauthorized', async () => {
      expectRefusal(await refused({ deviceId: 'd1' }), 'unauthorized');
      expectRefusal(await refused({}), 'unauthorized');
      expectRefusal(await refused({ token: '', deviceId: 'd1' }), 'unauthorized');
    });

    it('refuses tokens that are not JWTs as unauthorized', async () => {
      for (const token of ['not-a-jwt', 'a.b.c', 42, { sub: 'x' }, ['a'], 'x'.repeat(10_000)]) {
        expectRefusal(await refused({ token, deviceId: 'd1' }), 'unauthorized');
      }
    });

    it('refuses a bad signature as unauthorized', async () => {
      const user = userId('mallory');
      const wrongSecret = await mintToken(user, { secret: 'another-secret-another-secret-0123456789' });
      expectRefusal(await refused({ token: wrongSecret, deviceId: 'd1' }), 'unauthorized');

      // A genuine token's signature over a payload naming someone else.
      const genuine = (await mintToken(user)).split('.');
      const forged = Buffer.from(JSON.stringify({ sub: userId('victim'), exp: nowSec() + 3600 })).toString('base64url');
      expectRefusal(await refused({ token: `${genuine[0]}.${forged}.${genuine[2]}`, deviceId: 'd1' }), 'unauthorized');
    });

    it('refuses alg: none as unauthorized', async () => {
      const token = new UnsecuredJWT({ sub: userId('mallory') }).setExpirationTime(nowSec() + 3600).encode();
      expect(decodeProtectedHeader(token).alg).toBe('none');
      expectRefusal(await refused({ token, deviceId: 'd1' }), 'unauthorized');
    });

    it('refuses another algorithm than the configured HS256, even with the right secret', async () => {
      const token = await new SignJWT({ sub: userId('mallory') })
        .setProtectedHeader({ alg: 'HS512' })
        .setExpirationTime(nowSec() + 3600)
        .sign(encoder.encode(TEST_JWT_SECRET));
      expectRefusal(await refused({ token, deviceId: 'd1' }), 'unauthorized');
    });

    it('refuses an expired token as token_expired', async () => {
      const token = await mintToken(userId('alice'), { ttlSec: -120 });
      expectRefusal(await refused({ token, deviceId: 'd1' }), 'token_expired');
    });

    it('refuses a token without exp or without sub as unauthorized', async () => {
      const noExp = await mintToken(userId('alice'), { claims: { exp: undefined } });
      expect(decodeJwt(noExp)).not.toHaveProperty('exp');
      expectRefusal(await refused({ token: noExp, deviceId: 'd1' }), 'unauthorized');

      const noSub = await mintToken(undefined);
      expect(decodeJwt(noSub)).not.toHaveProperty('sub');
      expectRefusal(await refused({ token: noSub, deviceId: 'd1' }), 'unauthorized');
    });

    it('refuses a token not valid before a time beyond the clock tolerance as unauthorized', async () => {
      const token = await mintToken(userId('alice'), { claims: { nbf: nowSec() + 600 } });
      expectRefusal(await refused({ token, deviceId: 'd1' }), 'unauthorized');
    });

    it('refuses a bad or missing deviceId as bad_request', async () => {
      const token = await mintToken(userId('alice'));
      const bad: unknown[] = [undefined, '', 'has space', 'a/b', 'é', 'x'.repeat(65), 'd1\n', 42, null, ['d1'], {}];
      for (const deviceId of bad) {
        const auth = deviceId === undefined ? { token } : { token, deviceId };
        expectRefusal(await refused(auth), 'bad_request');
      }
    });

    it('refuses a bad token in the Authorization header as unauthorized', async () => {
      const wrongSecret = await mintToken(userId('mallory'), { secret: 'another-secret-another-secret-0123456789' });
      expectRefusal(await refused({ deviceId: 'd1' }, { Authorization: `Bearer ${wrongSecret}` }), 'unauthorized');
      expectRefusal(await refused({ deviceId: 'd1' }, { Authorization: 'Bearer ' }), 'unauthorized');
      const expired = await mintToken(userId('alice'), { ttlSec: -120 });
      expectRefusal(await refused({ deviceId: 'd1' }, { Authorization: `Bearer ${expired}` }), 'token_expired');
    });
  });

  describe('one live socket per device', () => {
    it('replaces the older socket of the same device: session_replaced, then disconnected', async () => {
      const user = userId('alice');
      const first = await client(user, { deviceId: 'phone' });
      const firstGone = nextDisconnect(first.socket);
      const second = await client(user, { deviceId: 'phone' });

      const error = await first.waitForEvent<WireError>('error', (e) => e.code === 'session_replaced', 5_000);
      expect(error).toEqual({ code: 'session_replaced', message: expect.any(String) });
      expect(SERVER_CLOSE_REASONS).toContain(await firstGone);
      expect(first.socket.connected).toBe(false);

      expect(second.socket.connected).toBe(true);
      dataOf(await second.request('ping', {}));
      expect(second.events.filter((e) => e.event === 'error')).toEqual([]);
    });

    it('delivers to the replacing socket only', async () => {
      const alice = userId('alice');
      const bob = userId('bob');
      const conversationId = await createConversation(service, alice, [bob]);
      const old = await client(bob, { deviceId: 'phone' });
      const oldGone = nextDisconnect(old.socket);
      const fresh = await client(bob, { deviceId: 'phone' });
      await oldGone;
      const sender = await client(alice);
      const { message } = dataOf(
        await sender.request<SendData>('send', { conversationId, clientMsgId: 'r1', body: 'hi' }),
      );
      expect(await fresh.waitForMessages(1)).toEqual([message]);
      expect(old.messages).toEqual([]);
    });

    it('keeps the sockets of other devices of the same user, and of other users on the same deviceId', async () => {
      const alice = userId('alice');
      const phone = await client(alice, { deviceId: 'phone' });
      const laptop = await client(alice, { deviceId: 'laptop' });
      const bobPhone = await client(userId('bob'), { deviceId: 'phone' });
      // Whatever a replacement would do has happened once a later request round-trips.
      for (const c of [phone, laptop, bobPhone]) dataOf(await c.request('ping', {}));
      await sleep(200);
      for (const c of [phone, laptop, bobPhone]) {
        expect(c.socket.connected).toBe(true);
        expect(c.events.filter((e) => e.event === 'error')).toEqual([]);
      }
    });

    it('leaves exactly one live socket when the same device connects several times at once', async () => {
      const user = userId('alice');
      const token = await mintToken(user);
      const sockets = Array.from({ length: 4 }, () => {
        const socket: ClientSocket = io(`${service.url}/v1`, {
          auth: { token, deviceId: 'racer' },
          transports: ['websocket'],
          reconnection: false,
          forceNew: true,
        });
        open.push(socket);
        return socket;
      });
      // Each one ends up either greeted (session) or cut (disconnect) before being cut.
      await Promise.all(
        sockets.map(
          (socket) =>
            new Promise<void>((resolve, reject) => {
              socket.once('session', () => resolve());
              socket.once('disconnect', () => resolve());
              socket.once('connect_error', reject);
            }),
        ),
      );
      await sleep(500);
      const live = sockets.filter((socket) => socket.connected);
      expect(live).toHaveLength(1);
      const reply = (await live[0].timeout(5_000).emitWithAck('ping', {})) as { ok: boolean };
      expect(reply.ok).toBe(true);
    });
  });

  describe('the auth event', () => {
    it('swaps in a fresh token for the same user and returns its expiry', async () => {
      const user = userId('alice');
      const c = await client(user);
      const fresh = await mintToken(user, { ttlSec: 7_200 });
      const reply = await c.request<{ tokenExpiresAt: string }>('auth', { token: fresh });
      expect(reply).toEqual({ ok: true, data: { tokenExpiresAt: expiryOf(fresh) } });
      expect(c.socket.connected).toBe(true);
    });

    it('answers forbidden for a token of another user, keeping the socket', async () => {
      const c = await client(userId('alice'));
      const reply = await c.request('auth', { token: await mintToken(userId('bob')) });
      expect(reply).toEqual({ ok: false, error: { code: 'forbidden', message: expect.any(String) } });
      expect(c.socket.connected).toBe(true);
      dataOf(await c.request('ping', {}));
    });

    it('answers unauthorized or token_expired for an invalid token, keeping the socket', async () => {
      const user = userId('alice');
      const c = await client(user);
      const cases: [string, string][] = [
        [await mintToken(user, { secret: 'another-secret-another-secret-0123456789' }), 'unauthorized'],
        [new UnsecuredJWT({ sub: user }).setExpirationTime(nowSec() + 3600).encode(), 'unauthorized'],
        [await mintToken(user, { claims: { exp: undefined } }), 'unauthorized'],
        ['garbage', 'unauthorized'],
        [await mintToken(user, { ttlSec: -120 }), 'token_expired'],
      ];
      for (const [token, code] of cases) {
        const reply = await c.request('auth', { token });
        expect(reply).toEqual({ ok: false, error: { code, message: expect.any(String) } });
      }
      for (const payload of [{}, { token: 42 }, { token: '' }, 'token']) {
        const reply = await c.request('auth', payload);
        expect(reply).toMatchObject({ ok: false, error: { code: 'bad_request' } });
      }
      expect(c.socket.connected).toBe(true);
    });
  });

  describe('token expiry', () => {
    it('sends token_expired and disconnects at exp, unless a fresh token for the same user came first', async () => {
      const user = userId('alice');
      const shortToken = await mintToken(user, { ttlSec: 2 });
      const exp = Date.parse(expiryOf(shortToken));
      const unrefreshed = await client(user, { token: shortToken, deviceId: 'unrefreshed' });
      const refreshed = await client(user, { token: shortToken, deviceId: 'refreshed' });
      const refusedRefresh = await client(user, { token: shortToken, deviceId: 'refused-refresh' });

      dataOf(await refreshed.request('auth', { token: await mintToken(user, { ttlSec: 3_600 }) }));
      // A refused refresh must not swap in the other token's expiry.
      const other = await refusedRefresh.request('auth', { token: await mintToken(userId('bob'), { ttlSec: 3_600 }) });
      expect(other).toMatchObject({ ok: false, error: { code: 'forbidden' } });

      const gone = [nextDisconnect(unrefreshed.socket, 6_000), nextDisconnect(refusedRefresh.socket, 6_000)];
      for (const c of [unrefreshed, refusedRefresh]) {
        const error = await c.waitForEvent<WireError>('error', (e) => e.code === 'token_expired', 6_000);
        expect(error).toEqual({ code: 'token_expired', message: expect.any(String) });
        expect(Date.now()).toBeGreaterThanOrEqual(exp - 100);
      }
      for (const reason of await Promise.all(gone)) expect(SERVER_CLOSE_REASONS).toContain(reason);

      await sleep(300);
      expect(refreshed.socket.connected).toBe(true);
      expect(refreshed.events.filter((e) => e.event === 'error')).toEqual([]);
      dataOf(await refreshed.request('ping', {}));
    });
  });
});

describe('the handshake with an RSA public key (JWT_PUBLIC_KEY)', () => {
  let service: TestApp;
  let privateKey: KeyObject;
  let publicPem: string;
  const open: ClientSocket[] = [];

  const rs256 = (user: string | undefined, key: KeyObject = privateKey) => {
    let jwt = new SignJWT({}).setProtectedHeader({ alg: 'RS256' }).setExpirationTime(nowSec() + 3600);
    if (user !== undefined) jwt = jwt.setSubject(user);
    return jwt.sign(key);
  };

  beforeAll(async () => {
    const pair = generateKeyPairSync('rsa', { modulusLength: 2048 });
    privateKey = pair.privateKey;
    publicPem = pair.publicKey.export({ type: 'spki', format: 'pem' }).toString();
    // JWT_SECRET '' counts as unset, so the public key is the only key source.
    service = await startTestApp({ JWT_SECRET: '', JWT_PUBLIC_KEY: publicPem });
    expect(service.config.jwt.key.kind).toBe('publicKey');
  });

  afterAll(async () => {
    for (const socket of open) socket.disconnect();
    await service.close();
  });

  it('accepts an RS256 token signed with the matching private key', async () => {
    const user = userId('alice');
    const token = await rs256(user);
    const c = await connect(service.url, user, { token });
    open.push(c.socket);
    expect(c.session).toMatchObject({ userId: user, tokenExpiresAt: expiryOf(token) });
  });

  it('refuses HS256 signed with the public key (algorithm confusion) as unauthorized', async () => {
    const user = userId('mallory');
    const der = createDer(publicPem);
    for (const secret of [encoder.encode(publicPem), encoder.encode(publicPem.trim()), der]) {
      const token = await new SignJWT({ sub: user })
        .setProtectedHeader({ alg: 'HS256' })
        .setExpirationTime(nowSec() + 3600)
        .sign(secret);
      expectRefusal(await connectRefused(service.url, { token, deviceId: 'd1' }), 'unauthorized');
    }
  });

  it('refuses an RS256 token signed with another key, HS256 with the old secret, and alg: none', async () => {
    const stranger = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
    const tokens = [
      await rs256(userId('mallory'), stranger),
      await mintToken(userId('mallory')),
      new UnsecuredJWT({ sub: userId('mallory') }).setExpirationTime(nowSec() + 3600).encode(),
    ];
    for (const token of tokens) {
      expectRefusal(await connectRefused(service.url, { token, deviceId: 'd1' }), 'unauthorized');
    }
  });
});

/** The DER bytes of a PEM public key, another form an attacker might use as the HMAC secret. */
function createDer(pem: string): Uint8Array {
  return new Uint8Array(Buffer.from(pem.replace(/-----[A-Z ]+-----/g, '').replace(/\s+/g, ''), 'base64'));
}

describe('the handshake with JWT_ISSUER and JWT_AUDIENCE set', () => {
  let service: TestApp;
  const issuer = 'https://idp.example.com/';
  const audience = 'chat-api';
  const open: ClientSocket[] = [];

  beforeAll(async () => {
    service = await startTestApp({ JWT_ISSUER: issuer, JWT_AUDIENCE: audience });
  });

  afterAll(async () => {
    for (const socket of open) socket.disconnect();
    await service.close();
  });

  it('accepts a token with the configured issuer and audience', async () => {
    const user = userId('alice');
    const c = await connect(service.url, user, {
      token: await mintToken(user, { claims: { iss: issuer, aud: audience } }),
    });
    open.push(c.socket);
    expect(c.session.userId).toBe(user);
  });

  it('refuses a wrong or missing issuer or audience as unauthorized', async () => {
    const claims: Record<string, unknown>[] = [
      { iss: 'https://evil.example.com/', aud: audience },
      { aud: audience },
      { iss: issuer, aud: 'another-api' },
      { iss: issuer, aud: ['another-api', 'more'] },
      { iss: issuer },
    ];
    for (const claim of claims) {
      const token = await mintToken(userId('mallory'), { claims: claim });
      expectRefusal(await connectRefused(service.url, { token, deviceId: 'd1' }), 'unauthorized');
    }
  });
});

describe('a handshake while a dependency is down', () => {
  it("is refused with connect_error 'unavailable' (not accepted and then cut), and accepted once Redis is back", async () => {
    const redis = await startPrivateRedis();
    const service = await startTestApp({ REDIS_URL: redis.url });
    try {
      const user = userId('alice');
      const first = await connect(service.url, user, { deviceId: 'phone' });
      first.close();
      await redis.stop();
      const token = await mintToken(user);
      const refused = await connectRefused(service.url, { token, deviceId: 'phone' });
      expect(refused).toEqual({
        message: 'unavailable',
        data: { code: 'unavailable', message: 'could not set up the session; retry later' },
      });
      await redis.start();
      await pollStatus(`${service.url}/health/ready`, (s) => s === 200);
      const back = await connect(service.url, user, { deviceId: 'phone' });
      expect(back.session.userId).toBe(user);
      back.close();
    } finally {
      await service.close();
      await redis.stop();
    }
  });
});
