// Issue #16: one master of the Redis Cluster is SIGKILLed while two instances of the
// service carry a steady stream of sends; the cluster promotes its replica (node timeout
// 5 s in the local cluster), the killed node is started again and rejoins as a replica.
// Nothing is lost: every send resolves once, every connected device gets every message
// once in seq order, and a device that was offline meanwhile gets everything from its
// queue, which the killed master may have held (and lost writes of, replication being
// asynchronous): the service audits it against PostgreSQL when the device connects.
import { dirname } from 'node:path';

import { afterAll, describe, expect, inject, it } from 'vitest';

import { killRedisOf, processAlive, startLocalRedisClusterNode } from '../../scripts/local-services.mjs';
import { OfflineQueueMetrics } from '../../src/offline-queue/offline-queue.metrics.js';
import { slotOf } from '../../src/redis/redis-client.js';
import { startTestApp, type TestApp } from '../support/app.js';
import {
  ClientPool,
  expectReceivedOnceInOrder,
  expectSendsResolvedInOrder,
  sendStream,
  storedMessages,
  waitFor,
  type RecordingClient,
  type SendStream,
} from '../support/client-harness.js';
import { createConversation, userId } from '../support/fixtures.js';
import { RedisClusterAdmin } from '../support/redis-cluster-admin.js';

const cluster = new RedisClusterAdmin(inject('TEST_REDIS_URL'));
const { ports } = cluster;

let restartVictim: (() => Promise<void>) | undefined;

afterAll(async () => {
  // A failed run must not leave the next files a cluster without a node.
  await restartVictim?.();
  await cluster.waitHealthy('the cluster to be healthy again');
  cluster.close();
});

describe('SIGKILL of a Redis Cluster master under load', () => {
  it('loses nothing: every send resolves once, every device gets every message once in order, an offline device gets all from its rebuilt queue', async () => {
    await cluster.waitHealthy('the cluster to be healthy before the drill');
    const first: TestApp = await startTestApp();
    const second: TestApp = await startTestApp({ DATABASE_URL: first.databaseUrl, REDIS_URL: first.redisUrl });
    const pool = new ClientPool();
    try {
      const [s1, s2, r, q] = ['s1', 's2', 'r', 'q'].map((name) => userId(name));
      const conversationId = await createConversation(first, s1, [s2, r, q]);
      const names = new Map<RecordingClient, string>();
      const device = (app: TestApp, user: string, deviceId: string) => {
        const created = pool.create(app.url, user, { deviceId });
        names.set(created, deviceId);
        return created;
      };
      // Senders on both instances, r with a device on each: live copies cross the instances.
      const devices = [
        device(first, s1, 's1-phone'),
        device(second, s2, 's2-phone'),
        device(second, r, 'r-phone'),
        device(first, r, 'r-tablet'),
      ];
      const offlineDeviceId = 'q-laptop';
      const offline = device(second, q, offlineDeviceId);
      await Promise.all([...devices, offline].map((d) => d.client.connect()));
      await offline.client.close(); // known from here on: its queue holds what follows

      // A conversation under way (see instance-kill.spec.ts on the warm-up).
      const warmUp = await devices[0].client.send(conversationId, { body: 'warm-up' });
      for (const d of devices.slice(1)) {
        await waitFor(
          () => d.received.some((m) => m.id === warmUp.id),
          () => `${names.get(d)} to receive the warm-up message: ${d.describe()}`,
        );
      }

      // The victim: the master holding the offline device's queue (OfflineQueueRepository's hash tag).
      const slot = slotOf(`mq:{${q}\u0000${offlineDeviceId}}`);
      const before = await cluster.nodes(ports[0]);
      const victim = before.find((n) => n.master && n.slots.some(([lo, hi]) => slot >= lo && slot <= hi));
      expect(victim, `the master of slot ${slot}`).toBeDefined();
      const replica = before.find((n) => n.masterId === victim?.id);
      expect(replica, "the victim's replica").toBeDefined();
      const victimPort = victim?.port ?? 0;
      const replicaPort = replica?.port ?? 0;
      const victimDir = await cluster.dirOf(victimPort);
      // <localDir>/redis-cluster/<port> (scripts/local-services.mjs)
      const localDir = dirname(dirname(victimDir));
      restartVictim = () => startLocalRedisClusterNode(victimPort, { localDir, redisClusterPorts: ports });

      const perSender = 360;
      const senders: [RecordingClient, SendStream][] = devices
        .slice(0, 2)
        .map((d) => [
          d,
          sendStream(d.client, conversationId, { count: perSender, batch: 3, intervalMs: 50, prefix: names.get(d) }),
        ]);
      await waitFor(
        () => senders.every(([, stream]) => stream.resolved() >= 45),
        () => `45 sends of each sender stored before the kill: ${senders.map(([d]) => d.describe()).join(' ')}`,
      );
      const killedAt = performance.now();
      const pid = killRedisOf(victimDir);
      expect(pid, 'the victim redis-server killed').not.toBeNull();
      await waitFor(() => !processAlive(pid ?? 0), 'the victim to be gone', 5_000);
      for (const [d, stream] of senders) {
        expect(stream.resolved(), `the kill landed mid-stream: ${d.describe()}`).toBeLessThan(perSender);
      }

      // The cluster notices (node timeout 5 s) and promotes the replica.
      await waitFor(
        async () =>
          (
            await cluster
              .node(replicaPort)
              .info('replication')
              .catch(() => '')
          ).includes('role:master'),
        'the replica to be promoted',
        20_000,
      );
      const promotedMs = performance.now() - killedAt;
      await restartVictim();
      await cluster.waitHealthy('the cluster to be healthy again');
      expect(
        (await cluster.nodes(replicaPort)).find((n) => n.port === victimPort)?.masterId,
        'the killed node rejoined as a replica of the promoted one',
      ).toBe(replica?.id);
      const healedMs = performance.now() - killedAt;
      process.stderr.write(
        `[cluster-master-kill] killed ${victimPort}: replica ${replicaPort} promoted after ${Math.round(promotedMs)} ms, cluster healthy after ${Math.round(healedMs)} ms\n`,
      );

      // Every send resolved once, with its own message, in the order send() was called.
      const sent = await expectSendsResolvedInOrder(senders, perSender, (client) => names.get(client));
      sent.get(devices[0])?.unshift(warmUp);
      const total = senders.length * perSender + 1;
      const allSent = [...sent.values()].flat();
      expect(new Set(allSent.map((m) => m.id)).size, 'distinct messages among the resolved sends').toBe(total);
      const stored = await storedMessages(first.url, s1, conversationId);
      expect(stored.length, 'messages stored').toBe(total);
      const storedIdBySeq = new Map(stored.map((m) => [m.seq, m.id]));
      expect(allSent.filter((m) => storedIdBySeq.get(m.seq) !== m.id).length, 'sends answered with another id').toBe(0);

      // The device that was offline throughout comes back (on the other instance) and drains its queue.
      const repairs = first.app.get(OfflineQueueMetrics).repairs;
      const repaired = async () => (await repairs.get()).values.reduce((sum, { value }) => sum + value, 0);
      const repairedBefore = await repaired();
      const returning = device(first, q, offlineDeviceId);
      await returning.client.connect();
      // Fan-outs to the dead master failed meanwhile (the queues were invalidated), or the
      // promoted replica lacked writes (the audit finds them): either way a rebuild.
      expect(await repaired(), 'its queue rebuilt from PostgreSQL at connect').toBeGreaterThan(repairedBefore);

      /** Every message but its own, once, in strictly increasing seq (the warm-up only if it was connected then). */
      const expectEverything = async (d: RecordingClient, expected: number) => {
        const own = new Set((sent.get(d) ?? []).map((m) => m.seq));
        const received = () => d.received.filter((m) => m.conversationId === conversationId);
        await waitFor(
          () => received().length >= expected,
          () => {
            const have = new Set([...own, ...received().map((m) => m.seq)]);
            const missing = stored.filter((m) => !have.has(m.seq)).slice(0, 10);
            return `${names.get(d)} to receive ${expected} messages; it has ${received().length}, lacks ${missing.map((m) => `${m.seq} (${m.clientMsgId})`).join(', ')}: ${d.describe()}`;
          },
          20_000,
        );
        return () => expectReceivedOnceInOrder(d, received(), names.get(d), { expected, own, storedIdBySeq });
      };
      const checks = [];
      for (const d of devices) checks.push(await expectEverything(d, total - (sent.get(d)?.length ?? 0)));
      // The warm-up was queued for it too (it was known then).
      checks.push(await expectEverything(returning, total));
      await new Promise((resolve) => setTimeout(resolve, 300)); // a late duplicate would show by now
      for (const check of checks) check();
      for (const d of [...devices, returning]) expect(await d.client.outbox(), `${names.get(d)}: outbox`).toEqual([]);
    } finally {
      await pool.closeAll();
      await second.app.close();
      await first.close();
    }
  });
});
