import { Injectable } from '@nestjs/common';

import { AppError } from '../common/app-error.js';
import { OfflineQueueService } from '../offline-queue/offline-queue.service.js';
import { RealtimeService } from '../realtime/realtime.service.js';
import { DeviceDirectory } from './device-directory.service.js';
import { DevicesRepository, type DeviceRecord, type DeviceRegistration, type Platform } from './devices.repository.js';

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
   * Registers a device or updates its registration. Push fields are checked against the
   * device's platform: the body's, else the stored one. Once the row is committed the
   * device gets its delivery cursors: its queue holds what is sent from then on. A new
   * device or a key change invalidates the user's entry in the device directory (e2e
   * sends are checked against which devices have a key).
   */
  async register(
    userId: string,
    deviceId: string,
    registration: DeviceRegistration,
  ): Promise<{ device: DeviceRecord; created: boolean }> {
    const stored = await this.devices.find(userId, deviceId);
    rejectMisplacedPushFields(registration.platform ?? stored?.platform ?? null, registration);
    const { device, created, keyChanged } = await this.devices.register(userId, deviceId, registration);
    if (created || keyChanged) this.directory.changed(userId);
    await this.queue.startCursors({ userId, deviceId });
    return { device, created };
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

/** Each platform's push fields; a field of one platform is refused on the others. */
const PUSH_FIELDS = {
  ios: ['apnsToken', 'apnsTopic', 'apnsEnvironment'],
  android: ['fcmToken'],
  web: ['webPush'],
} as const satisfies Record<Platform, readonly (keyof DeviceRegistration)[]>;

/**
 * A push field (one given a value; null only clears) needs a platform, and the right one:
 * apns* for ios, fcmToken for android, webPush for web. Throws bad_request listing each
 * problem, as request validation does.
 */
function rejectMisplacedPushFields(platform: Platform | null, registration: DeviceRegistration): void {
  const problems: { path: string; message: string }[] = [];
  for (const [owner, fields] of Object.entries(PUSH_FIELDS) as [Platform, readonly (keyof DeviceRegistration)[]][]) {
    if (owner === platform) continue;
    for (const field of fields) {
      if (registration[field] === undefined || registration[field] === null) continue;
      problems.push(
        platform === null
          ? { path: 'platform', message: 'needed once, before any push field' }
          : { path: field, message: `only for platform ${owner}` },
      );
    }
  }
  if (problems.length === 0) return;
  // Without a platform, one problem says it, however many push fields came.
  const unique = platform === null ? problems.slice(0, 1) : problems;
  throw AppError.badRequest(unique.map((p) => `${p.path}: ${p.message}`).join('; '), { problems: unique });
}
