import { createAdapter, RedisAdapter } from '@socket.io/redis-adapter';
import { Redis } from 'ioredis';
import { Server } from 'socket.io';
import { afterEach, describe, expect, it } from 'vitest';

import { unreachableRedis, watchHandlers } from '../../test/support/redis-doubles.js';
import { observeSubscribePromises } from './ioredis-subscribe-promises.js';
import { publishSafely } from './redis-adapter-publish-safely.js';

interface Publish {
  args: unknown[];
  promise: Promise<unknown>;
  observed: () => boolean;
}

/** The client, recording each `publish` and whether its promise got a handler. */
function recordingPublishes(client: Redis): { client: Redis; publishes: Publish[] } {
  const publishes: Publish[] = [];
  const recording = new Proxy(client, {
    get(target, property) {
      if (property === 'publish') {
        return (...args: unknown[]) => {
          const promise = (target.publish as (...a: unknown[]) => Promise<unknown>).apply(target, args);
          publishes.push({ args, promise, observed: watchHandlers(promise) });
          return promise;
        };
      }
      const value = Reflect.get(target, property) as unknown;
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
  return { client: recording, publishes };
}

// What publishSafely relies on, pinned so that an upgrade of @socket.io/redis-adapter
// (or ioredis) that changes it fails here: the adapter publishes a broadcast through its
// publishing client's `publish` and leaves the returned promise unobserved; it takes the
// ioredis code path because the client has no node-redis v4 `pSubscribe`.
describe('publishSafely', () => {
  // The Socket.IO servers have no HTTP server to close; dropping their clients is enough.
  const clients: Redis[] = [];

  function serverWith(pub: Redis): Server {
    const sub = observeSubscribePromises(unreachableRedis());
    clients.push(pub, sub);
    const server = new Server();
    server.adapter(createAdapter(pub, sub));
    return server;
  }

  afterEach(() => {
    for (const client of clients.splice(0)) client.disconnect();
  });

  it('is needed: the adapter publishes each broadcast and leaves the promise unobserved', async () => {
    const { client, publishes } = recordingPublishes(unreachableRedis());
    const server = serverWith(client);
    expect(server.of('/').adapter).toBeInstanceOf(RedisAdapter);

    server.to('room').emit('event', 'data');
    expect(publishes).toHaveLength(1);
    expect(publishes[0].args[0]).toBe('socket.io#/#room#');
    // broadcast has returned (it returns nothing to await) without a handler on the promise.
    expect(publishes[0].observed()).toBe(false);
    // It fails (Redis is unreachable): handled here, before it would be reported unhandled.
    await expect(publishes[0].promise).rejects.toThrow();
  });

  it('keeps the adapter on its ioredis path: the client has no node-redis `pSubscribe`', () => {
    const client = unreachableRedis();
    clients.push(client);
    expect('pSubscribe' in client).toBe(false);
    expect(typeof (publishSafely(client) as unknown as { pSubscribe?: unknown }).pSubscribe).toBe('undefined');
  });

  it('resolves a failed publish to 0 subscribers instead of rejecting', async () => {
    const client = unreachableRedis();
    clients.push(client);
    await expect(client.publish('channel', 'message')).rejects.toThrow();
    await expect(publishSafely(client).publish('channel', 'message')).resolves.toBe(0);
    await expect(publishSafely(client).spublish('channel', 'message')).resolves.toBe(0);
  });

  it('lets broadcasts fail quietly while Redis is down', async () => {
    const { client, publishes } = recordingPublishes(unreachableRedis());
    const server = serverWith(publishSafely(client));
    server.to('room').emit('event', 'data');
    server.emit('event', 'data');
    expect(publishes).toHaveLength(2);
    // Observed by publishSafely; an unhandled rejection would fail the run.
    expect(publishes.map((publish) => publish.observed())).toEqual([true, true]);
    await Promise.allSettled(publishes.map((publish) => publish.promise));
  });

  it('passes everything else through to the client, bound to it', () => {
    const client = unreachableRedis();
    clients.push(client);
    const safe = publishSafely(client);
    expect(safe.options).toBe(client.options);
    expect(safe.status).toBe(client.status);
    const listener = (): void => undefined;
    safe.on('message', listener);
    expect(client.listeners('message')).toContain(listener);
  });
});
