import { createAdapter, RedisAdapter } from '@socket.io/redis-adapter';
import type { Redis } from 'ioredis';
import type { Server } from 'socket.io';
import type { Socket as ClientSocket } from 'socket.io-client';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { recordingPublisher, serveWithAdapter, type AdapterHarness } from '../../test/support/adapter-harness.js';
import { unreachableRedis } from '../../test/support/redis-doubles.js';
import { observeSubscribePromises } from './ioredis-subscribe-promises.js';
import { skipRedisWhenAlone } from './redis-adapter-local-when-alone.js';
import { publishSafely } from './redis-adapter-publish-safely.js';

type AdapterFactory = ReturnType<typeof createAdapter>;
type BroadcastOptions = Parameters<RedisAdapter['broadcast']>[1];

/** The factory, recording the options each adapter's own broadcast receives. */
function recordingBroadcasts(factory: AdapterFactory): { factory: AdapterFactory; seen: BroadcastOptions[] } {
  const seen: BroadcastOptions[] = [];
  return {
    seen,
    factory: function recording(nsp: Parameters<AdapterFactory>[0]): RedisAdapter {
      const adapter = factory(nsp);
      const broadcast = adapter.broadcast.bind(adapter);
      adapter.broadcast = (packet, opts) => {
        seen.push(opts);
        broadcast(packet, opts);
      };
      return adapter;
    },
  };
}

// What skipRedisWhenAlone relies on, pinned so that an upgrade of Socket.IO or
// @socket.io/redis-adapter that changes it fails here: Socket.IO constructs the adapter
// from the factory with `new` and sends every emit through the adapter instance's
// `broadcast(packet, opts)`; the Redis adapter publishes unless `opts.flags.local`, and
// delivers to local sockets either way.
describe('skipRedisWhenAlone', () => {
  let harness: AdapterHarness;
  let server: Server;
  let client: ClientSocket;
  let channels: string[];
  let seen: BroadcastOptions[];
  const topology = { alone: false };
  const redisClients: Redis[] = [];

  async function start(wrap: (factory: AdapterFactory) => AdapterFactory): Promise<void> {
    const publisher = recordingPublisher(unreachableRedis());
    const sub = observeSubscribePromises(unreachableRedis());
    redisClients.push(publisher.client, sub);
    channels = publisher.channels;
    const recording = recordingBroadcasts(createAdapter(publishSafely(publisher.client), sub));
    seen = recording.seen;
    harness = await serveWithAdapter(wrap(recording.factory));
    ({ server, client } = harness);
  }

  function received(event: string): Promise<unknown> {
    return new Promise((resolve) => client.once(event, resolve));
  }

  beforeEach(() => {
    topology.alone = false;
  });

  afterEach(() => {
    harness.close();
    for (const redis of redisClients.splice(0)) redis.disconnect();
  });

  it('relies on the adapter skipping Redis for a broadcast flagged local, still delivering here', async () => {
    await start((factory) => factory);
    expect(server.of('/').adapter).toBeInstanceOf(RedisAdapter);
    expect(Object.getOwnPropertyDescriptor(RedisAdapter.prototype, 'broadcast')?.value).toHaveLength(2);

    let got = received('everywhere');
    server.to('room').emit('everywhere', 1);
    expect(await got).toBe(1);
    expect(channels).toEqual(['socket.io#/#room#']);
    expect(seen[0].rooms).toEqual(new Set(['room']));

    got = received('here');
    server.local.to('room').emit('here', 2);
    expect(await got).toBe(2);
    expect(seen[1].flags).toEqual({ local: true });
    expect(channels).toHaveLength(1);
  });

  it('keeps broadcasts off Redis while this is the only instance, and delivers them here', async () => {
    await start((factory) => skipRedisWhenAlone(factory, topology));
    topology.alone = true;
    const got = received('event');
    server.to('room').emit('event', 'data');
    expect(await got).toBe('data');
    expect(channels).toEqual([]);
    expect(seen[0].flags).toEqual({ local: true });
    expect(seen[0].rooms).toEqual(new Set(['room']));
  });

  it('publishes through Redis as soon as another instance is there, reading the topology per broadcast', async () => {
    await start((factory) => skipRedisWhenAlone(factory, topology));
    topology.alone = true;
    server.to('room').emit('event', 1);
    topology.alone = false;
    server.to('room').emit('event', 2);
    expect(channels).toEqual(['socket.io#/#room#']);
    expect(seen.map((opts) => opts.flags?.local)).toEqual([true, undefined]);
  });

  it('keeps the caller’s other flags', async () => {
    await start((factory) => skipRedisWhenAlone(factory, topology));
    topology.alone = true;
    const got = received('event');
    server.to('room').volatile.compress(false).emit('event', 'data');
    expect(await got).toBe('data');
    expect(seen[0].flags).toEqual({ volatile: true, compress: false, local: true });
  });
});
