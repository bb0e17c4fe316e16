import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { SendData } from '@messaging-service/client/protocol';
import { testEnvironment } from '../support/app.js';
import { connect, dataOf, mintToken, type TestClient } from '../support/clients.js';
import { userId } from '../support/fixtures.js';
import { freePort, freePorts } from '../support/free-port.js';
import { httpCall } from '../support/http.js';
import { installNginx, renderLbConfig, startNginx, type NginxProcess } from '../support/nginx.js';
import { pollStatus, spawnService, type ServiceProcess } from '../support/service-process.js';

/** The instance's live Socket.IO connections, from its own /metrics (not through nginx). */
async function socketConnections(port: number): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(5_000) })).text();
  const line = /^socket_connections (\d+)$/m.exec(text);
  if (!line) throw new Error(`no socket_connections in the metrics of port ${port}`);
  return Number(line[1]);
}

describe('two instances behind the load balancer of deploy/nginx.conf', () => {
  let nginxBinary: string;
  let dropDatabase: () => Promise<void> = () => Promise.resolve();
  const services: ServiceProcess[] = [];
  let ports: [number, number];
  const balancers: NginxProcess[] = [];
  const open: TestClient[] = [];

  /** Starts nginx on the committed config (or a variant of it) in front of both instances. */
  const balancer = async (edit?: (config: string) => string) => {
    const port = await freePort();
    const lb = await startNginx(nginxBinary, renderLbConfig(ports, port, edit), port);
    balancers.push(lb);
    return lb;
  };

  const client = async (...args: Parameters<typeof connect>) => {
    const c = await connect(...args);
    open.push(c);
    return c;
  };

  /** Connects one client and tells which instance (0 or 1) it landed on, by their counts. */
  const clientOn = async (...args: Parameters<typeof connect>): Promise<[TestClient, number]> => {
    const before = await Promise.all(ports.map(socketConnections));
    const c = await client(...args);
    const after = await Promise.all(ports.map(socketConnections));
    const landed = after.findIndex((count, i) => count === before[i] + 1);
    expect(landed, `counts before ${before.join('/')}, after ${after.join('/')}`).toBeGreaterThanOrEqual(0);
    return [c, landed];
  };

  /** A group of `users` created through the balancer by the first of them. */
  const conversationOf = async (lb: NginxProcess, users: string[]) => {
    const reply = await httpCall(lb.url, 'POST', '/v1/conversations', await mintToken(users[0]), {
      kind: 'group',
      memberIds: users.slice(1),
    });
    expect(reply.status, JSON.stringify(reply.body)).toBe(201);
    return (reply.body as { data: { id: string } }).data.id;
  };

  beforeAll(async () => {
    nginxBinary = installNginx();
    // Two processes of the built service on one database and one Redis, as in compose.
    const environment = await testEnvironment();
    dropDatabase = environment.dropDatabase;
    const [first, second] = await freePorts(2);
    ports = [first, second];
    for (const port of ports) services.push(spawnService({ ...environment.env, PORT: String(port) }));
    for (const [index, port] of ports.entries()) {
      const status = await pollStatus(`http://127.0.0.1:${port}/health/ready`, (s) => s === 200, 30_000);
      expect(status, `instance ${index + 1} ready:\n${services[index].output()}`).toBe(200);
    }
  }, 180_000);

  afterAll(async () => {
    for (const c of open) c.close();
    await Promise.all(balancers.map((lb) => lb.stop()));
    for (const service of services) service.child.kill('SIGTERM');
    await Promise.all(
      services.map((service) =>
        service.exited(15_000).catch(() => {
          service.child.kill('SIGKILL');
        }),
      ),
    );
    await dropDatabase();
  }, 60_000);

  it('spreads websocket-only clients over both instances and relays messages between them', async () => {
    const lb = await balancer();
    const users = Array.from({ length: 6 }, (_, i) => userId(`ws${i}`));
    const conversationId = await conversationOf(lb, users);

    // One at a time, telling by the instances' own counts where each connection landed.
    const landed: [TestClient, number][] = [];
    for (const user of users) landed.push(await clientOn(lb.url, user, { transports: ['websocket'] }));
    expect(await Promise.all(ports.map(socketConnections)), 'least_conn: three on each instance').toEqual([3, 3]);

    // Each instance's own figures are not served through the balancer.
    expect((await fetch(`${lb.url}/metrics`)).status).toBe(404);

    const sender = landed.find(([, instance]) => instance === 0)![0];
    const receiver = landed.find(([, instance]) => instance === 1)![0];
    const sent = dataOf(
      await sender.request<SendData>('send', { conversationId, clientMsgId: 'across', body: 'from instance 1' }),
    );
    expect((await receiver.waitForMessages(1))[0]).toEqual(sent.message);
    const reply = dataOf(
      await receiver.request<SendData>('send', { conversationId, clientMsgId: 'back', body: 'from instance 2' }),
    );
    expect((await sender.waitForMessages(1))[0]).toEqual(reply.message);
  });

  it('keeps polling clients, and their upgrade to websocket, on one instance, so that they connect and exchange messages', async () => {
    const lb = await balancer();
    const [alice, bob, carol] = [userId('alice'), userId('bob'), userId('carol')];
    const conversationId = await conversationOf(lb, [alice, bob, carol]);
    const [pollingAlice, aliceOn] = await clientOn(lb.url, alice, { transports: ['polling'] });
    const [pollingBob, bobOn] = await clientOn(lb.url, bob, { transports: ['polling'] });
    expect(bobOn, 'both polling clients come from 127.0.0.1: one instance').toBe(aliceOn);
    // Websocket-only carol is balanced (least_conn): of her two devices one lands on each
    // instance, so one of them is on the other instance than the polling clients.
    const [carolPhone, phoneOn] = await clientOn(lb.url, carol, { transports: ['websocket'], deviceId: 'phone' });
    const [carolLaptop, laptopOn] = await clientOn(lb.url, carol, { transports: ['websocket'], deviceId: 'laptop' });
    expect([phoneOn, laptopOn].sort()).toEqual([0, 1]);
    const carolWs = [carolPhone, carolLaptop];

    const { message: first } = dataOf(
      await pollingAlice.request<SendData>('send', { conversationId, clientMsgId: 'p1', body: 'over polling' }),
    );
    expect((await pollingBob.waitForMessages(1))[0]).toEqual(first);
    for (const device of carolWs) expect((await device.waitForMessages(1))[0]).toEqual(first);
    for (const [index, device] of carolWs.entries()) {
      const { message } = dataOf(
        await device.request<SendData>('send', { conversationId, clientMsgId: `w${index}`, body: 'over websocket' }),
      );
      // Alice sent the first message, which does not come back to her socket.
      expect((await pollingAlice.waitForMessages(index + 1))[index]).toEqual(message);
      expect((await pollingBob.waitForMessages(index + 2))[index + 1]).toEqual(message);
    }

    // A browser's default: polling first, then the upgrade (transport=websocket with the
    // sid), which must reach the same instance too.
    const dave = userId('dave');
    const [upgraded, daveOn] = await clientOn(lb.url, dave, { transports: ['polling', 'websocket'] });
    expect(daveOn, 'the same address, so the same instance as the other polling clients').toBe(aliceOn);
    const deadline = Date.now() + 10_000;
    while (upgraded.socket.io.engine.transport.name !== 'websocket') {
      if (Date.now() > deadline) throw new Error('no upgrade to websocket within 10 s');
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    // nginx logs the upgraded request (status 101, Switching Protocols) when it closes.
    upgraded.close();
    const upgradeLogged = () => lb.accessLog().some((line) => /transport=websocket&.*sid=.* 101$/.test(line));
    while (!upgradeLogged()) {
      if (Date.now() > deadline) throw new Error(`no upgrade in the access log:\n${lb.accessLog().join('\n')}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }

    // Every request of a polling session (the upgrade included) went to one instance: the
    // address hash of the sticky group.
    const sticky = lb.accessLog().filter((line) => line.includes('transport=polling') || line.includes('sid='));
    expect(sticky.length).toBeGreaterThan(4);
    expect(new Set(sticky.map((line) => line.split(' ')[1])).size, sticky.join('\n')).toBe(1);
  });

  it('fails polling clients without the stickiness (the sticky group turned round-robin)', async () => {
    const lb = await balancer((config) => config.replace('    hash $remote_addr consistent;\n', ''));
    const user = userId('unsticky');
    // The handshake lands on one instance, the next request with its sid on the other,
    // which answers 400 "Session ID unknown".
    const error = await connect(lb.url, user, { transports: ['polling'] }).then(
      () => null,
      (e: unknown) => e,
    );
    expect(error).toMatchObject({ type: 'TransportError', description: 400 });
    const requests = lb.accessLog().filter((line) => line.startsWith('/socket.io/'));
    expect(requests.at(-1), requests.join('\n')).toMatch(/sid=.* 400$/);
    expect(new Set(requests.map((line) => line.split(' ')[1])).size, requests.join('\n')).toBe(2);
    // Websocket-only clients do not need it.
    await client(lb.url, user, { transports: ['websocket'] });
  });
});
