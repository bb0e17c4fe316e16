import { randomUUID } from 'node:crypto';

import { Injectable } from '@nestjs/common';
import type { Result } from 'ioredis';

import { RedisService } from '../redis/redis.service.js';
import type { DeviceRef } from '../devices/devices.types.js';
import type { ConversationState, PendingEntry } from './offline-queue.types.js';

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
 * `cur` and `x` record what the device acked, so that the queue can be checked against
 * PostgreSQL (whose copy of the cursor lags by a flush): between `cur` and `hi`, every
 * message PostgreSQL holds for the device is either queued or in `x`.
 */
/**
 * Adds entries to many devices' queues in one call (a group commit's messages fanned out
 * to a group): ARGV mode, cap, device count, each device's key tag, then (id, score,
 * conversation, seq, sender) per entry. An entry already queued is left alone; the new
 * ones go in with one HSET and one ZADD per conversation per device. Past the cap the
 * oldest entries go. Keys are built from the tags, so all must live on one Redis (Redis Cluster
 * is not supported). Returns the dropped entries as (device index, conversation, seq).
 *
 * Mode 'repair' (a rebuild from PostgreSQL) skips what the device already acked (at or
 * below its cursor, or in `x`) and rewrites each entry into all three structures, so a
 * queue that lost any of them is whole again.
 */
const ENQUEUE_MANY = `
local repair = ARGV[1] == 'repair'
local cap = tonumber(ARGV[2])
local devices = tonumber(ARGV[3])
local ids, scores, convs, seqs, values, highest = {}, {}, {}, {}, {}, {}
local n = 0
for i = 4 + devices, #ARGV, 5 do
  n = n + 1
  ids[n], scores[n], convs[n], seqs[n] = ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3]
  values[n] = ARGV[i+2] .. '|' .. ARGV[i+3] .. '|' .. ARGV[i+4]
end
local dropped = {}
for d = 1, devices do
  local tag = ARGV[3 + d]
  local z, m, hi, cur, prefix, xprefix = tag .. ':z', tag .. ':m', tag .. ':hi', tag .. ':cur', tag .. ':c:', tag .. ':x:'
  local fields, perConv = {}, {}
  local top = {}
  for j = 1, n do
    local add
    if repair then
      local seq = tonumber(seqs[j])
      add = seq > tonumber(redis.call('HGET', cur, convs[j]) or '0')
        and not redis.call('ZSCORE', xprefix .. convs[j], ids[j])
      if add then redis.call('ZADD', z, 'NX', scores[j], ids[j]) end
    else
      add = redis.call('ZADD', z, 'NX', scores[j], ids[j]) == 1
    end
    if add then
      table.insert(fields, ids[j])
      table.insert(fields, values[j])
      local members = perConv[convs[j]]
      if not members then
        members = {}
        perConv[convs[j]] = members
      end
      table.insert(members, seqs[j])
      table.insert(members, ids[j])
      local seq = tonumber(seqs[j])
      if not top[convs[j]] or seq > top[convs[j]] then top[convs[j]] = seq end
    end
  end
  if #fields > 0 then
    redis.call('HSET', m, unpack(fields))
    for conv, members in pairs(perConv) do
      redis.call('ZADD', prefix .. conv, unpack(members))
      local high = tonumber(redis.call('HGET', hi, conv) or '0')
      if top[conv] > high then redis.call('HSET', hi, conv, top[conv]) end
    end
  end
  local size = redis.call('ZCARD', z)
  if size > cap then
    local popped = redis.call('ZPOPMIN', z, size - cap)
    local touched = {}
    for j = 1, #popped, 2 do
      local id = popped[j]
      local entry = redis.call('HGET', m, id)
      if entry then
        local conv, seq = string.match(entry, '^([^|]+)|([^|]+)|')
        redis.call('HDEL', m, id)
        redis.call('ZREM', prefix .. conv, id)
        touched[conv] = true
        table.insert(dropped, d)
        table.insert(dropped, conv)
        table.insert(dropped, seq)
      end
    end
    -- Dropped entries count as acked: the cursor moves past them, as in PostgreSQL.
    for conv, _ in pairs(touched) do
      local first = redis.call('ZRANGE', prefix .. conv, 0, 0, 'WITHSCORES')
      local cursor
      if #first > 0 then cursor = tonumber(first[2]) - 1 else cursor = tonumber(redis.call('HGET', hi, conv) or '0') end
      redis.call('HSET', cur, conv, cursor)
      redis.call('ZREMRANGEBYSCORE', xprefix .. conv, '-inf', cursor)
    end
  end
end
return dropped
`;

/**
 * Acks ids of one device's queue. KEYS: z, m, hi, cur; ARGV: conversation key prefix,
 * acked-ahead key prefix, then ids. Returns the acked entries (id, conversation, seq,
 * sender) and, per conversation touched, its new cursor; the cursor and the ids acked
 * past it are recorded in `cur` and `x`.
 */
const ACK = `
local prefix, xprefix = ARGV[1], ARGV[2]
local acked = {}
local touched = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  local entry = redis.call('HGET', KEYS[2], id)
  if entry then
    local conv, seq, sender = string.match(entry, '^([^|]+)|([^|]+)|(.*)$')
    redis.call('ZREM', KEYS[1], id)
    redis.call('HDEL', KEYS[2], id)
    redis.call('ZREM', prefix .. conv, id)
    table.insert(acked, id)
    table.insert(acked, conv)
    table.insert(acked, seq)
    table.insert(acked, sender)
    local ids = touched[conv]
    if not ids then
      ids = {}
      touched[conv] = ids
    end
    table.insert(ids, tonumber(seq))
    table.insert(ids, id)
  end
end
local cursors = {}
for conv, ids in pairs(touched) do
  local first = redis.call('ZRANGE', prefix .. conv, 0, 0, 'WITHSCORES')
  local cursor
  if #first > 0 then cursor = tonumber(first[2]) - 1 else cursor = tonumber(redis.call('HGET', KEYS[3], conv) or '0') end
  redis.call('HSET', KEYS[4], conv, cursor)
  local ahead = {}
  for j = 1, #ids, 2 do
    if ids[j] > cursor then
      table.insert(ahead, ids[j])
      table.insert(ahead, ids[j + 1])
    end
  end
  if #ahead > 0 then redis.call('ZADD', xprefix .. conv, unpack(ahead)) end
  redis.call('ZREMRANGEBYSCORE', xprefix .. conv, '-inf', cursor)
  table.insert(cursors, conv)
  table.insert(cursors, tostring(cursor))
end
return { acked, cursors }
`;

/**
 * A device's queue at connect, in one round trip. KEYS: global epoch, device epoch, z, m,
 * hi, cur; ARGV: a fresh epoch (used if the global one is missing), '1' if the device is
 * new (nothing to rebuild: mark it in sync), conversation and acked-ahead key prefixes.
 * Returns {0, epoch} when the queue must be rebuilt from PostgreSQL first; else
 * {1, length, whole, (conversation, hi, cursor, queued, ackedAhead)...}: `whole` is 0
 * when the structures disagree (one lost entries the others hold), and each conversation
 * the queue knows comes with what PostgreSQL is checked against.
 */
const SYNC_STATE = `
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  redis.call('SET', KEYS[1], ARGV[1])
  epoch = ARGV[1]
end
if ARGV[2] == '1' then
  redis.call('SET', KEYS[2], epoch)
  return {1, redis.call('ZCARD', KEYS[3]), 1}
elseif redis.call('GET', KEYS[2]) ~= epoch then
  return {0, epoch}
end
local length = redis.call('ZCARD', KEYS[3])
local out = {1, length, 1}
local hi = redis.call('HGETALL', KEYS[5])
local total = 0
for i = 1, #hi, 2 do
  local conv = hi[i]
  local queued = redis.call('ZCARD', ARGV[3] .. conv)
  total = total + queued
  table.insert(out, conv)
  table.insert(out, hi[i + 1])
  table.insert(out, redis.call('HGET', KEYS[6], conv) or '0')
  table.insert(out, queued)
  table.insert(out, redis.call('ZCARD', ARGV[4] .. conv))
end
if total ~= length or redis.call('HLEN', KEYS[4]) ~= length then out[3] = 0 end
return out
`;

/**
 * A device's oldest entries and its queue length, in one round trip, if the queue is in
 * sync with PostgreSQL. KEYS: global epoch, device epoch, queue ZSET, entries HASH; ARGV:
 * limit. Returns {0} when out of sync (or the global epoch is gone), else
 * {1, length, id, entry, id, entry, ...} oldest first ('' for an id without its entry).
 */
const PEEK_SYNCED = `
local epoch = redis.call('GET', KEYS[1])
if not epoch or redis.call('GET', KEYS[2]) ~= epoch then return {0} end
local ids = redis.call('ZRANGE', KEYS[3], 0, tonumber(ARGV[1]) - 1)
local out = {1, redis.call('ZCARD', KEYS[3])}
if #ids > 0 then
  local entries = redis.call('HMGET', KEYS[4], unpack(ids))
  for i = 1, #ids do
    table.insert(out, ids[i])
    table.insert(out, entries[i] or '')
  end
end
return out
`;

export interface AckedEntry {
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
    /** no keys; args mode, cap, device count, device key tags, then (id, score, conv, seq, sender) per entry. */
    mqEnqueueMany(...args: (string | number)[]): Result<(string | number)[], Context>;
    /** keys global epoch, device epoch, z, m, hi, cur; args fresh epoch, '1' for a new device, prefixes. */
    mqSyncState(
      epoch: string,
      deviceEpoch: string,
      z: string,
      m: string,
      hi: string,
      cur: string,
      fresh: string,
      isNew: string,
      convPrefix: string,
      aheadPrefix: string,
    ): Result<(number | string)[], Context>;
    /** keys global epoch, device epoch, z, m; args limit. */
    mqPeekSynced(
      epoch: string,
      deviceEpoch: string,
      z: string,
      m: string,
      limit: number,
    ): Result<(number | string)[], Context>;
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
 * Entries per ENQUEUE_MANY call: a rebuild can bring thousands, and the script hands a
 * device's new entries to one HSET (Lua's unpack takes at most ~8,000 values).
 */
const ENTRIES_PER_CALL = 500;
/** Devices per ENQUEUE_MANY call, so one script never holds Redis for long. */
const DEVICES_PER_CALL = 128;

@Injectable()
export class OfflineQueueRepository {
  constructor(private readonly redis: RedisService) {
    this.redis.client.defineCommand('mqAck', { numberOfKeys: 4, lua: ACK });
    this.redis.client.defineCommand('mqEnqueueMany', { numberOfKeys: 0, lua: ENQUEUE_MANY });
    this.redis.client.defineCommand('mqSyncState', { numberOfKeys: 6, lua: SYNC_STATE });
    this.redis.client.defineCommand('mqPeekSynced', { numberOfKeys: 4, lua: PEEK_SYNCED });
  }

  /**
   * Whether the device's queue is in sync with PostgreSQL's epoch (then its length, and
   * what it holds per conversation to check against PostgreSQL), or the epoch it must be
   * rebuilt for. A new device is marked in sync at once.
   */
  async syncState(device: DeviceRef, isNew: boolean): Promise<SyncState> {
    const k = keysOf(device);
    const reply = await this.redis.client.mqSyncState(
      EPOCH_KEY,
      k.epoch,
      k.z,
      k.m,
      k.hi,
      k.cur,
      randomUUID(),
      isNew ? '1' : '0',
      k.convPrefix,
      k.aheadPrefix,
    );
    if (Number(reply[0]) !== 1) return { synced: false, epoch: String(reply[1]) };
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
    for (let start = 0; start < devices.length; start += DEVICES_PER_CALL) {
      const group = devices.slice(start, start + DEVICES_PER_CALL);
      const tags = group.map(tagOf);
      for (const args of chunks) {
        groups.push(group);
        calls.push(this.redis.client.mqEnqueueMany(mode, cap, group.length, ...tags, ...args));
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
    const reply = await this.redis.client.mqPeekSynced(EPOCH_KEY, k.epoch, k.z, k.m, limit);
    if (Number(reply[0]) !== 1) return null;
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
    let cursor = '0';
    do {
      const [next, keys] = await this.redis.client.scan(
        cursor,
        'MATCH',
        `${globEscaped(tagOf(device))}:[cx]:*`,
        'COUNT',
        200,
      );
      cursor = next;
      convKeys.push(...keys);
    } while (cursor !== '0');
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
