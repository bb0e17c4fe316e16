import { z } from 'zod';

import { actingUserSchema, isoDateSchema } from '../http/common.schemas.js';
import { dataOf } from '../http/openapi.js';
import type { DeviceRecord } from './devices.repository.js';

/** Request and reply schemas of the device routes (REST). */

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
export const PUBLIC_KEY_MIN_BYTES = 16;
export const PUBLIC_KEY_MAX_BYTES = 4_096;

export const registerDeviceBody = z
  .object({
    platform: z
      .enum(['ios', 'android', 'web'], { error: "must be 'ios', 'android' or 'web'" })
      .optional()
      .describe(
        'needed once, before any push field; left out keeps the stored one; ' +
          "a change clears the push fields of the platform left (apns* when leaving 'ios')",
      ),
    apnsToken: z
      .string({ error: 'must be a string' })
      .regex(/^(?:[0-9a-fA-F]{2}){16,256}$/, 'must be the hex APNs device token (32 to 512 hex digits)')
      .nullable()
      .optional()
      .describe('ios: the APNs device token in hex; left out keeps it; null clears it'),
    apnsTopic: z
      .string({ error: 'must be a string' })
      .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$/, 'must be a bundle id like com.example.app')
      .nullable()
      .optional()
      .describe('ios: the app bundle id to push to (default: APNS_TOPIC); left out keeps it; null clears it'),
    apnsEnvironment: z
      .enum(['sandbox', 'production'], { error: "must be 'sandbox' or 'production'" })
      .nullable()
      .optional()
      .describe('ios: the APNs gateway of this build; left out keeps it; null clears it'),
    publicKey: z
      .string({ error: 'must be a string' })
      .max(Math.ceil(PUBLIC_KEY_MAX_BYTES / 3) * 4, {
        message: `must be at most ${PUBLIC_KEY_MAX_BYTES} bytes`,
        abort: true,
      })
      .regex(BASE64, { message: 'must be base64', abort: true })
      .refine((key) => Buffer.byteLength(key, 'base64') >= PUBLIC_KEY_MIN_BYTES, {
        message: `must be at least ${PUBLIC_KEY_MIN_BYTES} bytes`,
      })
      .nullable()
      .optional()
      .describe(
        `base64 of the device's public key for e2e conversations (${PUBLIC_KEY_MIN_BYTES} to ${PUBLIC_KEY_MAX_BYTES} bytes); left out keeps it; null clears it`,
      ),
    userId: actingUserSchema,
  })
  // Push fields are checked against the device's platform, which may be the stored one:
  // DeviceRegistrationService does it.
  .describe('Fields left out keep their registered value; null clears one.');

export const deviceSchema = z
  .object({
    userId: z.string(),
    deviceId: z.string(),
    platform: z.enum(['ios', 'android', 'web']).nullable().describe('null for a device only known from a socket'),
    hasApnsToken: z.boolean().describe('the token itself is never echoed'),
    apnsTopic: z.string().nullable(),
    apnsEnvironment: z.enum(['sandbox', 'production']).nullable(),
    publicKey: z.string().nullable(),
    createdAt: isoDateSchema,
    lastSeenAt: isoDateSchema,
  })
  .meta({ id: 'Device' });

export const deviceReply = dataOf(deviceSchema);
export const deviceRemovedReply = dataOf(z.object({ userId: z.string(), deviceId: z.string() }));
export const deviceKeysReply = dataOf(
  z.array(z.object({ deviceId: z.string(), publicKey: z.string().describe('base64') })).describe('by deviceId'),
);

export function toDeviceJson(device: DeviceRecord): z.infer<typeof deviceSchema> {
  return {
    userId: device.userId,
    deviceId: device.deviceId,
    platform: device.platform,
    hasApnsToken: device.apnsToken !== null,
    apnsTopic: device.apnsTopic,
    apnsEnvironment: device.apnsEnvironment,
    publicKey: device.publicKey,
    createdAt: device.createdAt.toISOString(),
    lastSeenAt: device.lastSeenAt.toISOString(),
  };
}
