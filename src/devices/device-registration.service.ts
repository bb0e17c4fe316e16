import { Injectable } from '@nestjs/common';

import { AppError } from '../common/app-error.js';
import { OfflineQueueService } from '../offline-queue/offline-queue.service.js';
import { RealtimeService } from '../realtime/realtime.service.js';
import { DeviceDirectory } from './device-directory.service.js';
import { DevicesRepository, type DeviceRecord, type DeviceRegistration } from './devices.repository.js';

/** Registering and unregistering devices (REST), and reading their public keys. */
@Injectable()
export class DeviceRegistrationService {
  constructor(
    private readonly directory: DeviceDirectory,
    private readonly devices: DevicesRepository,
    private readonly queue: OfflineQueueService,
    private readonly realtime: RealtimeService,
  ) {}

  /**
   * Registers a device or updates its registration. Once the row is committed the
   * device gets its delivery cursors: its queue holds what is sent from then on.
   */
  async register(
    userId: string,
    deviceId: string,
    registration: DeviceRegistration,
  ): Promise<{ device: DeviceRecord; created: boolean }> {
    const result = await this.devices.register(userId, deviceId, registration);
    if (result.created) this.directory.changed(userId);
    await this.devices.ensureCursors(userId, deviceId);
    return result;
  }

  /**
   * Unregisters a device: its row and cursors go, then its offline queue, and its live
   * socket (on any node) is disconnected.
   */
  async unregister(userId: string, deviceId: string): Promise<void> {
    if (!(await this.devices.remove(userId, deviceId))) throw AppError.notFound('no such device');
    this.directory.changed(userId);
    this.realtime.disconnectDevice(userId, deviceId);
    await this.queue.drop({ userId, deviceId });
  }

  publicKeys(userId: string): Promise<{ deviceId: string; publicKey: string }[]> {
    return this.devices.publicKeysOf(userId);
  }
}
