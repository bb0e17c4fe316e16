import { Module } from '@nestjs/common';

import { DeviceDirectory } from './device-directory.service.js';
import { DeviceSightings } from './device-sightings.service.js';
import { DevicesRepository } from './devices.repository.js';

@Module({
  providers: [DevicesRepository, DeviceDirectory, DeviceSightings],
  exports: [DevicesRepository, DeviceDirectory, DeviceSightings],
})
export class DevicesModule {}
