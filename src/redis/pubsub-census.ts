import { Cluster, Redis } from 'ioredis';

import type { RedisClient } from './redis-client.js';

/**
 * How many connections subscribe to each of some channels, over the whole Redis: the
 * instance count (InstanceTopology) and the Socket.IO adapter's server count both come
 * from it.
 *
 * On one server that is PUBSUB NUMSUB. In a cluster a classic PUBLISH reaches every node,
 * but each node counts only its own subscribers, so every node must be asked. A Cluster
 * client's own node list is not enough: it comes from CLUSTER SLOTS, which leaves out a
 * replica until the cluster has heard its replication offset (about 10 s after a node
 * restarted here), while another instance's client may already have put its subscriber on
 * that node (test/cluster/pubsub-census.spec.ts). The census reads the members from
 * CLUSTER NODES on each count, and asks a node the client does not know through a
 * connection of its own, kept while the node stays in the cluster.
 */
export class PubSubCensus {
  /** Connections to nodes the Cluster client does not list, by host:port. */
  private readonly extra = new Map<string, Redis>();

  constructor(private readonly client: RedisClient) {}

  /** Subscribers per channel, in the order given. Rejects when a member node does not answer. */
  async count(channels: string[]): Promise<number[]> {
    const client = this.client;
    if (!(client instanceof Cluster)) return numsub(client, channels);
    const members = clusterMembers((await client.cluster('NODES')) as string);
    const known = new Map(client.nodes('all').map((node) => [`${node.options.host}:${node.options.port}`, node]));
    for (const [address, connection] of this.extra) {
      if (known.has(address) || !members.some((member) => member.address === address)) {
        this.extra.delete(address);
        connection.disconnect();
      }
    }
    const replies = await Promise.all(
      members.map((member) => numsub(known.get(member.address) ?? this.connectionTo(member), channels)),
    );
    return channels.map((_, index) => replies.reduce((total, reply) => total + reply[index], 0));
  }

  close(): void {
    for (const connection of this.extra.values()) connection.disconnect();
    this.extra.clear();
  }

  private connectionTo(member: ClusterMember): Redis {
    let connection = this.extra.get(member.address);
    if (connection === undefined) {
      const { redisOptions } = (this.client as Cluster).options;
      connection = new Redis({
        ...redisOptions,
        host: member.host,
        port: member.port,
        maxRetriesPerRequest: 1,
        connectTimeout: 2_000,
        retryStrategy: (attempt) => Math.min(attempt * 100, 2_000),
      });
      // A node that went away fails its count, which callers treat as "unsure".
      connection.on('error', () => undefined);
      this.extra.set(member.address, connection);
    }
    return connection;
  }
}

interface ClusterMember {
  address: string;
  host: string;
  port: number;
}

/** The nodes of a CLUSTER NODES reply that have an address and have not failed. */
export function clusterMembers(nodes: string): ClusterMember[] {
  const members: ClusterMember[] = [];
  for (const line of nodes.trim().split('\n')) {
    const [, endpoint, flags] = line.split(' ');
    if (endpoint === undefined || flags === undefined) continue;
    if (flags.split(',').some((flag) => flag === 'fail' || flag === 'handshake' || flag === 'noaddr')) continue;
    // ip:port@cport[,hostname]; an IPv6 ip holds colons itself.
    const address = endpoint.split('@')[0];
    const colon = address.lastIndexOf(':');
    const host = address.slice(0, colon);
    const port = Number(address.slice(colon + 1));
    if (host === '' || !Number.isInteger(port) || port <= 0) continue;
    members.push({ address, host, port });
  }
  return members;
}

async function numsub(server: Redis, channels: string[]): Promise<number[]> {
  const reply = (await server.pubsub('NUMSUB', ...channels)) as (string | number)[];
  return channels.map((_, index) => Number(reply[index * 2 + 1]));
}
