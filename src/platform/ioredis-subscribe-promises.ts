import type { Redis } from 'ioredis';

/** The commands ioredis reissues by itself after a reconnect, dropping the promise each returns. */
export const RESUBSCRIBE_COMMANDS = ['subscribe', 'psubscribe', 'ssubscribe', 'select'] as const;

/**
 * After a reconnect ioredis re-subscribes (and re-selects the database) by itself and
 * drops the returned promise; if the connection closes again before the reply (an
 * outage, or shutdown), that promise rejects unhandled. Marking every subscribe promise
 * as observed keeps that quiet while callers that await one still see its outcome.
 *
 * ioredis calls these through the instance (`self.subscribe(...)`), so an own property
 * on the client replaces what it calls. Pinned by
 * test/integration/ioredis-subscribe-promises.spec.ts (it needs a real Redis).
 */
export function observeSubscribePromises(client: Redis): Redis {
  for (const name of RESUBSCRIBE_COMMANDS) {
    const original = client[name].bind(client) as (...args: unknown[]) => Promise<unknown>;
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
