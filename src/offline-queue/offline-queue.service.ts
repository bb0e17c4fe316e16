import { Injectable, Logger } from '@nestjs/common';

import { AppConfig } from '../config/app-config.js';
import { DevicesRepository, type DeviceRef, type PendingEntry } from '../devices/devices.repository.js';
import { CursorWriter } from './cursor-writer.js';
import { OfflineQueueRepository, type AckResult, type QueuedRef } from './offline-queue.repository.js';

/**
 * Each device's queue of messages it has not acked. Redis holds the queues; PostgreSQL
 * (messages past each device's delivery cursor) is the source of truth they are rebuilt
 * from when Redis loses them, detected by the epoch key.
 *
 * Bound: a queue holds at most OFFLINE_QUEUE_MAX entries (default 50,000). Past that the
 * oldest are dropped and the device's cursor moves past them; the device then sees a seq
 * gap in that conversation and reads the missing range with `history`.
 */
@Injectable()
export class OfflineQueueService {
  private readonly logger = new Logger(OfflineQueueService.name);

  constructor(
    private readonly queues: OfflineQueueRepository,
    private readonly devices: DevicesRepository,
    private readonly cursors: CursorWriter,
    private readonly config: AppConfig,
  ) {}

  async enqueue(recipients: readonly DeviceRef[], entries: readonly PendingEntry[]): Promise<void> {
    const dropped = await this.queues.enqueueForDevices(recipients, entries, this.config.offlineQueueMax);
    for (const [device, lost] of dropped) {
      this.logger.warn(
        `offline queue of a device reached ${this.config.offlineQueueMax}; dropped ${lost.length} oldest`,
      );
      await this.devices.advanceCursors(device.userId, device.deviceId, highestPerConversation(lost));
    }
  }

  /**
   * A device seen for the first time has nothing to rebuild (its cursors start at the
   * current seqs): mark its queue as in sync without reading PostgreSQL.
   */
  async markNewDeviceSynced(device: DeviceRef): Promise<void> {
    await this.queues.setDeviceEpoch(device, await this.queues.currentEpoch());
  }

  /** Rebuilds this device's queue from PostgreSQL if Redis lost it since the last sync. */
  async ensureSynced(device: DeviceRef): Promise<void> {
    const epoch = await this.queues.currentEpoch();
    if ((await this.queues.deviceEpoch(device)) === epoch) return;
    const pending = await this.devices.pendingFor(device.userId, device.deviceId, this.config.offlineQueueMax);
    if (pending.length > 0) {
      await this.queues.enqueueForDevices([device], pending, this.config.offlineQueueMax);
      this.logger.log(`rebuilt an offline queue from PostgreSQL: ${pending.length} entries`);
    }
    await this.queues.setDeviceEpoch(device, epoch);
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
    const [epoch, deviceEpoch] = await Promise.all([this.queues.currentEpoch(), this.queues.deviceEpoch(device)]);
    if (epoch !== deviceEpoch) return null;
    return this.queues.contains(device, messageId);
  }

  async hasBacklog(device: DeviceRef, conversationId: string): Promise<boolean> {
    return (await this.queues.conversationLength(device, conversationId)) > 0;
  }

  length(device: DeviceRef): Promise<number> {
    return this.queues.length(device);
  }

  peek(device: DeviceRef, limit: number): Promise<QueuedRef[]> {
    return this.queues.peek(device, limit);
  }

  /** Removes acked ids from this device's queue and moves its cursors forward. */
  async ack(device: DeviceRef, messageIds: readonly string[]): Promise<AckResult> {
    const result = await this.queues.ack(device, messageIds);
    this.cursors.advance(device.userId, device.deviceId, result.cursors);
    return result;
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

function highestPerConversation(entries: readonly { conversationId: string; seq: number }[]) {
  const highest = new Map<string, number>();
  for (const e of entries) highest.set(e.conversationId, Math.max(highest.get(e.conversationId) ?? 0, e.seq));
  return [...highest].map(([conversationId, ackedSeq]) => ({ conversationId, ackedSeq }));
}
