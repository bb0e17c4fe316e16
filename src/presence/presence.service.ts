import { randomUUID } from 'node:crypto';

import { Injectable, Logger, type OnApplicationShutdown, type OnModuleInit } from '@nestjs/common';

import { AppConfig } from '../config/app-config.js';
import { batchLoader } from '../common/batch-loader.js';
import { MembershipRepository } from '../conversations/membership.repository.js';
import { RealtimeService } from '../realtime/realtime.service.js';
import { PresenceRepository, type SocketPresence } from './presence.repository.js';

/**
 * Online state across instances. A user comes online with their first live socket and
 * goes offline with their last; each change is sent as `presence` to the joined members
 * of every conversation of theirs. Entries expire unless their instance refreshes them,
 * and every instance sweeps expired ones, so a crashed instance's users go offline.
 *
 * The bound is PRESENCE_TTL_MS from the crash to the `offline` event, not only to the
 * snapshot: every instance ticks each quarter of it (refresh, then sweep if no other
 * instance swept within the last half tick), and an entry is written to expire a tick
 * short of the TTL, which leaves the sweep that tick to find it. A live instance's
 * refresh may run up to half the TTL late before its sockets count as gone.
 */
@Injectable()
export class PresenceService implements OnModuleInit, OnApplicationShutdown {
  private readonly logger = new Logger(PresenceService.name);
  private readonly instanceId = randomUUID();
  private readonly local = new Map<string, SocketPresence>();
  private timer?: NodeJS.Timeout;
  /** A user's conversations, looked up for many users coming or going at once. */
  private readonly conversationsOf = batchLoader<string, string[]>((userIds) =>
    this.memberships.conversationIdsOf(userIds),
  );

  constructor(
    private readonly presence: PresenceRepository,
    private readonly memberships: MembershipRepository,
    private readonly realtime: RealtimeService,
    private readonly config: AppConfig,
  ) {}

  onModuleInit(): void {
    this.timer = setInterval(() => void this.tick(), this.tickMs());
    this.timer.unref();
  }

  onApplicationShutdown(): void {
    clearInterval(this.timer);
  }

  async connected(userId: string, deviceId: string, socketId: string): Promise<void> {
    const entry = { userId, deviceId, instanceId: this.instanceId, socketId };
    this.local.set(socketId, entry);
    if (await this.presence.add(entry, this.expiresAt(), this.config.presenceTtlMs)) {
      await this.broadcast(userId, 'online');
    }
  }

  async disconnected(socketId: string): Promise<void> {
    const entry = this.local.get(socketId);
    if (!entry) return;
    this.local.delete(socketId);
    if (await this.presence.remove(entry)) await this.broadcast(entry.userId, 'offline');
  }

  /** The online members of a conversation among `userIds`, with their online devices. */
  async snapshot(userIds: readonly string[]): Promise<{ userId: string; deviceIds: string[] }[]> {
    const online = await this.presence.onlineDevices(userIds);
    return [...online].map(([userId, deviceIds]) => ({ userId, deviceIds: deviceIds.sort() }));
  }

  /** Whether this device has a live socket on any instance. */
  async isDeviceOnline(userId: string, deviceId: string): Promise<boolean> {
    return (await this.presence.onlineDevices([userId])).get(userId)?.includes(deviceId) ?? false;
  }

  private async tick(): Promise<void> {
    try {
      await this.presence.refresh([...this.local.values()], this.expiresAt(), this.config.presenceTtlMs);
      // Half a tick: over by the holder's next tick, so someone sweeps every tick.
      if (await this.presence.acquireSweepLock(this.instanceId, Math.floor(this.tickMs() / 2))) await this.sweep();
    } catch (error) {
      this.logger.warn(`presence refresh failed: ${String(error)}`);
    }
  }

  /** How often this instance refreshes its entries and offers to sweep. */
  private tickMs(): number {
    return Math.max(50, Math.floor(this.config.presenceTtlMs / 4));
  }

  /**
   * A tick short of the TTL, so that after a crash the sweep of the next tick still comes
   * within the TTL; the refresh due a tick from now may run two ticks late.
   */
  private expiresAt(): number {
    return Date.now() + this.config.presenceTtlMs - this.tickMs();
  }

  /** Removes entries of sockets whose instance stopped refreshing them. */
  private async sweep(): Promise<void> {
    const expired = await this.presence.expired(Date.now(), 500);
    for (const entry of expired) {
      if (await this.presence.remove(entry)) await this.broadcast(entry.userId, 'offline');
    }
  }

  private async broadcast(userId: string, status: 'online' | 'offline'): Promise<void> {
    const conversationIds = await this.conversationsOf.load(userId);
    for (const conversationId of conversationIds) {
      this.realtime.emitPresence(conversationId, { conversationId, userId, status });
    }
  }
}
