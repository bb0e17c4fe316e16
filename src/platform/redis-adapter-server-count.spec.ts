import { once } from 'node:events';
import { createServer, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';

import { createAdapter, RedisAdapter } from '@socket.io/redis-adapter';
import type { Redis } from 'ioredis';
import { Server } from 'socket.io';
import { io as connectClient, type Socket as ClientSocket } from 'socket.io-client';
import { afterEach, describe, expect, it } from 'vitest';

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
  let http: HttpServer;
  let server: Server;
  let client: ClientSocket;
  const redisClients: Redis[] = [];

  /** A server whose adapter cannot reach Redis: its own serverCount() would reject. */
  async function start(count: (channel: string) => Promise<number>): Promise<string[]> {
    const published: string[] = [];
    const pub = unreachableRedis();
    const sub = observeSubscribePromises(unreachableRedis());
    redisClients.push(pub, sub);
    const recording = new Proxy(publishSafely(pub), {
      get(target, property) {
        if (property === 'publish') {
          return (channel: string, message: string) => {
            published.push(channel);
            return target.publish(channel, message);
          };
        }
        return Reflect.get(target, property) as unknown;
      },
    });
    http = createServer();
    server = new Server(http, { transports: ['websocket'] });
    server.adapter(countServersWith(createAdapter(recording, sub, { key, requestsTimeout: 100 }), key, count));
    server.on('connection', (socket) => void socket.join('room'));
    http.listen(0, '127.0.0.1');
    await once(http, 'listening');
    const { port } = http.address() as AddressInfo;
    client = connectClient(`http://127.0.0.1:${port}`, { transports: ['websocket'], forceNew: true });
    await once(server, 'connection');
    return published;
  }

  afterEach(() => {
    client.disconnect();
    http.close();
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
