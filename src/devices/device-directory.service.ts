import { Injectable } from '@nestjs/common';

import { CacheBus } from '../redis/cache-bus.service.js';
import { TtlCache } from '../common/ttl-cache.js';
import { DevicesRepository } from './devices.repository.js';
import type { DeviceRef } from './devices.types.js';

const CACHE_TTL_MS = 30_000;

/** A device and whether it has published a public key (what e2e senders seal to). */
export type KnownDevice = DeviceRef & { hasKey: boolean };

/**
 * Which devices each user has, for fan-out and for checking an e2e send's recipients.
 * Cached per user in memory; a device that appears, goes or changes its key invalidates
 * its user's entry on every instance at once (CacheBus).
 */
@Injectable()
export class DeviceDirectory {
  private readonly byUser = new TtlCache<KnownDevice[]>(CACHE_TTL_MS);

  constructor(
    private readonly devices: DevicesRepository,
    private readonly bus: CacheBus,
  ) {
    bus.on('devices', (userId) => this.byUser.delete(userId));
  }

  async devicesOf(userIds: readonly string[]): Promise<KnownDevice[]> {
    const found: KnownDevice[] = [];
    const missing: string[] = [];
    for (const userId of userIds) {
      const cached = this.byUser.get(userId);
      if (cached) found.push(...cached);
      else missing.push(userId);
    }
    if (missing.length > 0) {
      const version = this.byUser.version;
      const loaded = await this.devices.devicesOf(missing);
      const grouped = new Map<string, KnownDevice[]>(missing.map((userId) => [userId, []]));
      for (const device of loaded) grouped.get(device.userId)?.push(device);
      for (const [userId, devices] of grouped) {
        this.byUser.set(userId, devices, version);
        found.push(...devices);
      }
    }
    return found;
  }

  /** A device of this user was added or removed, or changed its public key. */
  changed(userId: string): void {
    this.bus.invalidate('devices', userId);
  }
}
