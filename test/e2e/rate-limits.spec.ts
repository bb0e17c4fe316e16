import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { startTestApp, type TestApp } from '../support/app.js';
import { connect, connectRefused, dataOf, mintToken } from '../support/clients.js';
import { userId } from '../support/fixtures.js';

describe('rate limits', () => {
  let service: TestApp;

  beforeAll(async () => {
    service = await startTestApp({ RATE_LIMIT_EVENTS_PER_SEC: '5', RATE_LIMIT_CONNECTS_PER_MIN: '3' });
  });

  afterAll(async () => {
    await service.close();
  });

  it('answers requests past the per-connection rate with rate_limited and retryAfterMs, keeping the socket', async () => {
    const client = await connect(service.url, userId('flooder'));
    const replies = await Promise.all(Array.from({ length: 30 }, (_, i) => client.request('ping', { t: i })));
    const limited = replies.filter((r) => !r.ok);
    expect(replies.filter((r) => r.ok).length).toBeGreaterThanOrEqual(10);
    expect(limited.length).toBeGreaterThan(0);
    for (const reply of limited) {
      expect(reply).toMatchObject({ ok: false, error: { code: 'rate_limited' } });
      if (!reply.ok) expect((reply.error.details as { retryAfterMs: number }).retryAfterMs).toBeGreaterThan(0);
    }
    expect(client.socket.connected).toBe(true);
    const wait = Math.max(
      ...limited.map((r) => (r.ok ? 0 : (r.error.details as { retryAfterMs: number }).retryAfterMs)),
    );
    await new Promise((resolve) => setTimeout(resolve, wait + 50));
    expect(dataOf(await client.request<{ t: number }>('ping', { t: 'again' })).t).toBe('again');
    client.close();
  });

  it('refuses handshakes past the per-user rate with rate_limited', async () => {
    const user = userId('reconnecter');
    for (let i = 0; i < 3; i++) (await connect(service.url, user, { deviceId: `d${i}` })).close();
    const refused = await connectRefused(service.url, { token: await mintToken(user), deviceId: 'd9' });
    expect(refused.message).toBe('rate_limited');
    expect(refused.data).toMatchObject({
      code: 'rate_limited',
      details: { retryAfterMs: expect.any(Number) as number },
    });
    // Other users are not affected.
    (await connect(service.url, userId('someone-else'))).close();
  });
});
