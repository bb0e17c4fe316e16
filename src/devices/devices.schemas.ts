import { z } from 'zod';

import { decodeBase64Url, isP256PublicPoint } from '../common/p256.js';
import { actingUserSchema, isoDateSchema } from '../http/common.schemas.js';
import { dataOf } from '../http/openapi.js';
import type { DeviceRecord } from './devices.repository.js';

/** Request and reply schemas of the device routes (REST). */

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const PUBLIC_KEY_MIN_BYTES = 16;
const PUBLIC_KEY_MAX_BYTES = 4_096;
/** Browsers' push service URLs are a few hundred characters. */
const WEB_PUSH_ENDPOINT_MAX_CHARS = 2_048;

/** base64url of exactly `bytes` bytes that pass `check`. */
const base64UrlBytes = (bytes: number, what: string, check: (decoded: Buffer) => boolean = () => true) =>
  z.string({ error: 'must be a string' }).refine((value) => {
    const decoded = decodeBase64Url(value);
    return decoded !== null && decoded.length === bytes && check(decoded);
  }, `must be base64url of ${what}`);

/** What a browser's `PushSubscription.toJSON()` holds; `expirationTime` is taken and ignored. */
const webPushSubscription = z.object(
  {
    endpoint: z
      .string({ error: 'must be a string' })
      .max(WEB_PUSH_ENDPOINT_MAX_CHARS, {
        message: `must be at most ${WEB_PUSH_ENDPOINT_MAX_CHARS} characters`,
        abort: true,
      })
      .refine((value) => {
        try {
          return new URL(value).protocol === 'https:';
        } catch {
          return false;
        }
      }, 'must be an https URL (the push service of the subscription)'),
    expirationTime: z.number().nullable().optional(),
    keys: z.object(
      {
        p256dh: base64UrlBytes(65, 'an uncompressed P-256 public point (65 bytes)', isP256PublicPoint),
        auth: base64UrlBytes(16, 'the 16-byte auth secret'),
      },
      { error: 'must be an object { p256dh, auth }' },
    ),
  },
  { error: 'must be a PushSubscription { endpoint, keys: { p256dh, auth } }' },
);

export const registerDeviceBody = z
  .object({
    platform: z
      .enum(['ios', 'android', 'web'], { error: "must be 'ios', 'android' or 'web'" })
      .optional()
      .describe(
        'needed once, before any push field; left out keeps the stored one; ' +
          "a change clears the push fields of the platform left (apns* when leaving 'ios', fcmToken when leaving " +
          "'android', webPush when leaving 'web')",
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
    fcmToken: z
      .string({ error: 'must be a string' })
      .regex(/^[A-Za-z0-9_:.-]{16,4096}$/, 'must be an FCM registration token')
      .nullable()
      .optional()
      .describe('android: the FCM registration token; never echoed; left out keeps it; null clears it'),
    webPush: webPushSubscription
      .nullable()
      .optional()
      .describe("web: the browser's PushSubscription (its toJSON()); never echoed; left out keeps it; null clears it"),
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
    hasFcmToken: z.boolean().describe('the token itself is never echoed'),
    hasWebPush: z.boolean().describe('whether a Web Push subscription is registered; it is never echoed'),
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
    hasFcmToken: device.fcmToken !== null,
    hasWebPush: device.webPush !== null,
    apnsTopic: device.apnsTopic,
    apnsEnvironment: device.apnsEnvironment,
    publicKey: device.publicKey,
    createdAt: device.createdAt.toISOString(),
    lastSeenAt: device.lastSeenAt.toISOString(),
  };
}
