import { Injectable, Logger } from '@nestjs/common';

import { batchLoader } from '../common/batch-loader.js';
import { AppConfig } from '../config/app-config.js';
import type { DeviceRef } from '../devices/devices.types.js';
import { CursorWriter } from './cursor-writer.js';
import { DeliveryCursorsRepository } from './delivery-cursors.repository.js';
import { OfflineQueueMetrics } from './offline-queue.metrics.js';
import { OfflineQueueRepository, type AckResult, type QueuedRef } from './offline-queue.repository.js';
import type { PendingEntry } from './offline-queue.types.js';
import { QueueSourceRepository, type QueueAudit } from './queue-source.repository.js';

/** Messages of one tick for the same recipients, written to Redis together. */
interface PendingGroup {
  recipients: readonly DeviceRef[];
  entries: PendingEntry[];
  waiters: { resolve: () => void; reject: (error: unknown) => void }[];
}

/** Acks of one device in one tick, written to Redis together. */
interface PendingAcks {
  device: DeviceRef;
  ids: number;
  calls: { messageIds: readonly string[]; resolve: (result: AckResult) => void; reject: (error: unknown) => void }[];
}

/** Ids in one coalesced ack call at most, so one script never holds Redis for long. */
const ACK_IDS_PER_CALL = 1_000;

/**
 * Each device's queue of messages it has not acked. Redis holds the queues; PostgreSQL
 * (messages past each device's delivery cursor) is the source of truth they are rebuilt
 * from when Redis loses them. A loss of all of Redis is seen by the epoch key; a loss of
 * part of it (a failover to a replica that missed the last writes, keys evicted or
 * deleted) by the audit each known device's queue gets when it connects.
 *
 * Bound: a queue holds at most OFFLINE_QUEUE_MAX entries (default 50,000). Past that the
 * oldest are dropped and the device's cursor moves past them; the device then sees a seq
 * gap in that conversation and reads the missing range with `history`.
 */
@Injectable()
export class OfflineQueueService {
  private readonly logger = new Logger(OfflineQueueService.name);
  /** Messages queued in this tick, by recipient group; written at the end of the tick. */
  private readonly pending = new Map<string, PendingGroup>();
  /** Acks of this tick, by device; written at the end of the tick. */
  private readonly pendingAcks = new Map<string, PendingAcks>();
  /** Audits of the devices connecting in one event-loop round, in one statement. */
  private readonly audits = batchLoader<QueueAudit, string[]>((audits) =>
    this.source.conversationsMissingEntries(audits),
  );

  /** New devices connecting in one event-loop round get their cursors in one statement. */
  private readonly newDevices = batchLoader<DeviceRef, void>(async (devices) => {
    await this.cursorRows.startForDevices(devices);
    return devices.map(() => undefined);
  });

  constructor(
    private readonly queues: OfflineQueueRepository,
    private readonly source: QueueSourceRepository,
    private readonly cursorRows: DeliveryCursorsRepository,
    private readonly cursors: CursorWriter,
    private readonly metrics: OfflineQueueMetrics,
    private readonly config: AppConfig,
  ) {}

  /**
   * Queues one committed message for its recipients. The messages of one group commit
   * that share a recipient group (`groupKey`: same conversation, same sending device)
   * are queued together, in one script call written at the end of the current tick:
   * still before this instance reads any further input, so before any ack of them can
   * arrive. Resolves once Redis has them.
   */
  enqueueMessage(groupKey: string, recipients: readonly DeviceRef[], entry: PendingEntry): Promise<void> {
    if (recipients.length === 0) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      let key = groupKey;
      let group = this.pending.get(key);
      // Membership changed within the tick: a group of its own for the new recipients.
      while (group && !sameDevices(group.recipients, recipients)) {
        key += '+';
        group = this.pending.get(key);
      }
      if (group) {
        group.entries.push(entry);
        group.waiters.push({ resolve, reject });
        return;
      }
      if (this.pending.size === 0) process.nextTick(() => this.flushPending());
      this.pending.set(key, { recipients, entries: [entry], waiters: [{ resolve, reject }] });
    });
  }

  private flushPending(): void {
    const groups = [...this.pending.values()];
    this.pending.clear();
    for (const group of groups) {
      this.enqueue(group.recipients, group.entries).then(
        () => group.waiters.forEach((waiter) => waiter.resolve()),
        (error: unknown) => group.waiters.forEach((waiter) => waiter.reject(error)),
      );
    }
  }

  async enqueue(recipients: readonly DeviceRef[], entries: readonly PendingEntry[]): Promise<void> {
    const dropped = await this.queues.enqueueForDevices(recipients, entries, this.config.offlineQueueMax);
    for (const [device, lost] of dropped) {
      this.logger.warn(
        `offline queue of a device reached ${this.config.offlineQueueMax}; dropped ${lost.length} oldest`,
      );
      await this.cursorRows.advance(highestPerConversation(lost).map((cursor) => ({ ...device, ...cursor })));
    }
  }

  /**
   * A new (or newly registered) device's cursors: in each of its user's conversations
   * it lacks one, at the current seq; its queue holds what is sent from then on.
   */
  startCursors(device: DeviceRef): Promise<void> {
    return this.newDevices.load(device);
  }

  /** Cursors for every device of users just added to a conversation, at its current seq. */
  startCursorsForMembers(conversationId: string, userIds: readonly string[]): Promise<void> {
    return this.cursorRows.startForMembers(conversationId, userIds);
  }

  /**
   * At connect: makes the device's queue trustworthy and returns its length. One Redis
   * round trip and one PostgreSQL statement (shared with the devices connecting at the
   * same time) when it is whole. A device seen for the first time has nothing to rebuild
   * (its cursors start at the current seqs) and is marked in sync at once.
   */
  async syncedLength(device: DeviceRef, isNew: boolean): Promise<number> {
    const state = await this.queues.syncState(device, isNew);
    if (!state.synced) {
      await this.rebuild(device, state.epoch);
      return this.queues.length(device);
    }
    if (isNew) return state.length;
    // Structures that disagree are repaired whole; otherwise only the conversations
    // PostgreSQL holds more for than the queue accounts for.
    const missing = state.whole ? await this.audits.load({ device, conversations: state.conversations }) : null;
    if (missing && missing.length === 0) return state.length;
    const added = await this.repair(device, missing ?? undefined);
    this.metrics.repairs.inc({ cause: 'partial' });
    this.logger.warn(
      `offline queue of a device lacked entries PostgreSQL holds (${missing ? `${missing.length} conversations` : 'structures disagreed'}); ${added} re-queued`,
    );
    return this.queues.length(device);
  }

  /** Rebuilds this device's queue from PostgreSQL if Redis lost it since the last sync. */
  async ensureSynced(device: DeviceRef): Promise<void> {
    const state = await this.queues.syncState(device, false);
    if (!state.synced) await this.rebuild(device, state.epoch);
  }

  private async rebuild(device: DeviceRef, epoch: string): Promise<void> {
    const added = await this.repair(device);
    this.metrics.repairs.inc({ cause: 'epoch' });
    if (added > 0) this.logger.log(`rebuilt an offline queue from PostgreSQL: ${added} entries`);
    await this.queues.setDeviceEpoch(device, epoch);
  }

  /**
   * Queues again what PostgreSQL holds past the device's cursor (in every conversation,
   * or in `conversationIds`), except what Redis knows the device acked. Returns how many
   * entries PostgreSQL had.
   */
  private async repair(device: DeviceRef, conversationIds?: readonly string[]): Promise<number> {
    const pending = await this.source.pendingFor(device, this.config.offlineQueueMax, conversationIds);
    if (pending.length > 0) {
      await this.queues.enqueueForDevices([device], pending, this.config.offlineQueueMax, 'repair');
    }
    return pending.length;
  }

  /**
   * Makes every queue rebuild from PostgreSQL at its next sync (after an enqueue failed
   * mid-way). Retried in the background until Redis takes it.
   */
  invalidateAll(attempt = 0): void {
    this.queues.resetEpoch().catch(() => {
      if (attempt < 60) setTimeout(() => this.invalidateAll(attempt + 1), 1_000).unref();
    });
  }

  /**
   * Whether the message still waits in the device's queue (not acked yet); null when the
   * queue is not in sync with PostgreSQL (Redis lost it and it was not rebuilt yet).
   */
  async isQueued(device: DeviceRef, messageId: string): Promise<boolean | null> {
    if (!(await this.queues.syncState(device, false)).synced) return null;
    return this.queues.contains(device, messageId);
  }

  async hasBacklog(device: DeviceRef, conversationId: string): Promise<boolean> {
    return (await this.queues.conversationLength(device, conversationId)) > 0;
  }

  length(device: DeviceRef): Promise<number> {
    return this.queues.length(device);
  }

  /**
   * The device's oldest `limit` entries and its queue length, rebuilt from PostgreSQL
   * first if Redis lost it: one Redis round trip when the queue is in sync.
   */
  async peekSynced(device: DeviceRef, limit: number): Promise<{ refs: QueuedRef[]; length: number }> {
    const synced = await this.queues.peekIfSynced(device, limit);
    if (synced) return synced;
    await this.ensureSynced(device);
    const [refs, length] = await Promise.all([this.queues.peek(device, limit), this.queues.length(device)]);
    return { refs, length };
  }

  /**
   * Removes acked ids from this device's queue and moves its cursors forward. The acks
   * of one device that arrive in one tick (a client acking a burst of messages one by
   * one: they come in one read) go to Redis in one script call at the end of the tick,
   * which costs Redis one call and one cursor update per conversation instead of one
   * each; every ack still gets its own answer, as if it had been written alone: the ids
   * it removed, and an id two acks of the tick name counts for the first.
   */
  ack(device: DeviceRef, messageIds: readonly string[]): Promise<AckResult> {
    return new Promise<AckResult>((resolve, reject) => {
      let key = `${device.userId}\u0000${device.deviceId}`;
      let batch = this.pendingAcks.get(key);
      while (batch && batch.ids + messageIds.length > ACK_IDS_PER_CALL) {
        key += '+';
        batch = this.pendingAcks.get(key);
      }
      if (!batch) {
        if (this.pendingAcks.size === 0) process.nextTick(() => this.flushAcks());
        batch = { device, ids: 0, calls: [] };
        this.pendingAcks.set(key, batch);
      }
      batch.ids += messageIds.length;
      batch.calls.push({ messageIds, resolve, reject });
    });
  }

  private flushAcks(): void {
    const batches = [...this.pendingAcks.values()];
    this.pendingAcks.clear();
    for (const { device, calls } of batches) {
      const ids = calls.flatMap((call) => call.messageIds);
      this.queues.ack(device, ids).then(
        (result) => {
          this.cursors.advance(device.userId, device.deviceId, result.cursors);
          answerEach(calls, result);
        },
        (error: unknown) => calls.forEach((call) => call.reject(error)),
      );
    }
  }

  discard(device: DeviceRef, messageIds: readonly string[]): Promise<void> {
    return this.queues.discard(device, messageIds);
  }

  dropConversation(device: DeviceRef, conversationId: string): Promise<void> {
    return this.queues.dropConversation(device, conversationId);
  }

  drop(device: DeviceRef): Promise<void> {
    return this.queues.drop(device);
  }
}

/** Each ack of a grouped call gets the entries of its own ids, each entry once, in call order. */
function answerEach(calls: PendingAcks['calls'], result: AckResult): void {
  const unclaimed = new Map(result.acked.map((entry) => [entry.messageId, entry]));
  for (const call of calls) {
    const acked = call.messageIds.flatMap((id) => {
      const entry = unclaimed.get(id);
      unclaimed.delete(id);
      return entry ? [entry] : [];
    });
    const touched = new Set(acked.map((entry) => entry.conversationId));
    call.resolve({ acked, cursors: result.cursors.filter((cursor) => touched.has(cursor.conversationId)) });
  }
}

function sameDevices(a: readonly DeviceRef[], b: readonly DeviceRef[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    if (a[i].userId !== b[i].userId || a[i].deviceId !== b[i].deviceId) return false;
  }
  return true;
}

function highestPerConversation(entries: readonly { conversationId: string; seq: number }[]) {
  const highest = new Map<string, number>();
  for (const e of entries) highest.set(e.conversationId, Math.max(highest.get(e.conversationId) ?? 0, e.seq));
  return [...highest].map(([conversationId, ackedSeq]) => ({ conversationId, ackedSeq }));
}
