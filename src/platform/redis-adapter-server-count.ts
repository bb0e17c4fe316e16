import type { createAdapter, RedisAdapter } from '@socket.io/redis-adapter';
import type { Namespace } from 'socket.io';

type AdapterFactory = ReturnType<typeof createAdapter>;

/** The channel the Redis adapter of `key` sends a namespace's requests on, and every instance listens to. */
export const requestChannelOf = (key: string, namespace: string): string => `${key}-request#${namespace}#`;

/**
 * The Redis adapter waits for as many answers to a request (`fetchSockets`, `allRooms`,
 * `serverSideEmit` with an ack) as `serverCount()` says instances listen, and with a
 * count of 1 answers from this instance alone. Its own count sums PUBSUB NUMSUB over the
 * nodes its Cluster client lists, which can leave out the node another instance
 * subscribed on (see PubSubCensus): `fetchSockets` then missed that instance's sockets,
 * and a device connecting again elsewhere did not replace its old socket.
 *
 * Each adapter of the returned factory takes its count from `count(requestChannel)`.
 */
export function countServersWith(
  factory: AdapterFactory,
  key: string,
  count: (channel: string) => Promise<number>,
): AdapterFactory {
  // Socket.IO calls the factory with `new`: it must be a plain function, not an arrow.
  return function adapterFor(nsp: Parameters<AdapterFactory>[0]): RedisAdapter {
    const adapter = factory(nsp);
    const channel = requestChannelOf(key, (nsp as Namespace).name);
    adapter.serverCount = () => count(channel);
    return adapter;
  };
}
