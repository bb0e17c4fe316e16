// The local Redis Cluster as the cluster project's drills see it: plain connections to each
// node (a Cluster client reaches the masters only), CLUSTER NODES parsed, and the one
// definition of "healthy" every drill waits for before it starts and leaves behind when it
// ends. The files share one cluster (test/support/global-setup.ts) and run one at a time, in
// an order vitest chooses: a drill must not start on a cluster the previous one is still
// settling (a failover's gossip reaches the last node a little after the first).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { Redis } from 'ioredis';

import { waitFor } from './client-harness.js';

export interface ClusterNode {
  id: string;
  port: number;
  master: boolean;
  /** The id of its master (replicas), '-' for a master. */
  masterId: string;
  connected: boolean;
  /** Slot ranges, as [first, last]. */
  slots: [number, number][];
}

export class RedisClusterAdmin {
  private readonly direct = new Map<number, Redis>();

  /** `redisUrl`: the comma-separated seeds the test project injects (every node of the local cluster). */
  constructor(redisUrl: string) {
    this.ports = redisUrl.split(',').map((url) => Number(new URL(url).port));
  }

  readonly ports: number[];

  /** A plain connection to one node; it keeps retrying while the node is down (a drill killed it). */
  node(port: number): Redis {
    let connection = this.direct.get(port);
    if (connection === undefined) {
      connection = new Redis({ host: '127.0.0.1', port, maxRetriesPerRequest: 1, retryStrategy: () => 200 });
      connection.on('error', () => undefined);
      this.direct.set(port, connection);
    }
    return connection;
  }

  /** CLUSTER NODES as the node on `port` sees them. */
  async nodes(port: number): Promise<ClusterNode[]> {
    const text = (await this.node(port).call('CLUSTER', 'NODES')) as string;
    return text
      .trim()
      .split('\n')
      .map((line) => {
        const [id, address, flags, masterId, , , , link, ...slots] = line.split(' ');
        return {
          id,
          port: Number(address.split('@')[0].split(':')[1]),
          master: flags.split(',').includes('master'),
          masterId,
          connected: link === 'connected' && !flags.includes('fail'),
          slots: slots
            .filter((range) => !range.startsWith('['))
            .map((range) => range.split('-').map(Number))
            .map(([first, last]) => [first, last ?? first]),
        };
      });
  }

  /**
   * Every node answers with cluster_state:ok and sees three connected masters that own all
   * the slots, each with one connected replica, and the same masters as every other node.
   */
  async healthy(): Promise<boolean> {
    const views = new Set<string>();
    for (const port of this.ports) {
      if (!(await this.node(port).cluster('INFO')).includes('cluster_state:ok')) return false;
      const nodes = await this.nodes(port);
      const masters = nodes.filter((n) => n.master && n.connected && n.slots.length > 0);
      if (masters.length !== 3 || nodes.length !== 6 || !nodes.every((n) => n.connected)) return false;
      for (const master of masters) {
        if (nodes.filter((n) => !n.master && n.masterId === master.id).length !== 1) return false;
      }
      views.add(
        masters
          .map((m) => m.id)
          .sort()
          .join(),
      );
    }
    return views.size === 1;
  }

  async waitHealthy(what = 'the Redis Cluster to be healthy', timeoutMs = 30_000): Promise<void> {
    await waitFor(() => this.healthy().catch(() => false), what, timeoutMs);
  }

  /**
   * Every replica takes over its master's slots (CLUSTER FAILOVER, as in a planned
   * maintenance), one after the other; resolves once the cluster is healthy again.
   * Not all at once: simultaneous elections may ask for the same epoch, a master votes
   * once per epoch, and a replica that lost its vote may not stand again for twice the
   * node timeout (seen: 20 s for the three). A manual failover that does not complete
   * within Redis' own 5 s changes nothing, so it is asked again, up to `timeoutMs` in all.
   */
  async failEveryMasterOver(timeoutMs = 45_000): Promise<void> {
    const replicas = (await this.nodes(this.ports[0])).filter((n) => !n.master).map((n) => n.port);
    if (replicas.length !== 3) throw new Error(`expected 3 replicas, found ${replicas.length}`);
    const isMaster = async (port: number) =>
      (
        await this.node(port)
          .info('replication')
          .catch(() => '')
      ).includes('role:master');
    const deadline = Date.now() + timeoutMs;
    for (const port of replicas) {
      let asked = 0;
      while (!(await isMaster(port))) {
        if (Date.now() > deadline) {
          const dir = await this.dirOf(port);
          throw new Error(`replica ${port} still not master after ${asked} requests: ${logTail(dir)}`);
        }
        asked += 1;
        await this.node(port).cluster('FAILOVER');
        const requestEnd = Date.now() + 6_000;
        while (Date.now() < requestEnd && !(await isMaster(port))) {
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
      }
    }
    await this.waitHealthy('the Redis Cluster to be healthy after the failovers');
  }

  /** Each node's data directory, as it reports it (`CONFIG GET dir`). */
  async dirOf(port: number): Promise<string> {
    return (await this.node(port).config('GET', 'dir'))[1];
  }

  close(): void {
    for (const connection of this.direct.values()) connection.disconnect();
  }
}

/** The last lines of a node's log (scripts/local-services.mjs writes redis.log in its dir). */
function logTail(dir: string): string {
  try {
    return readFileSync(join(dir, 'redis.log'), 'utf8').trim().split('\n').slice(-15).join('\n');
  } catch {
    return 'no log';
  }
}
