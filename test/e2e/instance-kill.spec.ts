import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { JoinData, PresencePayload } from '@messaging-service/client/protocol';
import { RedisService } from '../../src/redis/redis.service.js';
import { startTestApp, type TestApp } from '../support/app.js';
import {
  ClientPool,
  expectReceivedOnceInOrder,
  expectSendsResolvedInOrder,
  sendsInFlight,
  sendStream,
  storedMessages,
  waitFor,
  type RecordingClient,
  type SendStream,
} from '../support/client-harness.js';
import { connect, dataOf, type TestClient } from '../support/clients.js';
import { createConversation, userId } from '../support/fixtures.js';
import { spawnBeside, type ServiceProcess } from '../support/service-process.js';
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.js';

/** Short, so that a crashed instance's users go offline within the test's time. */
const PRESENCE_TTL_MS = 1_500;
/**
 * What the `offline` event may take beyond PRESENCE_TTL_MS after the kill: a late timer
 * and a few Redis round trips on a busy machine (two service processes and the test's
 * own instance share its cores). Measured on a busy 2-core machine: 1.2-1.3 s.
 */
const OFFLINE_SLACK_MS = 300;
const TIMING = { PRESENCE_TTL_MS: String(PRESENCE_TTL_MS) };

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface Instance {
  url: string;
  port: number;
}

/**
 * Issue #16, failure drills with several instances: three instances share one PostgreSQL
 * and one Redis (one in this process, the others production processes); one of them is
 * SIGKILLed. Its SDK clients reach it through a TCP proxy standing in for the load
 * balancer, which sends new connections to the survivors once its health check noticed.
 */
describe('SIGKILL of one of three instances', () => {
  let local: TestApp;
  let survivor: Instance;
  const processes: ServiceProcess[] = [];
  const proxies: TcpProxy[] = [];
  const pools: ClientPool[] = [];
  const sockets: TestClient[] = [];

  /** A production process of the service on the shared PostgreSQL and Redis. */
  async function spawnInstance(): Promise<Instance & { service: ServiceProcess }> {
    const instance = await spawnBeside(local, TIMING);
    processes.push(instance.service);
    return instance;
  }

  beforeAll(async () => {
    local = await startTestApp(TIMING);
    survivor = await spawnInstance();
  });

  afterAll(async () => {
    for (const socket of sockets) socket.close();
    await Promise.all(pools.map((pool) => pool.closeAll()));
    await Promise.all(proxies.map((proxy) => proxy.close()));
    for (const service of processes) service.child.kill('SIGKILL');
    await Promise.all(processes.map((service) => service.exited(10_000).catch(() => undefined)));
    await local?.close();
  });

  const portOf = (url: string) => Number(new URL(url).port);

  it('resolves every send once and delivers every message once, in seq order, to every device when an instance is SIGKILLed mid-stream', async () => {
    const victim = await spawnInstance();
    // The load balancer's address for the clients that land on the victim.
    const balancer = await startTcpProxy(victim.port);
    proxies.push(balancer);
    const pool = new ClientPool();
    pools.push(pool);

    const [s1, s2, s3, r, q] = ['s1', 's2', 's3', 'r', 'q'].map((name) => userId(name));
    const conversationId = await createConversation(local, s1, [s2, s3, r, q]);
    // Senders on the victim (two) and on the in-process instance; receivers on all three,
    // r with one device on each.
    const names = new Map<RecordingClient, string>();
    const deviceOn = (url: string, user: string, deviceId: string) => {
      const created = pool.create(url, user, { deviceId });
      names.set(created, deviceId);
      return created;
    };
    const onVictim = [
      deviceOn(balancer.url, s1, 's1-phone'),
      deviceOn(balancer.url, s2, 's2-phone'),
      deviceOn(balancer.url, r, 'r-phone'),
      deviceOn(balancer.url, q, 'q-phone'),
    ];
    const onSurvivors = [
      deviceOn(local.url, s3, 's3-phone'),
      deviceOn(local.url, r, 'r-tablet'),
      deviceOn(survivor.url, r, 'r-laptop'),
    ];
    const devices = [...onVictim, ...onSurvivors];
    await Promise.all(devices.map((device) => device.client.connect()));
    expect(balancer.openByTarget().get(victim.port), 'clients connected to the victim').toBe(onVictim.length);

    // Every device sees one message first, as in a conversation under way, so that this
    // drill is about the kill alone. From a cold start the reply to a device's own first
    // send may overtake an earlier seq stored on another instance; the SDK waits a while
    // before it takes a baseline from its own replies (inbox.spec.ts), which ran this drill
    // without the warm-up 6 times clean, but a very busy machine could outlast that wait.
    const warmUp = await onSurvivors[0].client.send(conversationId, { body: 'warm-up' });
    for (const device of devices.filter((d) => d !== onSurvivors[0])) {
      await waitFor(
        () => device.received.some((m) => m.id === warmUp.id),
        () => `${names.get(device)} to receive the warm-up message: ${device.describe()}`,
      );
    }

    const perSender = 200;
    const senders: [RecordingClient, SendStream][] = [onVictim[0], onVictim[1], onSurvivors[0]].map((device) => [
      device,
      sendStream(device.client, conversationId, {
        count: perSender,
        batch: 4,
        intervalMs: 50,
        prefix: names.get(device),
      }),
    ]);
    const victimSenders = senders.slice(0, 2);
    await waitFor(
      () => victimSenders.every(([, stream]) => stream.resolved() >= 50),
      () =>
        `50 sends of each victim sender stored before the kill: ${victimSenders.map(([d]) => d.describe()).join(' ')}`,
    );
    // Frozen first, so that the kill finds sends on the wire: some stored without a reply
    // sent, some not read at all.
    victim.service.child.kill('SIGSTOP');
    await waitFor(
      () => victimSenders.every(([device, stream]) => sendsInFlight(device.client, stream) >= 4),
      () => `sends on the wire to the frozen victim: ${victimSenders.map(([d]) => d.describe()).join(' ')}`,
      5_000,
    );
    victim.service.child.kill('SIGKILL');
    expect(await victim.service.exited(10_000)).toBe('SIGKILL');
    for (const [device, stream] of victimSenders) {
      expect(stream.resolved(), `the kill landed mid-stream: ${device.describe()}`).toBeLessThan(perSender);
    }
    // Until the balancer's health check notices, reconnects to the victim are refused.
    await sleep(300);
    balancer.retarget([portOf(local.url), survivor.port]);

    // Every send resolved once, with its own message, in the order send() was called.
    const sent = await expectSendsResolvedInOrder(senders, perSender, (client) => names.get(client));
    sent.get(onSurvivors[0])?.unshift(warmUp);
    const total = senders.length * perSender + 1;
    const allSent = [...sent.values()].flat();
    expect(new Set(allSent.map((m) => m.id)).size, 'distinct messages among the resolved sends').toBe(total);
    expect(allSent.map((m) => m.seq).sort((a, b) => a - b)).toEqual(Array.from({ length: total }, (_, i) => i + 1));

    // The service stored each once.
    const stored = await storedMessages(local.url, s1, conversationId);
    expect(stored.length, 'messages stored').toBe(total);
    const storedIdBySeq = new Map(stored.map((m) => [m.seq, m.id]));
    expect(allSent.filter((m) => storedIdBySeq.get(m.seq) !== m.id).length, 'sends answered with another id').toBe(0);

    // Every device: every message but its own, once, in strictly increasing seq.
    for (const device of devices) {
      const own = new Set((sent.get(device) ?? []).map((m) => m.seq));
      const expected = total - own.size;
      const received = () => device.received.filter((m) => m.conversationId === conversationId);
      await waitFor(
        () => received().length >= expected,
        () => {
          const have = new Set([...own, ...received().map((m) => m.seq)]);
          const missing = stored.filter((m) => !have.has(m.seq)).slice(0, 10);
          const where = missing.map((m) => `${m.seq} (${m.clientMsgId})`).join(', ');
          return `${names.get(device)} to receive ${expected} messages; it has ${received().length}, lacks ${where}: ${device.describe()}`;
        },
        20_000,
      );
    }
    await sleep(300); // a late duplicate would show within a few acks' time
    for (const device of devices) {
      const own = new Set((sent.get(device) ?? []).map((m) => m.seq));
      const got = device.received.filter((m) => m.conversationId === conversationId);
      const name = names.get(device);
      expectReceivedOnceInOrder(device, got, name, { expected: total - own.size, own, storedIdBySeq });
      expect(await device.client.outbox(), `${name}: outbox`).toEqual([]);
    }

    // The victim's clients moved to the survivors; the others never noticed.
    for (const device of onVictim) {
      expect(device.client.state, device.describe()).toBe('connected');
      expect(device.client.metrics().reconnects, `reconnected: ${device.describe()}`).toBeGreaterThan(0);
    }
    for (const device of victimSenders) {
      expect(
        device[0].client.metrics().resent,
        `resent what the kill left unanswered: ${device[0].describe()}`,
      ).toBeGreaterThan(0);
    }
    for (const device of onSurvivors) {
      expect(device.client.metrics().reconnects, `stayed connected: ${device.describe()}`).toBe(0);
    }
    const open = balancer.openByTarget();
    expect(open.get(victim.port) ?? 0, 'connections left to the victim').toBe(0);
    expect(open.get(portOf(local.url)), 'victim clients now on the in-process instance').toBeGreaterThan(0);
    expect(open.get(survivor.port), 'victim clients now on the other process').toBeGreaterThan(0);
  });

  it('takes a user connected only to the SIGKILLed instance offline within PRESENCE_TTL_MS, as an event and in the join snapshot', async () => {
    const victim = await spawnInstance();
    const [lonely, watcher, joiner] = ['lonely', 'watcher', 'joiner'].map((name) => userId(name));
    const conversationId = await createConversation(local, watcher, [lonely, joiner]);
    const watchers = await Promise.all([
      connect(local.url, watcher, { deviceId: 'tablet' }),
      connect(survivor.url, watcher, { deviceId: 'laptop' }),
    ]);
    sockets.push(...watchers);
    for (const socket of watchers) dataOf(await socket.request('join', { conversationId }));
    const isLonely = (status: PresencePayload['status']) => (p: PresencePayload) =>
      p.conversationId === conversationId && p.userId === lonely && p.status === status;

    const online = watchers.map((socket) => socket.waitForEvent<PresencePayload>('presence', isLonely('online')));
    const victimSocket = await connect(victim.url, lonely, { deviceId: 'phone' });
    sockets.push(victimSocket);
    dataOf(await victimSocket.request('join', { conversationId }));
    await Promise.all(online);

    /** The presence a member joining on a survivor gets (PROTOCOL.md `join`). */
    const snapshot = async (url: string) => {
      const socket = await connect(url, joiner, { deviceId: `joiner-${Math.random().toString(36).slice(2, 8)}` });
      try {
        return dataOf(await socket.request<JoinData>('join', { conversationId })).presence;
      } finally {
        socket.close();
      }
    };
    expect(await snapshot(survivor.url), 'before the kill').toContainEqual({ userId: lonely, deviceIds: ['phone'] });

    // The worst moment: right after the victim pushed the entry's expiry forward (the
    // score of pr:{bucket}:u:<user>, see PresenceRepository), so that it lives longest.
    const redis = local.app.get(RedisService).client;
    const [userKey] = await redis.keys(`pr:{*}:u:${lonely}`);
    expect(userKey, "the user's presence key").toBeDefined();
    const expiry = async () => Number((await redis.zrangebyscore(userKey, '-inf', '+inf', 'WITHSCORES'))[1]);
    const before = await expiry();
    await waitFor(async () => (await expiry()) !== before, 'the victim to refresh its presence entry', 5_000);
    const killedAt = performance.now();
    victim.service.child.kill('SIGKILL');
    const arrivals = watchers.map((socket) =>
      socket
        .waitForEvent<PresencePayload>('presence', isLonely('offline'), PRESENCE_TTL_MS + OFFLINE_SLACK_MS + 5_000)
        .then(
          () => performance.now() - killedAt,
          () => {
            throw new Error(
              `no presence 'offline' for the victim's user within ${PRESENCE_TTL_MS + OFFLINE_SLACK_MS + 5_000} ms of the kill`,
            );
          },
        ),
    );
    expect(await victim.service.exited(10_000)).toBe('SIGKILL');
    const delays = await Promise.all(arrivals);
    for (const delay of delays) {
      expect(
        delay,
        `offline event ${Math.round(delay)} ms after the kill (PRESENCE_TTL_MS ${PRESENCE_TTL_MS} + slack ${OFFLINE_SLACK_MS})`,
      ).toBeLessThanOrEqual(PRESENCE_TTL_MS + OFFLINE_SLACK_MS);
    }

    expect(await snapshot(local.url), 'after the offline event').not.toContainEqual(
      expect.objectContaining({ userId: lonely }),
    );
    expect(await snapshot(survivor.url), 'after the offline event').not.toContainEqual(
      expect.objectContaining({ userId: lonely }),
    );
    // Once per watching socket, and the user stays offline.
    await sleep(PRESENCE_TTL_MS / 2);
    for (const socket of watchers) {
      const count = (status: PresencePayload['status']) =>
        socket.events.filter((e) => e.event === 'presence' && isLonely(status)(e.payload as PresencePayload)).length;
      expect([count('online'), count('offline')], 'online and offline events per watching socket').toEqual([1, 1]);
    }
  });
});
