import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { parseEnv } from '../../src/config/config.parser.js';
import { PresenceRepository, presenceKeysOf, type SocketPresence } from '../../src/presence/presence.repository.js';
import { RedisService } from '../../src/redis/redis.service.js';
import { testEnv } from '../support/app.js';
import { useTestRedisDb } from '../support/databases.js';
import { userId } from '../support/fixtures.js';

// presence-add.lua and presence-remove.lua against a real Redis (a database of this
// file's own), through the repository that runs them.

let redis: RedisService;
let presence: PresenceRepository;

beforeAll(() => {
  const config = parseEnv(testEnv('postgresql://unused@127.0.0.1:1/unused', useTestRedisDb().url));
  redis = new RedisService(config);
  presence = new PresenceRepository(redis);
});

afterAll(async () => {
  await redis?.onApplicationShutdown();
});

const TTL = 60_000;
const socketOf = (user: string, deviceId: string, socketId = `${deviceId}-socket`): SocketPresence => ({
  userId: user,
  deviceId,
  instanceId: 'instance-1',
  socketId,
});

describe('presence-add.lua', () => {
  it('says online for the first live socket only, and records it for the user and the sweep', async () => {
    const user = userId('p');
    const phone = socketOf(user, 'phone');
    expect(await presence.add(phone, Date.now() + TTL, TTL)).toBe(true);
    expect(await presence.add(socketOf(user, 'laptop'), Date.now() + TTL, TTL)).toBe(false);
    expect((await presence.onlineDevices([user])).get(user)?.sort()).toEqual(['laptop', 'phone']);
    expect(
      await redis.client.zscore(presenceKeysOf(user).all, `${user}\nphone|instance-1|phone-socket`),
    ).not.toBeNull();
    const ttl = await redis.client.pttl(presenceKeysOf(user).user);
    expect(ttl).toBeGreaterThan(TTL);
    expect(ttl).toBeLessThanOrEqual(2 * TTL);
  });

  it('does not count entries that expired (their instance died) as live', async () => {
    const user = userId('p');
    await presence.add(socketOf(user, 'phone'), Date.now() - 1, TTL); // already expired
    expect(await presence.add(socketOf(user, 'laptop'), Date.now() + TTL, TTL)).toBe(true);
  });
});

describe('presence-remove.lua', () => {
  it('says offline when the last live socket goes, not before', async () => {
    const user = userId('p');
    const [phone, laptop] = [socketOf(user, 'phone'), socketOf(user, 'laptop')];
    await presence.add(phone, Date.now() + TTL, TTL);
    await presence.add(laptop, Date.now() + TTL, TTL);
    expect(await presence.remove(phone)).toBe(false);
    expect(await presence.remove(laptop)).toBe(true);
    expect(await presence.onlineDevices([user])).toEqual(new Map());
    expect(await redis.client.zscore(presenceKeysOf(user).all, `${user}\nlaptop|instance-1|laptop-socket`)).toBeNull();
  });

  it('says nothing for a socket that was not there (removed twice, or swept)', async () => {
    const user = userId('p');
    const phone = socketOf(user, 'phone');
    await presence.add(phone, Date.now() + TTL, TTL);
    expect(await presence.remove(phone)).toBe(true);
    expect(await presence.remove(phone)).toBe(false);
  });

  it('clears the user’s expired entries, so a dead instance’s socket does not keep them online', async () => {
    const user = userId('p');
    await presence.add(socketOf(user, 'old', 'dead-socket'), Date.now() - 1, TTL);
    const phone = socketOf(user, 'phone');
    await presence.add(phone, Date.now() + TTL, TTL);
    expect(await presence.remove(phone)).toBe(true);
    expect(await redis.client.zcard(presenceKeysOf(user).user)).toBe(0);
  });
});
