import { once } from 'node:events';

import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';

import { observeSubscribePromises, RESUBSCRIBE_COMMANDS } from '../../src/platform/ioredis-subscribe-promises.js';
import { useTestRedisDb } from '../support/databases.js';
import { watchHandlers } from '../support/redis-doubles.js';

type Command = (typeof RESUBSCRIBE_COMMANDS)[number];

interface Call {
  name: Command;
  args: unknown[];
  promise: Promise<unknown>;
  /** Whether anything attached a handler (then, catch, await) by the time it was read. */
  observed: () => boolean;
}

/**
 * Replaces the client's resubscribe commands with own properties, as the patch does, that
 * record each call and whether its promise gets a handler. `onCall` runs right after the
 * command was issued.
 */
function recordCalls(client: Redis, onCall: (call: Call) => void = () => undefined): Call[] {
  const calls: Call[] = [];
  for (const name of RESUBSCRIBE_COMMANDS) {
    const original = client[name].bind(client) as (...args: unknown[]) => Promise<unknown>;
    Object.defineProperty(client, name, {
      configurable: true,
      value: (...args: unknown[]) => {
        const promise = original(...args);
        const call = { name, args, promise, observed: watchHandlers(promise) };
        calls.push(call);
        onCall(call);
        return promise;
      },
    });
  }
  return calls;
}

async function until(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

// ioredis's reconnect path, pinned so that an upgrade that changes it fails here: after a
// reconnect it reissues SELECT (when the database was changed at run time), SUBSCRIBE,
// PSUBSCRIBE and SSUBSCRIBE through the instance's own methods, and drops their promises.
describe('observeSubscribePromises', () => {
  const clients: Redis[] = [];

  function client(): { redis: Redis; index: number } {
    const { url, index } = useTestRedisDb();
    // As RedisService's connection (and so its duplicates): reconnects by itself, fails fast.
    const redis = new Redis(url, { maxRetriesPerRequest: 1, retryStrategy: () => 20 });
    redis.on('error', () => undefined);
    clients.push(redis);
    return { redis, index };
  }

  afterEach(() => {
    for (const redis of clients.splice(0)) redis.disconnect();
  });

  it('is needed: after a reconnect ioredis resubscribes through the instance and drops each promise', async () => {
    const { redis, index: first } = client();
    const other = useTestRedisDb();
    await redis.select(other.index);
    await redis.subscribe('plain');
    await redis.psubscribe('pattern:*');
    await redis.ssubscribe('sharded');
    const calls = recordCalls(redis);

    redis.stream.destroy();
    await until(() => calls.length === 5, 'ioredis to resubscribe');
    expect(calls.map(({ name, args }) => [name, args])).toEqual([
      ['select', [first]], // the handshake's, from the URL; ioredis handles its failure
      ['select', [other.index]],
      ['subscribe', [['plain']]],
      ['psubscribe', [['pattern:*']]],
      ['ssubscribe', ['sharded']],
    ]);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(calls.map((call) => call.observed())).toEqual([true, false, false, false, false]);
    await Promise.all(calls.map((call) => call.promise));
    // Still subscribed, on the database selected at run time.
    const publisher = new Redis(other.url);
    clients.push(publisher);
    const message = once(redis, 'message');
    expect(await publisher.publish('plain', 'hi')).toBe(1);
    expect(await message).toEqual(['plain', 'hi']);
  });

  it('observes the promise ioredis drops, so a resubscribe cut short by a close does not reject unhandled', async () => {
    const { redis } = client();
    await redis.subscribe('plain');
    let cutShort: Call | undefined;
    recordCalls(redis, (call) => {
      if (call.name !== 'subscribe') return;
      // Shutdown (or a second drop) before the reply: the pending command is rejected.
      cutShort = call;
      redis.disconnect();
      redis.stream.destroy();
    });
    observeSubscribePromises(redis);

    redis.stream.destroy();
    await until(() => cutShort !== undefined, 'ioredis to resubscribe');
    expect(cutShort?.name).toBe('subscribe');
    expect(cutShort?.observed()).toBe(true);
    await expect(cutShort?.promise).rejects.toThrow('Connection is closed');
  });

  it('hands callers the outcome of their own subscribe', async () => {
    const redis = observeSubscribePromises(client().redis);
    await expect(redis.subscribe('a', 'b')).resolves.toBe(2);
    redis.disconnect();
    await expect(redis.psubscribe('pattern:*')).rejects.toThrow();
  });
});
