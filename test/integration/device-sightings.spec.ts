import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';

import { DeviceSightings } from '../../src/devices/device-sightings.service.js';
import { DevicesRepository } from '../../src/devices/devices.repository.js';
import type { DeviceRef } from '../../src/devices/devices.types.js';
import { DeliveryCursorsRepository } from '../../src/offline-queue/delivery-cursors.repository.js';
import { MembershipRepository } from '../../src/conversations/membership.repository.js';
import { PresenceService } from '../../src/presence/presence.service.js';
import { PrismaService } from '../../src/prisma/prisma.service.js';
import { startTestApp, type TestApp } from '../support/app.js';
import { connect } from '../support/clients.js';
import { createConversation, userId } from '../support/fixtures.js';

describe('connect-time writes, batched across devices connecting together', () => {
  let service: TestApp;
  let devices: DevicesRepository;

  beforeAll(async () => {
    service = await startTestApp();
    devices = service.app.get(DevicesRepository);
  });

  afterAll(async () => {
    vi.restoreAllMocks();
    await service?.close();
  });

  async function cursorsOf(device: DeviceRef): Promise<{ conversation_id: string; acked_seq: string }[]> {
    const { rows } = await service.app
      .get(PrismaService)
      .sql.query<{ conversation_id: string; acked_seq: string }>(
        'SELECT conversation_id, acked_seq::text FROM delivery_cursors WHERE user_id = $1 AND device_id = $2',
        [device.userId, device.deviceId],
      );
    return rows;
  }

  it('touch says, per device in order, whether it created it; a device listed twice is created once', async () => {
    const known = { userId: userId('known'), deviceId: 'phone' };
    await devices.touch([known]);
    const fresh = { userId: userId('fresh'), deviceId: 'phone' };
    const other = { userId: fresh.userId, deviceId: 'laptop' };

    expect(await devices.touch([fresh, known, other, { ...fresh }])).toEqual([true, false, true, false]);
    expect(await devices.touch([fresh, other])).toEqual([false, false]);
  });

  it('startForDevices gives several devices a cursor at each conversation’s current seq', async () => {
    const alice = userId('alice');
    const bob = userId('bob');
    const conversationId = await createConversation(service, alice, [bob]);
    const sender = await connect(service.url, alice, { deviceId: 'web' });
    for (let i = 0; i < 3; i++) {
      await sender.request('send', { conversationId, clientMsgId: crypto.randomUUID(), body: `m${i}` });
    }
    sender.close();
    const phone = { userId: bob, deviceId: 'new-phone' };
    const tablet = { userId: bob, deviceId: 'new-tablet' };
    await devices.touch([phone, tablet]);

    await service.app.get(DeliveryCursorsRepository).startForDevices([phone, tablet, phone]);

    for (const device of [phone, tablet]) {
      expect(await cursorsOf(device)).toEqual([{ conversation_id: conversationId, acked_seq: '3' }]);
    }
  });

  it('devices seen in the same event-loop round share one statement, and each gets its own answer', async () => {
    const sightings = service.app.get(DeviceSightings);
    const touch = vi.spyOn(devices, 'touch');
    const known = { userId: userId('again'), deviceId: 'd' };
    await sightings.seen(known);
    touch.mockClear();

    const fresh = Array.from({ length: 20 }, (_, i) => ({ userId: userId(`u${i}`), deviceId: 'd' }));
    const answers = await Promise.all([...fresh, known].map((device) => sightings.seen(device)));

    expect(answers).toEqual([...fresh.map(() => true), false]);
    expect(touch).toHaveBeenCalledTimes(1);
    touch.mockRestore();
  });

  it('looks up the conversations of users coming online together in a shared statement', async () => {
    const memberships = service.app.get(MembershipRepository);
    const lookup = vi.spyOn(memberships, 'conversationIdsOf');
    const users = Array.from({ length: 10 }, (_, i) => userId(`p${i}`));
    const conversationId = await createConversation(service, users[0], users.slice(1));
    const watcher = await connect(service.url, users[0], { deviceId: 'w' });
    await watcher.request('join', { conversationId });
    lookup.mockClear();
    const online = new Set<string>();
    const allOnline = new Promise<void>((resolve) =>
      watcher.socket.on('presence', (p: { userId: string; status: string }) => {
        if (p.status === 'online') online.add(p.userId);
        if (online.size === users.length - 1) resolve();
      }),
    );

    const presence = service.app.get(PresenceService);
    const comers = users.slice(1);
    await Promise.all(comers.map((user) => presence.connected(user, 'd', `socket-of-${user}`)));
    await allOnline;

    expect([...online].sort()).toEqual([...comers].sort());
    expect(lookup.mock.calls.length).toBeLessThan(comers.length);
    await Promise.all(comers.map((user) => presence.disconnected(`socket-of-${user}`)));
    watcher.close();
    lookup.mockRestore();
  });
});
