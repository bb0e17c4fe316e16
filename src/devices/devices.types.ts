/** One device of one user: what queues, cursors, presence and push are keyed by. */
export interface DeviceRef {
  userId: string;
  deviceId: string;
}

const keyOf = (device: DeviceRef) => `${device.userId}\u0000${device.deviceId}`;

/**
 * The distinct devices, in one fixed order: statements that lock device rows take their
 * locks in the same order, so concurrent batches cannot deadlock.
 */
export function distinctSorted(devices: readonly DeviceRef[]): DeviceRef[] {
  const byKey = new Map(devices.map((device) => [keyOf(device), device]));
  return [...byKey.keys()].sort().map((key) => byKey.get(key) as DeviceRef);
}
