import { Injectable, Logger } from '@nestjs/common';
import type { Socket } from 'socket.io';

import { AppError, ErrorCode } from '../common/app-error.js';
import { AppConfig } from '../config/app-config.js';
import { DeviceDirectory } from '../devices/device-directory.service.js';
import { DeviceSightings } from '../devices/device-sightings.service.js';
import type { DeviceRef } from '../devices/devices.types.js';
import { DeliveryService } from '../messages/delivery.service.js';
import { PresenceService } from '../presence/presence.service.js';
import { InstanceTopology } from '../redis/instance-topology.service.js';
import { TypingService } from '../presence/typing.service.js';
import { MessagingMetrics } from '../messages/messaging.metrics.js';
import { RealtimeService } from '../realtime/realtime.service.js';
import { rooms, type SocketData } from '../realtime/realtime.types.js';
import type { ClientToServerEvents, ServerToClientEvents, SessionPayload } from '@messaging-service/client/protocol';

export type AppSocket = Socket<ClientToServerEvents, ServerToClientEvents, Record<string, never>, SocketData>;

/** setTimeout's ceiling (about 24.8 days). */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * A socket's session: one live socket per device, the user's and device's rooms, the
 * device's queue made ready, `session` sent, and a disconnect when the token expires.
 */
@Injectable()
export class SessionService {
  private readonly logger = new Logger(SessionService.name);
  private readonly expiryTimers = new Map<string, NodeJS.Timeout>();
  private readonly opened = new Set<string>();

  constructor(
    private readonly sightings: DeviceSightings,
    private readonly directory: DeviceDirectory,
    private readonly delivery: DeliveryService,
    private readonly realtime: RealtimeService,
    private readonly metrics: MessagingMetrics,
    private readonly presence: PresenceService,
    private readonly typing: TypingService,
    private readonly topology: InstanceTopology,
    private readonly config: AppConfig,
  ) {}

  static deviceOf(socket: AppSocket): DeviceRef {
    return { userId: socket.data.userId, deviceId: socket.data.deviceId };
  }

  /**
   * The part of a session that needs PostgreSQL and Redis, run at the handshake so that a
   * dependency down refuses the connection with `unavailable` (PROTOCOL.md section 1)
   * rather than accepting it and cutting it: the device is recorded, and its queue made
   * ready. Resolves with the queue's length.
   */
  async prepare(device: DeviceRef): Promise<number> {
    try {
      const isNew = await this.sightings.seen(device);
      if (isNew) {
        // A new device changes its user's device list (e2e recipients); its cursors
        // start with DeliveryService.prepare.
        this.directory.changed(device.userId);
      }
      return await this.delivery.prepare(device, isNew);
    } catch (error) {
      this.logger.warn({ msg: 'session setup failed at the handshake', err: error });
      throw new AppError(ErrorCode.Unavailable, 'could not set up the session; retry later');
    }
  }

  /** The rest, once connected: one live socket per device, rooms, `session`, presence. */
  async open(socket: AppSocket): Promise<void> {
    const { userId, deviceId, unacked } = socket.data;
    await this.replaceOlderSockets(socket);
    await socket.join(rooms.user(userId));
    this.scheduleExpiry(socket);
    this.metrics.connections.inc();
    this.opened.add(socket.id);
    const session: SessionPayload = {
      userId,
      deviceId,
      sessionId: socket.data.sessionId,
      serverTime: new Date().toISOString(),
      tokenExpiresAt: socket.data.tokenExpiresAt.toISOString(),
      unacked,
      limits: { ...this.config.limits },
    };
    socket.emit('session', session);
    await this.presence.connected(userId, deviceId, socket.id);
    // It may have gone while we were setting up: then close() ran before connected().
    if (socket.disconnected) await this.presence.disconnected(socket.id);
  }

  async close(socket: AppSocket): Promise<void> {
    const timer = this.expiryTimers.get(socket.id);
    if (timer) clearTimeout(timer);
    this.expiryTimers.delete(socket.id);
    this.typing.socketGone(socket.id);
    if (this.opened.delete(socket.id)) this.metrics.connections.dec();
    await this.presence.disconnected(socket.id);
  }

  /** Swaps in a fresh token's expiry (`auth` event). */
  refreshExpiry(socket: AppSocket, expiresAt: Date): void {
    socket.data.tokenExpiresAt = expiresAt;
    this.scheduleExpiry(socket);
  }

  /**
   * Disconnects at the token's `exp`. A token accepted within the clock tolerance after
   * its `exp` keeps the socket until the tolerance runs out.
   */
  private scheduleExpiry(socket: AppSocket, deadline = this.deadlineOf(socket.data.tokenExpiresAt)): void {
    const existing = this.expiryTimers.get(socket.id);
    if (existing) clearTimeout(existing);
    const timer = setTimeout(
      () => {
        if (deadline > Date.now()) {
          this.scheduleExpiry(socket, deadline); // past setTimeout's ceiling: wait again
          return;
        }
        socket.emit('error', {
          code: ErrorCode.TokenExpired,
          message: 'token has expired; reconnect with a fresh token',
        });
        socket.disconnect(true);
      },
      Math.max(0, Math.min(deadline - Date.now(), MAX_TIMER_MS)),
    );
    timer.unref();
    this.expiryTimers.set(socket.id, timer);
  }

  private deadlineOf(expiresAt: Date): number {
    const exp = expiresAt.getTime();
    return exp > Date.now() ? exp : exp + this.config.jwt.clockToleranceSec * 1000;
  }

  /**
   * One live socket per device, on any instance: the newest connection wins. The new
   * socket joins the device room first, then resolves every pair it sees (it replaces
   * older ones and yields to a newer one), so connections racing each other still end
   * with exactly one live socket.
   */
  private async replaceOlderSockets(socket: AppSocket): Promise<void> {
    const server = this.realtime.server;
    if (!server) return;
    const room = rooms.device(socket.data.userId, socket.data.deviceId);
    await socket.join(room);
    // Alone, every socket is local: no need to ask other instances through Redis.
    const scope = this.topology.alone ? server.local : server;
    const others = (await scope.in(room).fetchSockets()).filter((other) => other.id !== socket.id);
    const replaced = {
      code: ErrorCode.SessionReplaced,
      message: 'this device connected again elsewhere',
    };
    const older = others.filter(
      (other) => ((other.data as Partial<SocketData>).connectedAt ?? 0) < socket.data.connectedAt,
    );
    if (older.length < others.length) {
      // A newer connection of this device is already there: this one goes.
      socket.emit('error', replaced);
      socket.disconnect(true);
      throw new AppError(ErrorCode.SessionReplaced, replaced.message);
    }
    this.realtime.replaceSockets(
      older.map((other) => other.id),
      replaced,
    );
  }

  assertTokenFor(socket: AppSocket, userId: string): void {
    if (userId !== socket.data.userId) throw new AppError(ErrorCode.Forbidden, 'the token is for another user');
  }
}
