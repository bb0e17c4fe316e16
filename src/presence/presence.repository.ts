import { createHash } from 'node:crypto';

import { Injectable } from '@nestjs/common';
import type { Result } from 'ioredis';

import { luaScript } from '../redis/lua-script.js';
import { RedisService } from '../redis/redis.service.js';
import { groupBy } from '../common/group-by.js';

/**
 * Who is online, in Redis so every instance sees the same. Each live socket is an entry
 * with an expiry that its instance keeps pushing forward; a crashed instance's entries
 * simply expire. Users are spread over BUCKETS buckets (b = a hash of the user id):
 *   pr:{b}:u:<userId>  ZSET  "<deviceId>|<instanceId>|<socketId>" -> expiry (ms)
 *   pr:{b}:all         ZSET  "<userId>\n<deviceId>|<instanceId>|<socketId>" -> expiry (ms)
 * A user's key and its bucket's sweep index share a hash tag, so the scripts that write
 * both run on one slot (Redis Cluster), and the sweep index is not one hot key on one
 * shard. (Before the buckets the keys were pr:u:<userId> and pr:all: entries expire
 * within two TTLs, so an upgrade forgets who was online for at most that long.)
 */
/** Adds a socket's entry; returns how many live entries the user had before. */
const ADD = luaScript(import.meta.url, 'presence-add.lua');
/** Removes a socket's entry and the user's expired ones; returns { removed, live left }. */
const REMOVE = luaScript(import.meta.url, 'presence-remove.lua');

declare module 'ioredis' {
  interface RedisCommander<Context> {
    presenceAdd(user: string, all: string, ...args: (string | number)[]): Result<number, Context>;
    presenceRemove(user: string, all: string, ...args: (string | number)[]): Result<[number, number], Context>;
  }
}

/** Fixed: a change moves every user to another key (see above). */
const BUCKETS = 16;
const bucketOf = (userId: string) => createHash('sha1').update(userId).digest().readUInt16BE(0) % BUCKETS;
const allKey = (bucket: number) => `pr:{${bucket}}:all`;
const userKey = (userId: string) => `pr:{${bucketOf(userId)}}:u:${userId}`;
/** A user's key and its bucket's sweep index. */
export const presenceKeysOf = (userId: string) => ({ user: userKey(userId), all: allKey(bucketOf(userId)) });
const ALL_BUCKETS = Array.from({ length: BUCKETS }, (_, bucket) => bucket);

/** Items by their user's bucket. */
const byBucket = <T>(items: readonly T[], userIdOf: (item: T) => string): Map<number, T[]> =>
  groupBy(items, (item) => bucketOf(userIdOf(item)));
const entryOf = (deviceId: string, instanceId: string, socketId: string) => `${deviceId}|${instanceId}|${socketId}`;

export interface SocketPresence {
  userId: string;
  deviceId: string;
  instanceId: string;
  socketId: string;
}

@Injectable()
export class PresenceRepository {
  constructor(private readonly redis: RedisService) {
    this.redis.client.defineCommand('presenceAdd', { numberOfKeys: 2, lua: ADD });
    this.redis.client.defineCommand('presenceRemove', { numberOfKeys: 2, lua: REMOVE });
  }

  /** Records a live socket; true when it is the user's first live one (they came online). */
  async add(p: SocketPresence, expiresAt: number, ttlMs: number): Promise<boolean> {
    const entry = entryOf(p.deviceId, p.instanceId, p.socketId);
    const before = await this.redis.client.presenceAdd(
      userKey(p.userId),
      allKey(bucketOf(p.userId)),
      entry,
      expiresAt,
      Date.now(),
      `${p.userId}\n${entry}`,
      ttlMs * 2,
    );
    return before === 0;
  }

  /** Removes a socket; true when the user has no live socket left (they went offline). */
  async remove(p: SocketPresence): Promise<boolean> {
    const entry = entryOf(p.deviceId, p.instanceId, p.socketId);
    const [removed, after] = await this.redis.client.presenceRemove(
      userKey(p.userId),
      allKey(bucketOf(p.userId)),
      entry,
      Date.now(),
      `${p.userId}\n${entry}`,
    );
    return removed === 1 && after === 0;
  }

  /**
   * Pushes the expiry of this instance's live sockets forward: one pipeline per bucket
   * (a Redis Cluster runs a pipeline on one node; a bucket's keys share a slot).
   */
  async refresh(sockets: readonly SocketPresence[], expiresAt: number, ttlMs: number): Promise<void> {
    const pipelines = [...byBucket(sockets, (p) => p.userId)].map(([bucket, group]) => {
      const pipeline = this.redis.client.pipeline();
      for (const p of group) {
        const entry = entryOf(p.deviceId, p.instanceId, p.socketId);
        pipeline.zadd(userKey(p.userId), 'XX', expiresAt, entry);
        pipeline.pexpire(userKey(p.userId), ttlMs * 2);
        pipeline.zadd(allKey(bucket), 'XX', expiresAt, `${p.userId}\n${entry}`);
      }
      return pipeline.exec();
    });
    await Promise.all(pipelines);
  }

  /** Entries whose instance stopped refreshing them (it crashed), up to `limit`. */
  async expired(now: number, limit: number): Promise<SocketPresence[]> {
    const perBucket = await Promise.all(
      ALL_BUCKETS.map((bucket) => this.redis.client.zrangebyscore(allKey(bucket), '-inf', now, 'LIMIT', 0, limit)),
    );
    return perBucket
      .flat()
      .slice(0, limit)
      .map((member) => {
        const [userId, rest] = member.split('\n');
        const [deviceId, instanceId, socketId] = rest.split('|');
        return { userId, deviceId, instanceId, socketId };
      });
  }

  /** Online device ids of each user that has any. */
  async onlineDevices(userIds: readonly string[]): Promise<Map<string, string[]>> {
    const now = Date.now();
    // One pipeline per bucket, as in refresh.
    const groups = [...byBucket(userIds, (userId) => userId).values()];
    const replies = await Promise.all(
      groups.map(async (group) => {
        const pipeline = this.redis.client.pipeline();
        for (const userId of group) pipeline.zrangebyscore(userKey(userId), `(${now}`, '+inf');
        return (await pipeline.exec()) ?? [];
      }),
    );
    const online = new Map<string, string[]>();
    groups.forEach((group, groupIndex) =>
      replies[groupIndex].forEach(([error, entries], index) => {
        if (error) throw error;
        const devices = [...new Set((entries as string[]).map((entry) => entry.split('|')[0]))];
        if (devices.length > 0) online.set(group[index], devices);
      }),
    );
    return online;
  }

  /** A short lock so one instance at a time sweeps expired entries. */
  async acquireSweepLock(instanceId: string, ttlMs: number): Promise<boolean> {
    return (await this.redis.client.set('pr:sweep-lock', instanceId, 'PX', ttlMs, 'NX')) === 'OK';
  }
}
