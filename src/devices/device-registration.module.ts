import { Module } from '@nestjs/common';

import { OfflineQueueModule } from '../offline-queue/offline-queue.module.js';
import { DeviceRegistrationService } from './device-registration.service.js';
import { DeviceKeysController, DevicesController } from './devices.controller.js';
import { DevicesModule } from './devices.module.js';

/**
 * The REST side of devices. A module of its own because unregistering drops the
 * device's offline queue: OfflineQueueModule builds on DevicesModule, so DevicesModule
 * cannot import it back.
 */
@Module({
  imports: [DevicesModule, OfflineQueueModule],
  controllers: [DevicesController, DeviceKeysController],
  providers: [DeviceRegistrationService],
})
export class DeviceRegistrationModule {}
