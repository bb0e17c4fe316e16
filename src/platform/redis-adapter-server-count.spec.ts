import { createAdapter, RedisAdapter } from '@socket.io/redis-adapter';
import type { Redis } from 'ioredis';
import type { Server } from 'socket.io';
import { afterEach, describe, expect, it } from 'vitest';

import { recordingPublisher, serveWithAdapter, type AdapterHarness } from '../../test/support/adapter-harness.js';
import { unreachableRedis } from '../../test/support/redis-doubles.js';
import { observeSubscribePromises } from './ioredis-subscribe-promises.js';
import { publishSafely } from './redis-adapter-publish-safely.js';
import { countServersWith, requestChannelOf } from './redis-adapter-server-count.js';

// What countServersWith relies on, pinned so that an upgrade of @socket.io/redis-adapter
// that changes it fails here: the adapter names its request channel `<key>-request#<nsp>#`,
// asks `serverCount()` (a method it looks up on the instance) how many answers to wait for,
// answers from local sockets alone when that is 1, and otherwise publishes the request on
// that channel and waits.
describe('countServersWith', () => {
  const key = 'sio:7';
  let harness: AdapterHarness;
  let server: Server;
  const redisClients: Redis[] = [];

  /** A server whose adapter cannot reach Redis: its own serverCount() would reject. */
  async function start(count: (channel: string) => Promise<number>): Promise<string[]> {
    const publisher = recordingPublisher(unreachableRedis());
    const sub = observeSubscribePromises(unreachableRedis());
    redisClients.push(publisher.client, sub);
    const adapter = createAdapter(publishSafely(publisher.client), sub, { key, requestsTimeout: 100 });
    harness = await serveWithAdapter(countServersWith(adapter, key, count));
    server = harness.server;
    return publisher.channels;
  }

  afterEach(() => {
    harness.close();
    for (const redis of redisClients.splice(0)) redis.disconnect();
  });

  it('counts the request channel the adapter publishes its requests on', async () => {
    const asked: string[] = [];
    const published = await start((channel) => {
      asked.push(channel);
      return Promise.resolve(2);
    });
    expect(server.of('/').adapter).toBeInstanceOf(RedisAdapter);
    // Two instances counted: the request goes out and waits for the other's answer.
    await expect(server.in('room').fetchSockets()).rejects.toThrow(/timeout/);
    expect(asked).toEqual([requestChannelOf(key, '/')]);
    expect(published).toEqual(['sio:7-request#/#']);
  });

  it('answers from this instance alone when the count is 1, without asking Redis', async () => {
    const published = await start(() => Promise.resolve(1));
    const sockets = await server.in('room').fetchSockets();
    expect(sockets.map((socket) => socket.id)).toEqual([...server.of('/').sockets.keys()]);
    expect(sockets).toHaveLength(1);
    expect(published).toEqual([]);
  });

  it('fails the request when the count fails', async () => {
    await start(() => Promise.reject(new Error('node down')));
    await expect(server.in('room').fetchSockets()).rejects.toThrow('node down');
  });
});
