import { Module } from '@nestjs/common';

import { DevicesRepository } from './devices.repository.js';

@Module({ providers: [DevicesRepository], exports: [DevicesRepository] })
export class DevicesModule {}
