import { randomUUID } from 'node:crypto';

import { Injectable } from '@nestjs/common';
import { Cluster, type Result } from 'ioredis';

import { luaScript } from '../redis/lua-script.js';
import { slotOf } from '../redis/redis-client.js';
import { RedisService } from '../redis/redis.service.js';
import type { DeviceRef } from '../devices/devices.types.js';
import type { ConversationState, PendingEntry } from './offline-queue.types.js';
import { groupBy } from '../common/group-by.js';

/**
 * Per-device offline queues in Redis. For device (u, d), all keys share one hash tag:
 *   mq:{u d}:z       ZSET  messageId -> queue order (created_at ms)   oldest first
 *   mq:{u d}:m       HASH  messageId -> "conversationId|seq|senderId"
 *   mq:{u d}:c:<c>   ZSET  messageId -> seq, per conversation (lowest unacked seq)
 *   mq:{u d}:hi      HASH  conversationId -> highest seq ever queued
 *   mq:{u d}:cur     HASH  conversationId -> cursor: every seq up to it acked (or dropped)
 *   mq:{u d}:x:<c>   ZSET  messageId -> seq, acked past the cursor (acks out of order)
 *   mq:{u d}:epoch   the global epoch this queue was last synced from PostgreSQL in
 * and one global key, mq:epoch, made anew whenever Redis comes back empty.
 *
 * One device's keys share a slot (the hash tag), so each script runs on one slot, as a
 * Redis Cluster requires; mq:epoch lives in a slot of its own and is read beside the
 * device's script (a shard that lost data loses the device epochs with it, which then no
 * longer match). The layout is the same on a single Redis.
 *
 * `cur` and `x` record what the device acked, so that the queue can be checked against
 * PostgreSQL (whose copy of the cursor lags by a flush): between `cur` and `hi`, every
 * message PostgreSQL holds for the device is either queued or in `x`.
 */

/** Read when this module loads: a missing file fails the start, not the first send. */
const SCRIPTS = {
  enqueueMany: luaScript(import.meta.url, 'enqueue-many.lua'),
  ack: luaScript(import.meta.url, 'ack.lua'),
  syncState: luaScript(import.meta.url, 'sync-state.lua'),
  peekSynced: luaScript(import.meta.url, 'peek-synced.lua'),
};

interface AckedEntry {
  messageId: string;
  conversationId: string;
  seq: number;
  senderId: string;
}

export interface AckResult {
  acked: AckedEntry[];
  /** Per conversation touched: every seq up to this one is acked or was never queued. */
  cursors: { conversationId: string; ackedSeq: number }[];
}

export type SyncState =
  | { synced: true; length: number; whole: boolean; conversations: ConversationState[] }
  | { synced: false; epoch: string };

export interface QueuedRef {
  messageId: string;
  conversationId: string;
  seq: number;
}

const EPOCH_KEY = 'mq:epoch';

declare module 'ioredis' {
  interface RedisCommander<Context> {
    /** key count, then keys device key tags (one slot in a cluster); args mode, cap, then (id, score, conv, seq, sender) per entry. */
    mqEnqueueMany(keyCount: number, ...args: (string | number)[]): Result<(string | number)[], Context>;
    /** keys device epoch, z, m, hi, cur; args the epoch to mark a new device with ('' otherwise), prefixes. */
    mqSyncState(
      deviceEpoch: string,
      z: string,
      m: string,
      hi: string,
      cur: string,
      newEpoch: string,
      convPrefix: string,
      aheadPrefix: string,
    ): Result<(number | string)[], Context>;
    /** keys device epoch, z, m; args limit. */
    mqPeekSynced(deviceEpoch: string, z: string, m: string, limit: number): Result<(number | string)[], Context>;
    /** keys z, m, hi, cur; args convPrefix, aheadPrefix, then message ids. */
    mqAck(z: string, m: string, hi: string, cur: string, ...args: string[]): Result<[string[], string[]], Context>;
  }
}

const tagOf = (device: DeviceRef) => `mq:{${device.userId}\u0000${device.deviceId}}`;

function keysOf(device: DeviceRef) {
  const tag = tagOf(device);
  return {
    z: `${tag}:z`,
    m: `${tag}:m`,
    hi: `${tag}:hi`,
    cur: `${tag}:cur`,
    epoch: `${tag}:epoch`,
    convPrefix: `${tag}:c:`,
    aheadPrefix: `${tag}:x:`,
  };
}

/**
 * Entries per enqueue-many.lua call: a rebuild can bring thousands, and the script hands a
 * device's new entries to one HSET (Lua's unpack takes at most ~8,000 values).
 */
const ENTRIES_PER_CALL = 500;
/** Devices per enqueue-many.lua call, so one script never holds Redis for long. */
const DEVICES_PER_CALL = 128;

@Injectable()
export class OfflineQueueRepository {
  constructor(private readonly redis: RedisService) {
    this.redis.client.defineCommand('mqAck', { numberOfKeys: 4, lua: SCRIPTS.ack });
    // No numberOfKeys: the first argument says how many device tags follow.
    this.redis.client.defineCommand('mqEnqueueMany', { lua: SCRIPTS.enqueueMany });
    this.redis.client.defineCommand('mqSyncState', { numberOfKeys: 5, lua: SCRIPTS.syncState });
    this.redis.client.defineCommand('mqPeekSynced', { numberOfKeys: 3, lua: SCRIPTS.peekSynced });
  }

  /**
   * Whether the device's queue is in sync with PostgreSQL's epoch (then its length, and
   * what it holds per conversation to check against PostgreSQL), or the epoch it must be
   * rebuilt for. A new device is marked in sync at once.
   */
  async syncState(device: DeviceRef, isNew: boolean): Promise<SyncState> {
    const k = keysOf(device);
    const state = (newEpoch: string) =>
      this.redis.client.mqSyncState(k.epoch, k.z, k.m, k.hi, k.cur, newEpoch, k.convPrefix, k.aheadPrefix);
    let epoch: string;
    let reply: (number | string)[];
    if (isNew) {
      epoch = await this.globalEpoch();
      reply = await state(epoch);
    } else {
      // Both at once: one round trip's wait.
      [epoch, reply] = await Promise.all([this.globalEpoch(), state('')]);
    }
    if (String(reply[0]) !== epoch) return { synced: false, epoch };
    const conversations: ConversationState[] = [];
    for (let i = 3; i < reply.length; i += 5) {
      conversations.push({
        conversationId: String(reply[i]),
        highestSeq: Number(reply[i + 1]),
        cursor: Number(reply[i + 2]),
        queued: Number(reply[i + 3]),
        ackedAhead: Number(reply[i + 4]),
      });
    }
    return { synced: true, length: Number(reply[1]), whole: Number(reply[2]) === 1, conversations };
  }

  /**
   * Adds entries to many devices' queues in one round trip. Returns, per device, the
   * entries dropped past the cap (oldest first), whose cursors the caller advances.
   */
  async enqueueForDevices(
    devices: readonly DeviceRef[],
    entries: readonly PendingEntry[],
    cap: number,
    mode: 'new' | 'repair' = 'new',
  ): Promise<Map<DeviceRef, { conversationId: string; seq: number }[]>> {
    const dropped = new Map<DeviceRef, { conversationId: string; seq: number }[]>();
    if (devices.length === 0 || entries.length === 0) return dropped;
    const chunks: (string | number)[][] = [];
    for (let start = 0; start < entries.length; start += ENTRIES_PER_CALL) {
      const args: (string | number)[] = [];
      for (const e of entries.slice(start, start + ENTRIES_PER_CALL)) {
        args.push(e.messageId, e.score, e.conversationId, e.seq, e.senderId);
      }
      chunks.push(args);
    }
    const calls: Promise<(string | number)[]>[] = [];
    const groups: DeviceRef[][] = [];
    for (const sameSlot of this.bySlot(devices)) {
      for (let start = 0; start < sameSlot.length; start += DEVICES_PER_CALL) {
        const group = sameSlot.slice(start, start + DEVICES_PER_CALL);
        const tags = group.map(tagOf);
        for (const args of chunks) {
          groups.push(group);
          calls.push(this.redis.client.mqEnqueueMany(tags.length, ...tags, mode, cap, ...args));
        }
      }
    }
    const replies = await Promise.all(calls);
    replies.forEach((flat, groupIndex) => {
      for (let i = 0; i < flat.length; i += 3) {
        const device = groups[groupIndex][Number(flat[i]) - 1];
        const list = dropped.get(device) ?? [];
        list.push({ conversationId: String(flat[i + 1]), seq: Number(flat[i + 2]) });
        dropped.set(device, list);
      }
    });
    return dropped;
  }

  /** Removes acked ids from this device's queue only; unknown or repeated ids are skipped. */
  async ack(device: DeviceRef, messageIds: readonly string[]): Promise<AckResult> {
    const k = keysOf(device);
    const [flatAcked, flatCursors] = await this.redis.client.mqAck(
      k.z,
      k.m,
      k.hi,
      k.cur,
      k.convPrefix,
      k.aheadPrefix,
      ...messageIds,
    );
    const acked: AckedEntry[] = [];
    for (let i = 0; i < flatAcked.length; i += 4) {
      acked.push({
        messageId: flatAcked[i],
        conversationId: flatAcked[i + 1],
        seq: Number(flatAcked[i + 2]),
        senderId: flatAcked[i + 3],
      });
    }
    const cursors: AckResult['cursors'] = [];
    for (let i = 0; i < flatCursors.length; i += 2) {
      cursors.push({ conversationId: flatCursors[i], ackedSeq: Number(flatCursors[i + 1]) });
    }
    return { acked, cursors };
  }

  /** The oldest `limit` entries, without removing them. */
  async peek(device: DeviceRef, limit: number): Promise<QueuedRef[]> {
    const k = keysOf(device);
    const ids = await this.redis.client.zrange(k.z, '0', String(limit - 1));
    if (ids.length === 0) return [];
    const entries = await this.redis.client.hmget(k.m, ...ids);
    return refsOf(ids.map((messageId, index) => [messageId, entries[index]]));
  }

  /**
   * `peek` and `length` in one round trip, checked against the epoch as `syncState`
   * does; null when the queue is not in sync (the caller rebuilds it first).
   */
  async peekIfSynced(device: DeviceRef, limit: number): Promise<{ refs: QueuedRef[]; length: number } | null> {
    const k = keysOf(device);
    // Both at once: one round trip's wait. No global epoch (Redis lost it): not in sync,
    // and the sync that follows makes a new one.
    const [epoch, reply] = await Promise.all([
      this.redis.client.get(EPOCH_KEY),
      this.redis.client.mqPeekSynced(k.epoch, k.z, k.m, limit),
    ]);
    if (epoch === null || String(reply[0]) !== epoch) return null;
    const pairs: [string, string | null][] = [];
    for (let i = 2; i < reply.length; i += 2) pairs.push([String(reply[i]), String(reply[i + 1]) || null]);
    return { refs: refsOf(pairs), length: Number(reply[1]) };
  }

  async contains(device: DeviceRef, messageId: string): Promise<boolean> {
    return (await this.redis.client.zscore(keysOf(device).z, messageId)) !== null;
  }

  /** How many entries of one conversation the device's queue holds. */
  conversationLength(device: DeviceRef, conversationId: string): Promise<number> {
    return this.redis.client.zcard(`${keysOf(device).convPrefix}${conversationId}`);
  }

  length(device: DeviceRef): Promise<number> {
    return this.redis.client.zcard(keysOf(device).z);
  }

  /** Removes entries the service found it can never deliver (e.g. conversation gone). */
  async discard(device: DeviceRef, messageIds: readonly string[]): Promise<void> {
    if (messageIds.length > 0) await this.ack(device, messageIds);
  }

  /** Drops a device's whole queue (device unregistered, or member removed). */
  async drop(device: DeviceRef): Promise<void> {
    const k = keysOf(device);
    const convKeys: string[] = [];
    // SCAN walks one server: in a cluster, every master (the device's keys are on one).
    const client = this.redis.client;
    for (const server of client instanceof Cluster ? client.nodes('master') : [client]) {
      let cursor = '0';
      do {
        const [next, keys] = await server.scan(cursor, 'MATCH', `${globEscaped(tagOf(device))}:[cx]:*`, 'COUNT', 200);
        cursor = next;
        convKeys.push(...keys);
      } while (cursor !== '0');
    }
    await this.redis.client.del(k.z, k.m, k.hi, k.cur, ...convKeys);
  }

  /** Removes one conversation's entries from a device's queue (its user left it). */
  async dropConversation(device: DeviceRef, conversationId: string): Promise<void> {
    const k = keysOf(device);
    const ids = await this.redis.client.zrange(`${k.convPrefix}${conversationId}`, '0', '-1');
    if (ids.length > 0) await this.ack(device, ids);
    await this.redis.client
      .multi()
      .hdel(k.hi, conversationId)
      .hdel(k.cur, conversationId)
      .del(`${k.aheadPrefix}${conversationId}`)
      .exec();
  }

  /** A new global epoch: every queue is rebuilt from PostgreSQL at its next sync. */
  async resetEpoch(): Promise<void> {
    await this.redis.client.set(EPOCH_KEY, randomUUID());
  }

  async setDeviceEpoch(device: DeviceRef, epoch: string): Promise<void> {
    await this.redis.client.set(keysOf(device).epoch, epoch);
  }

  /** The global epoch, made now if Redis lost it (SET NX GET: one round trip either way). */
  private async globalEpoch(): Promise<string> {
    const fresh = randomUUID();
    const before = (await this.redis.client.call('SET', EPOCH_KEY, fresh, 'NX', 'GET')) as string | null;
    return before ?? fresh;
  }

  /**
   * Devices by hash slot: in a Redis Cluster one script call takes one slot's keys. A
   * single Redis takes any keys in one call: one group.
   */
  private bySlot(devices: readonly DeviceRef[]): DeviceRef[][] {
    if (this.redis.mode !== 'cluster') return [[...devices]];
    return [...groupBy(devices, (device) => slotOf(tagOf(device))).values()];
  }
}

/**
 * A key prefix as a literal in a SCAN pattern: user ids may hold glob characters, and an
 * unescaped `*` in one user's id would match (and drop) other users' keys.
 */
function globEscaped(text: string): string {
  return text.replace(/[\\*?[\]^]/g, (char) => `\\${char}`);
}

/** Queue entries ("conversationId|seq|senderId") as refs, skipping ids without one. */
function refsOf(pairs: readonly [string, string | null][]): QueuedRef[] {
  const refs: QueuedRef[] = [];
  for (const [messageId, entry] of pairs) {
    if (!entry) continue;
    const [conversationId, seq] = entry.split('|');
    refs.push({ messageId, conversationId, seq: Number(seq) });
  }
  return refs;
}
