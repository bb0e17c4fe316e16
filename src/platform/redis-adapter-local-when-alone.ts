import type { RedisAdapter } from '@socket.io/redis-adapter';
import type { Namespace } from 'socket.io';

type BroadcastArgs = Parameters<RedisAdapter['broadcast']>;

/** What createAdapter and createShardedAdapter return: both adapters take `broadcast(packet, opts)`. */
type AdapterFactory<Adapter> = (nsp: Namespace) => Adapter;

/** Whether this is the only instance of the service (see InstanceTopology). */
export interface Topology {
  readonly alone: boolean;
}

/**
 * Broadcasts stay local while this is the only instance (`topology.alone`): nobody else
 * would receive the Redis copy. The adapter skips its publish for a broadcast flagged
 * `local` (what `server.local` sets) and still delivers to this instance's sockets.
 */
export function skipRedisWhenAlone<Adapter extends Pick<RedisAdapter, 'broadcast'>>(
  factory: AdapterFactory<Adapter>,
  topology: Topology,
): AdapterFactory<Adapter> {
  // Socket.IO calls the factory with `new`: it must be a plain function, not an arrow.
  return function adapterFor(nsp: Namespace): Adapter {
    const adapter = factory(nsp);
    const broadcast = adapter.broadcast.bind(adapter);
    adapter.broadcast = (packet: BroadcastArgs[0], opts: BroadcastArgs[1]) =>
      broadcast(packet, topology.alone ? { ...opts, flags: { ...opts.flags, local: true } } : opts);
    return adapter;
  };
}
