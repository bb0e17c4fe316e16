// Two instances of the service on the local Redis Cluster while every master hands its
// slots to its replica (CLUSTER FAILOVER, as in a planned maintenance or after a master's
// loss): the clients follow the new masters, and live messages keep crossing between the
// instances (with the sharded Socket.IO adapter they stopped in about one run in three:
// see src/gateway/io.adapter.ts).
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';

import { startTestApp } from '../support/app.js';
import { connect, dataOf, type TestClient } from '../support/clients.js';
import { createConversation, userId } from '../support/fixtures.js';
import { RedisClusterAdmin } from '../support/redis-cluster-admin.js';

const cluster = new RedisClusterAdmin(inject('TEST_REDIS_URL'));

beforeAll(() => cluster.waitHealthy('the Redis Cluster to be healthy before the failovers'));
afterAll(() => cluster.close());

describe('a failover of every master', () => {
  it('keeps live delivery between instances and the offline queue working', async () => {
    const first = await startTestApp();
    const second = await startTestApp({ DATABASE_URL: first.databaseUrl, REDIS_URL: first.redisUrl });
    const open: TestClient[] = [];
    try {
      const alice = userId('alice');
      const bob = userId('bob');
      const conversationId = await createConversation(first, alice, [bob]);
      (await connect(second.url, bob, { deviceId: 'tablet' })).close();
      const a = await connect(first.url, alice);
      const b = await connect(second.url, bob);
      open.push(a, b);
      dataOf(await a.request('join', { conversationId }));
      dataOf(await b.request('join', { conversationId }));
      dataOf(await a.request('send', { conversationId, clientMsgId: 'before', body: 'before' }));
      expect((await b.waitForMessages(1))[0]).toMatchObject({ clientMsgId: 'before' });

      await cluster.failEveryMasterOver();

      // Each send is acked once stored; the live copy crosses to the other instance through
      // the Socket.IO adapter's pub/sub. A send during the switch may fail: retried.
      let delivered = false;
      for (let attempt = 0; attempt < 20 && !delivered; attempt += 1) {
        const reply = await a.request('send', { conversationId, clientMsgId: `after-${attempt}`, body: 'after' });
        if (!reply.ok) continue;
        delivered = await b
          .waitForMessages(2 + attempt, 1_000)
          .then(() => true)
          .catch(() => false);
      }
      expect(delivered).toBe(true);

      const tablet = await connect(second.url, bob, { deviceId: 'tablet' });
      open.push(tablet);
      expect(tablet.session.unacked).toBeGreaterThanOrEqual(2);
    } finally {
      for (const client of open) client.close();
      await second.app.close();
      await first.close();
    }
  });
});
