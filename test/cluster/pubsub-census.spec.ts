// PubSubCensus counts subscribers on every member of the cluster, including a node the
// Cluster client does not list. A node joins here as an empty master (as a node does
// before slots move to it when a cluster grows): CLUSTER SLOTS, which ioredis builds its
// node list from, leaves it out, as it leaves out a restarted replica until the cluster has
// heard its replication offset; a subscriber on it must still count.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { Cluster, Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';

import type { AppConfig } from '../../src/config/app-config.js';
import { RedisService } from '../../src/redis/redis.service.js';
import { waitFor } from '../support/client-harness.js';
import { RedisClusterAdmin } from '../support/redis-cluster-admin.js';

const cluster = new RedisClusterAdmin(inject('TEST_REDIS_URL'));

/** A port free for a node and its cluster bus (port + 10000). */
async function freeNodePort(): Promise<number> {
  const free = (port: number) =>
    new Promise<boolean>((resolve) => {
      const probe = createServer();
      probe.once('error', () => resolve(false));
      probe.listen(port, '127.0.0.1', () => probe.close(() => resolve(true)));
    });
  for (;;) {
    const port = 20_000 + Math.floor(Math.random() * 25_000);
    if ((await free(port)) && (await free(port + 10_000))) return port;
  }
}

describe('PubSubCensus on a Redis Cluster', () => {
  const dir = mkdtempSync(join(tmpdir(), 'census-node-'));
  let port = 0;
  let joined: Redis;
  let joinedId = '';
  let redis: RedisService;

  beforeAll(async () => {
    await cluster.waitHealthy();
    port = await freeNodePort();
    // prettier-ignore
    spawn('redis-server', [
      '--bind', '127.0.0.1', '--port', String(port), '--cluster-enabled', 'yes',
      '--cluster-config-file', join(dir, 'nodes.conf'), '--dir', dir, '--save', '', '--appendonly', 'no',
    ], { stdio: 'ignore', detached: true }).unref();
    joined = new Redis({ host: '127.0.0.1', port, retryStrategy: () => 100 });
    joined.on('error', () => undefined);
    await waitFor(
      () =>
        joined.ping().then(
          () => true,
          () => false,
        ),
      'the new node to answer',
      10_000,
    );
    joinedId = (await joined.call('CLUSTER', 'MYID')) as string;
    await cluster.node(cluster.ports[0]).call('CLUSTER', 'MEET', '127.0.0.1', String(port));
    await waitFor(
      async () => {
        for (const p of cluster.ports) {
          if (!(await cluster.nodes(p)).some((n) => n.id === joinedId && n.connected)) return false;
        }
        return true;
      },
      'every node to know the new one',
      15_000,
    );
    redis = new RedisService({ redisUrl: inject('TEST_REDIS_URL'), redisMode: 'cluster' } as AppConfig);
    await redis.client.ping();
  });

  afterAll(async () => {
    await redis?.onApplicationShutdown();
    await joined?.shutdown('NOSAVE').catch(() => undefined);
    joined?.disconnect();
    // Back to the six nodes the other files expect.
    for (const p of cluster.ports)
      await cluster
        .node(p)
        .call('CLUSTER', 'FORGET', joinedId)
        .catch(() => undefined);
    await cluster.waitHealthy('the cluster to be its six nodes again');
    cluster.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('counts a subscriber on a node the Cluster client does not list', async () => {
    const listed = (redis.client as Cluster).nodes('all').map((node) => Number(node.options.port));
    expect(listed, 'the empty master is not in CLUSTER SLOTS').not.toContain(port);
    const channel = `census-${Date.now()}`;
    const before = (await redis.census.count([channel, `${channel}-none`]))[0];
    const subscriber = new Redis({ host: '127.0.0.1', port });
    const listedSubscriber = new Redis({ host: '127.0.0.1', port: listed[0] });
    try {
      await subscriber.subscribe(channel);
      await listedSubscriber.subscribe(channel);
      expect(before).toBe(0);
      expect(await redis.census.count([channel, `${channel}-none`])).toEqual([2, 0]);
    } finally {
      subscriber.disconnect();
      listedSubscriber.disconnect();
    }
  });
});
