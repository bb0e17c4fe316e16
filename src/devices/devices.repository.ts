import { Injectable } from '@nestjs/common';

import { PrismaService } from '../prisma/prisma.service.js';
import { distinctSorted, type DeviceRef } from './devices.types.js';

export type Platform = 'ios' | 'android' | 'web';
export type ApnsEnvironment = 'sandbox' | 'production';

/** A browser's PushSubscription (its `toJSON()`), as a web device registers it. */
interface WebPushSubscription {
  /** The push service URL this subscription's messages are posted to (https). */
  endpoint: string;
  /** base64url: the browser's P-256 public point (65 bytes) and its auth secret (16 bytes). */
  keys: { p256dh: string; auth: string };
}

/** A registered device as stored. */
export interface DeviceRecord extends DeviceRef {
  platform: Platform | null;
  apnsToken: string | null;
  apnsTopic: string | null;
  apnsEnvironment: ApnsEnvironment | null;
  fcmToken: string | null;
  webPush: WebPushSubscription | null;
  publicKey: string | null;
  createdAt: Date;
  lastSeenAt: Date;
}

/**
 * A registration: each field is set (a value), cleared (null) or kept (undefined);
 * `platform` is set or kept, never cleared.
 */
export interface DeviceRegistration {
  platform?: Platform;
  apnsToken?: string | null;
  apnsTopic?: string | null;
  apnsEnvironment?: ApnsEnvironment | null;
  fcmToken?: string | null;
  webPush?: WebPushSubscription | null;
  publicKey?: string | null;
}

/** Devices in PostgreSQL: registrations, push addresses, public keys, sightings. */
@Injectable()
export class DevicesRepository {
  constructor(private readonly prisma: PrismaService) {}

  /**
   * Records devices' latest sightings (connections), several in one statement; for each
   * input, in order, true when it created the device. last_seen_at is written at most
   * hourly, so a reconnect costs no write. A device listed twice is created once: only
   * its first listing says true.
   */
  async touch(devices: readonly DeviceRef[]): Promise<boolean[]> {
    const unique = distinctSorted(devices);
    const { rows } = await this.prisma.sql.query<{ user_id: string; device_id: string; created: boolean }>({
      name: 'devices.touch',
      // Sorted, so concurrent batches take their row locks in the same order.
      text: `INSERT INTO devices (user_id, device_id)
             SELECT u, d FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS t(u, d, n) ORDER BY n
             ON CONFLICT (user_id, device_id) DO UPDATE SET last_seen_at = now()
             WHERE devices.last_seen_at < now() - interval '1 hour'
             RETURNING user_id, device_id, (xmax = 0) AS created`,
      values: [unique.map((d) => d.userId), unique.map((d) => d.deviceId)],
    });
    const created = new Set(rows.filter((row) => row.created).map((row) => keyOf(row.user_id, row.device_id)));
    return devices.map((device) => created.delete(keyOf(device.userId, device.deviceId)));
  }

  /** A device as stored; null when there is none. */
  async find(userId: string, deviceId: string): Promise<DeviceRecord | null> {
    const rows = await this.prisma.$queryRaw<DeviceRow[]>`
      SELECT * FROM devices WHERE user_id = ${userId} AND device_id = ${deviceId}`;
    const row = rows.at(0);
    return row ? toDeviceRecord(row) : null;
  }

  /**
   * Registers a device or updates its registration (REST). Fields left undefined keep
   * their stored value. Each platform's push fields live only on a device of that
   * platform (apns* on ios, the FCM token on android, the subscription on web): a device
   * that leaves its platform loses them, so none keeps an address it cannot be pushed
   * with. Returns the row, whether it was created and whether its public key changed
   * (set, replaced or cleared; read under the row's lock, so concurrent updates each
   * report their own change).
   */
  async register(
    userId: string,
    deviceId: string,
    registration: DeviceRegistration,
  ): Promise<{ device: DeviceRecord; created: boolean; keyChanged: boolean }> {
    const keep = (value: unknown) => value === undefined;
    const { platform, apnsToken, apnsTopic, apnsEnvironment, fcmToken, webPush, publicKey } = registration;
    return this.prisma.$transaction(async (tx) => {
      const before = await tx.$queryRaw<{ public_key: string | null }[]>`
        SELECT public_key FROM devices WHERE user_id = ${userId} AND device_id = ${deviceId} FOR UPDATE`;
      const rows = await tx.$queryRaw<(DeviceRow & { created: boolean })[]>`
        INSERT INTO devices (user_id, device_id, platform, apns_token, apns_topic, apns_environment, fcm_token,
                             web_push_endpoint, web_push_p256dh, web_push_auth, public_key)
        VALUES (${userId}, ${deviceId}, ${platform ?? null}::"Platform", ${apnsToken ?? null}, ${apnsTopic ?? null},
                ${apnsEnvironment ?? null}::"ApnsEnvironment", ${fcmToken ?? null}, ${webPush?.endpoint ?? null},
                ${webPush?.keys.p256dh ?? null}, ${webPush?.keys.auth ?? null}, ${publicKey ?? null})
        ON CONFLICT (user_id, device_id) DO UPDATE SET
          platform = COALESCE(EXCLUDED.platform, devices.platform),
          apns_token = CASE WHEN COALESCE(EXCLUDED.platform, devices.platform) = 'ios' THEN
            CASE WHEN ${keep(apnsToken)} THEN devices.apns_token ELSE EXCLUDED.apns_token END END,
          apns_topic = CASE WHEN COALESCE(EXCLUDED.platform, devices.platform) = 'ios' THEN
            CASE WHEN ${keep(apnsTopic)} THEN devices.apns_topic ELSE EXCLUDED.apns_topic END END,
          apns_environment = CASE WHEN COALESCE(EXCLUDED.platform, devices.platform) = 'ios' THEN
            CASE WHEN ${keep(apnsEnvironment)} THEN devices.apns_environment ELSE EXCLUDED.apns_environment END END,
          fcm_token = CASE WHEN COALESCE(EXCLUDED.platform, devices.platform) = 'android' THEN
            CASE WHEN ${keep(fcmToken)} THEN devices.fcm_token ELSE EXCLUDED.fcm_token END END,
          web_push_endpoint = CASE WHEN COALESCE(EXCLUDED.platform, devices.platform) = 'web' THEN
            CASE WHEN ${keep(webPush)} THEN devices.web_push_endpoint ELSE EXCLUDED.web_push_endpoint END END,
          web_push_p256dh = CASE WHEN COALESCE(EXCLUDED.platform, devices.platform) = 'web' THEN
            CASE WHEN ${keep(webPush)} THEN devices.web_push_p256dh ELSE EXCLUDED.web_push_p256dh END END,
          web_push_auth = CASE WHEN COALESCE(EXCLUDED.platform, devices.platform) = 'web' THEN
            CASE WHEN ${keep(webPush)} THEN devices.web_push_auth ELSE EXCLUDED.web_push_auth END END,
          public_key = CASE WHEN ${keep(publicKey)} THEN devices.public_key ELSE EXCLUDED.public_key END,
          last_seen_at = now()
        RETURNING *, (xmax = 0) AS created`;
      const device = toDeviceRecord(rows[0]);
      const keyChanged = before.length === 0 ? device.publicKey !== null : before[0].public_key !== device.publicKey;
      return { device, created: rows[0].created, keyChanged };
    });
  }

  /** Deletes a device (its delivery cursors cascade); false when there was none. */
  async remove(userId: string, deviceId: string): Promise<boolean> {
    const deleted = await this.prisma.$executeRaw`
      DELETE FROM devices WHERE user_id = ${userId} AND device_id = ${deviceId}`;
    return deleted > 0;
  }

  /** The public keys of a user's devices that have one, by deviceId. */
  async publicKeysOf(userId: string): Promise<{ deviceId: string; publicKey: string }[]> {
    const rows = await this.prisma.$queryRaw<{ device_id: string; public_key: string }[]>`
      SELECT device_id, public_key FROM devices
      WHERE user_id = ${userId} AND public_key IS NOT NULL
      ORDER BY device_id`;
    return rows.map((row) => ({ deviceId: row.device_id, publicKey: row.public_key }));
  }

  /** The users' devices, each with whether it has published a public key (e2e). */
  async devicesOf(userIds: readonly string[]): Promise<(DeviceRef & { hasKey: boolean })[]> {
    if (userIds.length === 0) return [];
    const { rows } = await this.prisma.sql.query<{ user_id: string; device_id: string; has_key: boolean }>({
      name: 'devices.of',
      text: `SELECT user_id, device_id, public_key IS NOT NULL AS has_key FROM devices
             WHERE user_id = ANY($1::text[])`,
      values: [userIds],
    });
    return rows.map((row) => ({ userId: row.user_id, deviceId: row.device_id, hasKey: row.has_key }));
  }

  /**
   * Of `devices`, those on one of `platforms` with that platform's push address (an APNs
   * token, an FCM token, a Web Push subscription): the ones a push can reach.
   */
  async pushableAmong(devices: readonly DeviceRef[], platforms: readonly Platform[]): Promise<DeviceRef[]> {
    if (devices.length === 0 || platforms.length === 0) return [];
    const rows = await this.prisma.$queryRaw<{ user_id: string; device_id: string }[]>`
      SELECT d.user_id, d.device_id
      FROM devices d
      JOIN unnest(${devices.map((d) => d.userId)}::text[], ${devices.map((d) => d.deviceId)}::text[]) AS v(user_id, device_id)
        ON d.user_id = v.user_id AND d.device_id = v.device_id
      WHERE d.platform::text = ANY(${platforms}::text[])
        AND CASE d.platform
              WHEN 'ios' THEN d.apns_token IS NOT NULL
              WHEN 'android' THEN d.fcm_token IS NOT NULL
              WHEN 'web' THEN d.web_push_endpoint IS NOT NULL
            END`;
    return rows.map((row) => ({ userId: row.user_id, deviceId: row.device_id }));
  }

  /**
   * Where to push a message of `conversationId` for this device, with how far the device
   * has acked there (null: it has no cursor in that conversation, e.g. it left). Null when
   * the device is gone.
   */
  async pushTarget(userId: string, deviceId: string, conversationId: string): Promise<PushTarget | null> {
    const rows = await this.prisma.$queryRaw<(DeviceRow & { acked_seq: bigint | null })[]>`
      SELECT d.*, dc.acked_seq
      FROM devices d
      LEFT JOIN delivery_cursors dc
        ON dc.user_id = d.user_id AND dc.device_id = d.device_id AND dc.conversation_id = ${conversationId}::uuid
      WHERE d.user_id = ${userId} AND d.device_id = ${deviceId}`;
    const row = rows.at(0);
    if (!row) return null;
    return {
      address: pushAddressOf(toDeviceRecord(row)),
      ackedSeq: row.acked_seq === null ? null : Number(row.acked_seq),
    };
  }

  /**
   * Forgets a push address its provider called dead (APNs token, FCM token, Web Push
   * subscription), unless the device registered another one meanwhile. True when it was
   * cleared.
   */
  async forgetPushAddress(userId: string, deviceId: string, address: PushAddress): Promise<boolean> {
    let updated: number;
    switch (address.platform) {
      case 'ios':
        updated = await this.prisma.$executeRaw`
          UPDATE devices SET apns_token = NULL
          WHERE user_id = ${userId} AND device_id = ${deviceId} AND apns_token = ${address.token}`;
        break;
      case 'android':
        updated = await this.prisma.$executeRaw`
          UPDATE devices SET fcm_token = NULL
          WHERE user_id = ${userId} AND device_id = ${deviceId} AND fcm_token = ${address.token}`;
        break;
      case 'web':
        updated = await this.prisma.$executeRaw`
          UPDATE devices SET web_push_endpoint = NULL, web_push_p256dh = NULL, web_push_auth = NULL
          WHERE user_id = ${userId} AND device_id = ${deviceId}
            AND web_push_endpoint = ${address.subscription.endpoint}`;
        break;
    }
    return updated > 0;
  }
}

interface DeviceRow {
  user_id: string;
  device_id: string;
  platform: Platform | null;
  apns_token: string | null;
  apns_topic: string | null;
  apns_environment: ApnsEnvironment | null;
  fcm_token: string | null;
  web_push_endpoint: string | null;
  web_push_p256dh: string | null;
  web_push_auth: string | null;
  public_key: string | null;
  created_at: Date;
  last_seen_at: Date;
}

const toDeviceRecord = (row: DeviceRow): DeviceRecord => ({
  userId: row.user_id,
  deviceId: row.device_id,
  platform: row.platform,
  apnsToken: row.apns_token,
  apnsTopic: row.apns_topic,
  apnsEnvironment: row.apns_environment,
  fcmToken: row.fcm_token,
  webPush:
    row.web_push_endpoint !== null && row.web_push_p256dh !== null && row.web_push_auth !== null
      ? { endpoint: row.web_push_endpoint, keys: { p256dh: row.web_push_p256dh, auth: row.web_push_auth } }
      : null,
  publicKey: row.public_key,
  createdAt: row.created_at,
  lastSeenAt: row.last_seen_at,
});

/** Where one device is pushed to: its platform's provider and its address there. */
export type PushAddress =
  | { platform: 'ios'; token: string; topic: string | null; environment: ApnsEnvironment | null }
  | { platform: 'android'; token: string }
  | { platform: 'web'; subscription: WebPushSubscription };

/** The push address of a device, if its platform's is registered. */
function pushAddressOf(device: DeviceRecord): PushAddress | null {
  switch (device.platform) {
    case 'ios':
      return device.apnsToken === null
        ? null
        : { platform: 'ios', token: device.apnsToken, topic: device.apnsTopic, environment: device.apnsEnvironment };
    case 'android':
      return device.fcmToken === null ? null : { platform: 'android', token: device.fcmToken };
    case 'web':
      return device.webPush === null ? null : { platform: 'web', subscription: device.webPush };
    case null:
      return null;
  }
}

/** A device as push sees it, for one conversation. */
export interface PushTarget {
  /** Null when the device has no push address (any more). */
  address: PushAddress | null;
  /** Every seq up to this one is acked; null when the device has no cursor there. */
  ackedSeq: number | null;
}

const keyOf = (userId: string, deviceId: string) => `${userId}\u0000${deviceId}`;
