import type { Cluster, Redis } from 'ioredis';

/** What the sharded adapter calls on its subscribing client without handling the outcome. */
export const SHARDED_SUBSCRIPTION_COMMANDS = ['ssubscribe', 'sunsubscribe'] as const;

/**
 * The sharded Socket.IO adapter (@socket.io/redis-adapter `createShardedAdapter`) issues
 * SSUBSCRIBE when a room appears and SUNSUBSCRIBE when it empties, and drops the returned
 * promises: while Redis is unreachable (or at shutdown) they reject unhandled, which ends
 * the process. Marking them observed keeps that quiet; the subscription comes back with
 * the connection (ioredis re-subscribes a Cluster's sharded subscribers itself).
 *
 * The adapter calls them through the client (`client.ssubscribe(...)`), so an own property
 * replaces what it calls. Pinned by redis-adapter-sharded-subscriptions.spec.ts.
 */
export function observeShardedSubscriptions<Client extends Redis | Cluster>(client: Client): Client {
  for (const name of SHARDED_SUBSCRIPTION_COMMANDS) {
    const original = (client[name] as (...args: unknown[]) => Promise<unknown>).bind(client);
    Object.defineProperty(client, name, {
      configurable: true,
      value: (...args: unknown[]) => {
        const result = original(...args);
        result.catch(() => undefined);
        return result;
      },
    });
  }
  return client;
}
