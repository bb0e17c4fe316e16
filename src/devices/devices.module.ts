import { Module } from '@nestjs/common';

import { DeviceDirectory } from './device-directory.service.js';
import { DevicesRepository } from './devices.repository.js';

@Module({ providers: [DevicesRepository, DeviceDirectory], exports: [DevicesRepository, DeviceDirectory] })
export class DevicesModule {}
