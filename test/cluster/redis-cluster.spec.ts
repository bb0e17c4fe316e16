// The Redis-facing pieces against a real Redis Cluster (the cluster project of
// vitest.config.ts: three masters with one replica each, started by the global setup):
// writes grouped per slot land on every shard, a shard that lost its data is noticed,
// presence and the instance count span the nodes.
import { randomUUID } from 'node:crypto';

import { Cluster } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';

import type { AppConfig } from '../../src/config/app-config.js';
import type { DeviceRef } from '../../src/devices/devices.types.js';
import { OfflineQueueRepository } from '../../src/offline-queue/offline-queue.repository.js';
import type { PendingEntry } from '../../src/offline-queue/offline-queue.types.js';
import { PresenceRepository } from '../../src/presence/presence.repository.js';
import { PushJobsRepository, type PushJobData } from '../../src/push/push-jobs.repository.js';
import type { PushOptions } from '../../src/push/push.options.js';
import { slotOf } from '../../src/redis/redis-client.js';
import { RedisService } from '../../src/redis/redis.service.js';
import { userId } from '../support/fixtures.js';
import { startTopologyInstance, type TopologyInstance } from '../support/instance-topology.js';

const config = () => ({ redisUrl: inject('TEST_REDIS_URL'), redisMode: 'cluster' }) as AppConfig;

let redis: RedisService;
let cluster: Cluster;
let queues: OfflineQueueRepository;

beforeAll(async () => {
  expect(inject('TEST_REDIS_MODE')).toBe('cluster');
  redis = new RedisService(config());
  cluster = redis.client as Cluster;
  expect(cluster).toBeInstanceOf(Cluster);
  queues = new OfflineQueueRepository(redis);
  await cluster.ping();
});

afterAll(async () => {
  await redis?.onApplicationShutdown();
});

/** The master holding a key's slot (CLUSTER SLOTS lists each range's master first). */
async function masterOf(key: string) {
  const slot = slotOf(key);
  const ranges = await cluster.cluster('SLOTS');
  const range = ranges.find(([from, to]) => slot >= from && slot <= to);
  const master = cluster.nodes('master').find((node) => node.options.port === range?.[2][1]);
  if (!master) throw new Error(`no master owns slot ${slot}`);
  return master;
}

const entries = (conversationId: string, seqs: readonly number[]): PendingEntry[] =>
  seqs.map((seq) => ({ messageId: randomUUID(), conversationId, seq, senderId: 'sender', score: 1_000_000 + seq }));

describe('the local cluster', () => {
  it('has three masters, each with a replica', async () => {
    const masters = cluster.nodes('master');
    expect(masters).toHaveLength(3);
    const info = await masters[0].cluster('INFO');
    expect(info).toContain('cluster_state:ok');
    expect(info).toContain('cluster_known_nodes:6');
  });
});

describe('offline queue writes grouped per slot', () => {
  it('lands one write to devices in different slots on every shard, each device holding every entry', async () => {
    const devices: DeviceRef[] = Array.from({ length: 40 }, (_, index) => ({
      userId: userId('slots'),
      deviceId: `device-${index}`,
    }));
    for (const device of devices) await queues.syncState(device, true);
    const list = entries(randomUUID(), [1, 2, 3]);

    await queues.enqueueForDevices(devices, list, 100);

    for (const device of devices) expect(await queues.length(device)).toBe(3);
    const tags = devices.map((device) => `mq:{${device.userId}\u0000${device.deviceId}}`);
    expect(new Set(tags.map(slotOf)).size).toBeGreaterThan(30);
    // Every master holds some of the queues: the call was split by slot, not sent to one node.
    const perMaster = await Promise.all(
      cluster.nodes('master').map(async (master) => {
        let held = 0;
        for (const tag of tags) held += await master.exists(`${tag}:z`).catch(() => 0);
        return held;
      }),
    );
    expect(perMaster.every((held) => held > 0)).toBe(true);
    expect(perMaster.reduce((a, b) => a + b, 0)).toBe(devices.length);
  });

  it('acks and peeks each device in its own slot', async () => {
    const device = { userId: userId('ack'), deviceId: 'phone' };
    await queues.syncState(device, true);
    const list = entries(randomUUID(), [1, 2, 3]);
    await queues.enqueueForDevices([device], list, 100);

    const acked = await queues.ack(device, [list[0].messageId]);

    expect(acked.cursors).toEqual([{ conversationId: list[0].conversationId, ackedSeq: 1 }]);
    expect((await queues.peekIfSynced(device, 10))?.refs.map((ref) => ref.seq)).toEqual([2, 3]);
    await queues.drop(device);
    expect(await queues.length(device)).toBe(0);
  });

  it('asks for a rebuild of the devices on a shard that lost its data, not of the others', async () => {
    const devices = Array.from({ length: 12 }, (_, index) => ({ userId: userId('lost'), deviceId: `d${index}` }));
    for (const device of devices) await queues.syncState(device, true);
    await queues.enqueueForDevices(devices, entries(randomUUID(), [1]), 100);
    const tagOf = (device: DeviceRef) => `mq:{${device.userId}\u0000${device.deviceId}}`;
    const lostMaster = await masterOf(tagOf(devices[0]));
    const epochMaster = await masterOf('mq:epoch');
    // Keep the global epoch: this is a shard losing its queues, not the whole of Redis.
    const epoch = await cluster.get('mq:epoch');
    await lostMaster.flushall();
    if (lostMaster === epochMaster) await cluster.set('mq:epoch', epoch!);

    const states = await Promise.all(devices.map((device) => queues.syncState(device, false)));
    const onLost = await Promise.all(devices.map(async (device) => (await masterOf(tagOf(device))) === lostMaster));

    states.forEach((state, index) => expect(state.synced).toBe(!onLost[index]));
    expect(onLost.some((lost) => !lost)).toBe(true);
  });
});

describe('presence across buckets', () => {
  it('records, refreshes, lists and sweeps users whose keys live on different shards', async () => {
    const presence = new PresenceRepository(redis);
    const users = Array.from({ length: 24 }, () => userId('online'));
    const sockets = users.map((user) => ({ userId: user, deviceId: 'phone', instanceId: 'i1', socketId: user }));
    for (const socket of sockets) expect(await presence.add(socket, Date.now() + 60_000, 60_000)).toBe(true);

    await presence.refresh(sockets, Date.now() + 60_000, 60_000);
    const online = await presence.onlineDevices(users);
    expect([...online.keys()].sort()).toEqual([...users].sort());

    await presence.refresh(sockets, Date.now() - 1, 60_000);
    const expired = await presence.expired(Date.now(), 1_000);
    expect(expired.filter((entry) => users.includes(entry.userId))).toHaveLength(users.length);
    // Their only socket goes: each user goes offline.
    for (const socket of sockets) expect(await presence.remove(socket)).toBe(true);
  });
});

describe('instances on one cluster', () => {
  const running: TopologyInstance[] = [];

  async function start() {
    const instance = await startTopologyInstance(config());
    running.push(instance);
    return instance;
  }

  async function until(condition: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!condition()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }

  afterEach(async () => {
    for (const instance of running.splice(0)) await instance.stop();
  });

  it('counts the instances over every node and sends cache invalidations to the others', async () => {
    const first = await start();
    await until(() => first.topology.alone, 'the first count');
    const second = await start();
    await until(() => !first.topology.alone, 'the announcement', 1_000);

    const there: string[] = [];
    second.cache.on('topic', (key) => there.push(key));
    first.cache.invalidate('topic', 'key-1');
    await until(() => there.length === 1, 'the invalidation');
    expect(there).toEqual(['key-1']);

    await second.stop();
    running.splice(running.indexOf(second), 1);
    await until(() => first.topology.alone, 'a count without the second', 5_000);
  });
});

describe('the push queue (BullMQ) on the cluster', () => {
  it('keeps its keys under the {bull} hash tag and runs a job', async () => {
    const options: PushOptions = {
      graceMs: 0,
      attempts: 1,
      backoffMs: 10,
      maxRetryAfterMs: 1_000,
      previews: false,
      previewMaxChars: 10,
      expirySec: 60,
      requestTimeoutMs: 1_000,
      concurrency: 1,
      keepCompletedSec: 60,
      keepCompletedCount: 10,
      keepFailedSec: 60,
    };
    const jobs = new PushJobsRepository(config(), options);
    const ran: PushJobData[] = [];
    jobs.open((attempt) => {
      ran.push(attempt.data);
      return Promise.resolve();
    });
    try {
      const job: PushJobData = {
        messageId: randomUUID(),
        conversationId: randomUUID(),
        seq: 1,
        userId: userId('push'),
        deviceId: 'phone',
        e2e: false,
      };
      await jobs.add([job]);
      const deadline = Date.now() + 10_000;
      while (ran.length === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
      expect(ran).toEqual([job]);
      const keys = (await Promise.all(cluster.nodes('master').map((master) => master.keys('*bull*push*')))).flat();
      expect(keys.length).toBeGreaterThan(0);
      expect(keys.every((key) => key.startsWith('{bull}:push:'))).toBe(true);
    } finally {
      await jobs.close();
    }
  });
});
