import type { Cluster, Redis } from 'ioredis';

/**
 * The Socket.IO Redis adapter (@socket.io/redis-adapter) does not catch failed
 * publishes; while Redis is down they would reject unhandled. Other instances miss those
 * broadcasts (local sockets were already served).
 *
 * Give the adapter the returned proxy as its publishing client: `publish` and `spublish`
 * resolve to 0 instead of rejecting; everything else is the client's own, bound to it.
 * The same for a Cluster client (REDIS_MODE=cluster).
 */
export function publishSafely<Client extends Redis | Cluster>(client: Client): Client {
  return new Proxy(client, {
    get(target, property, receiver) {
      if (property === 'publish' || property === 'spublish') {
        return (...args: unknown[]) =>
          (Reflect.get(target, property, receiver) as (...a: unknown[]) => Promise<unknown>)
            .apply(target, args)
            .catch(() => 0);
      }
      const value = Reflect.get(target, property, receiver) as unknown;
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
}
