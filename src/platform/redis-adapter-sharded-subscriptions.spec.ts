import { createShardedAdapter } from '@socket.io/redis-adapter';
import { Redis } from 'ioredis';
import { Server } from 'socket.io';
import { afterEach, describe, expect, it } from 'vitest';

import { unreachableRedis, watchHandlers } from '../../test/support/redis-doubles.js';
import { observeShardedSubscriptions } from './redis-adapter-sharded-subscriptions.js';

interface Call {
  command: string;
  channel: unknown;
  promise: Promise<unknown>;
  observed: () => boolean;
}

/** The client, recording each ssubscribe/sunsubscribe and whether its promise got a handler. */
function recordingSubscriptions(client: Redis): { client: Redis; calls: Call[] } {
  const calls: Call[] = [];
  for (const command of ['ssubscribe', 'sunsubscribe'] as const) {
    const original = client[command].bind(client) as (...args: unknown[]) => Promise<unknown>;
    Object.defineProperty(client, command, {
      configurable: true,
      value: (...args: unknown[]) => {
        const promise = original(...args);
        calls.push({ command, channel: args[0], promise, observed: watchHandlers(promise) });
        return promise;
      },
    });
  }
  return { client, calls };
}

// What observeShardedSubscriptions relies on, pinned so that an upgrade of
// @socket.io/redis-adapter (or ioredis) that changes it fails here: the sharded adapter
// subscribes its namespace's channels when built and a room's channel when the room
// appears, unsubscribes it when the room empties, through the client's own `ssubscribe`
// and `sunsubscribe` (its ioredis path: no node-redis `sSubscribe`), and leaves the
// returned promises unobserved.
describe('observeShardedSubscriptions', () => {
  const clients: Redis[] = [];

  afterEach(() => {
    for (const client of clients.splice(0)) client.disconnect();
  });

  function adapterWith(sub: Redis) {
    const pub = unreachableRedis();
    clients.push(pub, sub);
    const server = new Server();
    server.adapter(createShardedAdapter(pub, sub, { channelPrefix: 'sio:0' }));
    return server.of('/').adapter;
  }

  it('is needed: the adapter subscribes and unsubscribes room channels and drops the promises', async () => {
    const { client, calls } = recordingSubscriptions(unreachableRedis());
    const adapter = adapterWith(client);
    expect('sSubscribe' in client).toBe(false);

    await adapter.addAll('socket-1', new Set(['room']));
    await adapter.del('socket-1', 'room');

    expect(calls.map((call) => [call.command, call.channel])).toEqual([
      ['ssubscribe', 'sio:0#/#'],
      ['ssubscribe', expect.stringMatching(/^sio:0#\/#.+#$/)],
      ['ssubscribe', 'sio:0#/#room#'],
      ['sunsubscribe', 'sio:0#/#room#'],
    ]);
    // The adapter returned (nothing to await) without a handler on any of them.
    expect(calls.map((call) => call.observed())).toEqual([false, false, false, false]);
    // They fail (Redis is unreachable): handled here, before they would be reported unhandled.
    for (const call of calls) await expect(call.promise).rejects.toThrow();
  });

  it('marks every subscription promise observed while keeping its outcome for callers that await it', async () => {
    const { client, calls } = recordingSubscriptions(unreachableRedis());
    const adapter = adapterWith(observeShardedSubscriptions(client));

    await adapter.addAll('socket-1', new Set(['room']));
    await adapter.del('socket-1', 'room');

    expect(calls).toHaveLength(4);
    expect(calls.map((call) => call.observed())).toEqual([true, true, true, true]);
    await expect(client.ssubscribe('channel')).rejects.toThrow();
    await Promise.allSettled(calls.map((call) => call.promise));
  });
});
