import { Injectable } from '@nestjs/common';

import { batchLoader } from '../common/batch-loader.js';
import { DevicesRepository } from './devices.repository.js';
import type { DeviceRef } from './devices.types.js';

/**
 * The writes a connecting device causes in PostgreSQL, batched across the sockets that
 * connect at the same time: a reconnect storm costs a few statements per event-loop
 * round instead of two per socket.
 */
@Injectable()
export class DeviceSightings {
  private readonly touches = batchLoader<DeviceRef, boolean>((devices) => this.devices.touch(devices));

  constructor(private readonly devices: DevicesRepository) {}

  /** Records that the device connected; true when it was seen for the first time. */
  seen(device: DeviceRef): Promise<boolean> {
    return this.touches.load(device);
  }
}
