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
    this.timer = setInterval(() => void this.tick(), Math.max(50, Math.floor(this.config.presenceTtlMs / 3)));
    this.timer.unref();
  }

  onApplicationShutdown(): void {
    clearInterval(this.timer);
  }

  async connected(userId: string, deviceId: string, socketId: string): Promise<void> {
    const entry = { userId, deviceId, instanceId: this.instanceId, socketId };
    this.local.set(socketId, entry);
    const ttl = this.config.presenceTtlMs;
    if (await this.presence.add(entry, Date.now() + ttl, ttl)) await this.broadcast(userId, 'online');
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
      const ttl = this.config.presenceTtlMs;
      await this.presence.refresh([...this.local.values()], Date.now() + ttl, ttl);
      if (await this.presence.acquireSweepLock(this.instanceId, Math.max(50, Math.floor(ttl / 3)))) await this.sweep();
    } catch (error) {
      this.logger.warn(`presence refresh failed: ${String(error)}`);
    }
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
