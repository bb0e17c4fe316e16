import { afterEach, describe, expect, it } from 'vitest';

import { startTestApp, type TestApp } from '../support/app.js';
import { connect, connectRefused, mintToken, type TestClient } from '../support/clients.js';
import { userId } from '../support/fixtures.js';
import { ConnectionCaps } from '../../src/gateway/connection-caps.service.js';

/** Polls `check` until it holds (bounded). */
async function until(check: () => Promise<boolean>, what: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

// PROTOCOL.md section 7: MAX_CONNECTIONS_PER_USER and MAX_CONNECTIONS_PER_IP cap the live
// sockets on one instance; a handshake past either is refused rate_limited with retryAfterMs.
describe('connection caps', () => {
  let service: TestApp | undefined;
  const open: TestClient[] = [];

  afterEach(async () => {
    for (const c of open.splice(0)) c.close();
    await service?.close();
  });

  const refusal = {
    message: 'rate_limited',
    data: { code: 'rate_limited', message: expect.any(String) as string, details: { retryAfterMs: 5_000 } },
  };

  it('refuses a user past MAX_CONNECTIONS_PER_USER live sockets, and takes one again once a socket goes', async () => {
    service = await startTestApp({ MAX_CONNECTIONS_PER_USER: '3' });
    const user = userId('many');
    for (const device of ['a', 'b', 'c']) open.push(await connect(service.url, user, { deviceId: device }));
    const token = await mintToken(user);
    expect(await connectRefused(service.url, { token, deviceId: 'd' })).toEqual(refusal);
    // Another user is not affected.
    open.push(await connect(service.url, userId('other'), { deviceId: 'a' }));

    open.shift()?.close();
    const url = service.url;
    await until(async () => {
      try {
        open.push(await connect(url, user, { deviceId: 'd' }));
        return true;
      } catch {
        return false;
      }
    }, 'a freed slot');
  });

  it('refuses a peer address past MAX_CONNECTIONS_PER_IP, and has no cap with 0', async () => {
    service = await startTestApp({ MAX_CONNECTIONS_PER_IP: '2' });
    open.push(await connect(service.url, userId('u1')), await connect(service.url, userId('u2')));
    expect(await connectRefused(service.url, { token: await mintToken(userId('u3')), deviceId: 'phone' })).toEqual(
      refusal,
    );
    await service.close();

    service = await startTestApp({ MAX_CONNECTIONS_PER_IP: '0' });
    for (let i = 0; i < 5; i++) open.push(await connect(service.url, userId(`u${i}`)));
    expect(open.filter((c) => c.socket.connected).length).toBeGreaterThanOrEqual(5);
  });

  it('gives back the slot of a handshake refused after taking it', async () => {
    service = await startTestApp({ MAX_CONNECTIONS_PER_USER: '1', RATE_LIMIT_CONNECTS_PER_MIN: '2' });
    const user = userId('flood');
    const token = await mintToken(user);
    const holder: unknown = service.app.get(ConnectionCaps);
    const held = (holder as { held: Map<string, unknown> }).held;
    for (const deviceId of ['a', 'b']) {
      const client = await connect(service.url, user, { deviceId, token });
      client.close();
      await until(() => Promise.resolve(held.size === 0), 'the slot back after a disconnect');
    }
    // The cap has room, so the slot is taken; then the connect rate refuses the handshake.
    const refused = await connectRefused(service.url, { token, deviceId: 'c' });
    expect(refused.data).toMatchObject({ code: 'rate_limited', message: 'too many connections for this user' });
    expect(held.size).toBe(0);
  });
});
