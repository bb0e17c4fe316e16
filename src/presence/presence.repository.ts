import { Injectable } from '@nestjs/common';
import type { Result } from 'ioredis';

import { luaScript } from '../redis/lua-script.js';
import { RedisService } from '../redis/redis.service.js';

/**
 * Who is online, in Redis so every instance sees the same. Each live socket is an entry
 * with an expiry that its instance keeps pushing forward; a crashed instance's entries
 * simply expire.
 *   pr:u:<userId>  ZSET  "<deviceId>|<instanceId>|<socketId>" -> expiry (ms)
 *   pr:all         ZSET  "<userId>\n<deviceId>|<instanceId>|<socketId>" -> expiry (ms)
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

const ALL = 'pr:all';
const userKey = (userId: string) => `pr:u:${userId}`;
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
      ALL,
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
      ALL,
      entry,
      Date.now(),
      `${p.userId}\n${entry}`,
    );
    return removed === 1 && after === 0;
  }

  /** Pushes the expiry of this instance's live sockets forward. */
  async refresh(sockets: readonly SocketPresence[], expiresAt: number, ttlMs: number): Promise<void> {
    if (sockets.length === 0) return;
    const pipeline = this.redis.client.pipeline();
    for (const p of sockets) {
      const entry = entryOf(p.deviceId, p.instanceId, p.socketId);
      pipeline.zadd(userKey(p.userId), 'XX', expiresAt, entry);
      pipeline.pexpire(userKey(p.userId), ttlMs * 2);
      pipeline.zadd(ALL, 'XX', expiresAt, `${p.userId}\n${entry}`);
    }
    await pipeline.exec();
  }

  /** Entries whose instance stopped refreshing them (it crashed), up to `limit`. */
  async expired(now: number, limit: number): Promise<SocketPresence[]> {
    const members = await this.redis.client.zrangebyscore(ALL, '-inf', now, 'LIMIT', 0, limit);
    return members.map((member) => {
      const [userId, rest] = member.split('\n');
      const [deviceId, instanceId, socketId] = rest.split('|');
      return { userId, deviceId, instanceId, socketId };
    });
  }

  /** Online device ids of each user that has any. */
  async onlineDevices(userIds: readonly string[]): Promise<Map<string, string[]>> {
    const now = Date.now();
    const pipeline = this.redis.client.pipeline();
    for (const userId of userIds) pipeline.zrangebyscore(userKey(userId), `(${now}`, '+inf');
    const results = (await pipeline.exec()) ?? [];
    const online = new Map<string, string[]>();
    results.forEach(([error, entries], index) => {
      if (error) throw error;
      const devices = [...new Set((entries as string[]).map((entry) => entry.split('|')[0]))];
      if (devices.length > 0) online.set(userIds[index], devices);
    });
    return online;
  }

  /** A short lock so one instance at a time sweeps expired entries. */
  async acquireSweepLock(instanceId: string, ttlMs: number): Promise<boolean> {
    return (await this.redis.client.set('pr:sweep-lock', instanceId, 'PX', ttlMs, 'NX')) === 'OK';
  }
}
