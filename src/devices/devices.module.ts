import { Module } from '@nestjs/common';

import { OfflineQueueModule } from '../offline-queue/offline-queue.module.js';
import { DeviceDirectory } from './device-directory.service.js';
import { DeviceRegistrationService } from './device-registration.service.js';
import { DeviceSightings } from './device-sightings.service.js';
import { DeviceKeysController, DevicesController } from './devices.controller.js';
import { DevicesRepository } from './devices.repository.js';

/**
 * Devices: registration (REST), push addresses, public keys, sightings at connect.
 * Registering starts a device's delivery cursors and unregistering drops its queue,
 * both owned by the offline queue below.
 */
@Module({
  imports: [OfflineQueueModule],
  controllers: [DevicesController, DeviceKeysController],
  providers: [DevicesRepository, DeviceDirectory, DeviceSightings, DeviceRegistrationService],
  exports: [DevicesRepository, DeviceDirectory, DeviceSightings],
})
export class DevicesModule {}
