import type { createAdapter, RedisAdapter } from '@socket.io/redis-adapter';

type AdapterFactory = ReturnType<typeof createAdapter>;
type BroadcastArgs = Parameters<RedisAdapter['broadcast']>;

/** Whether this is the only instance of the service (see InstanceTopology). */
export interface Topology {
  readonly alone: boolean;
}

/**
 * Broadcasts stay local while this is the only instance (`topology.alone`): nobody else
 * would receive the Redis copy. The adapter skips its publish for a broadcast flagged
 * `local` (what `server.local` sets) and still delivers to this instance's sockets.
 */
export function skipRedisWhenAlone(factory: AdapterFactory, topology: Topology): AdapterFactory {
  // Socket.IO calls the factory with `new`: it must be a plain function, not an arrow.
  return function adapterFor(nsp: Parameters<AdapterFactory>[0]): RedisAdapter {
    const adapter = factory(nsp);
    const broadcast = adapter.broadcast.bind(adapter);
    adapter.broadcast = (packet: BroadcastArgs[0], opts: BroadcastArgs[1]) =>
      broadcast(packet, topology.alone ? { ...opts, flags: { ...opts.flags, local: true } } : opts);
    return adapter;
  };
}
