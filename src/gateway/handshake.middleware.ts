import type { Socket } from 'socket.io';

import { AppError, ErrorCode } from '../common/app-error.js';
import { DEVICE_ID } from '../common/ids.js';
import { toPublicError } from '../common/error-mapping.js';
import type { TokenVerifier } from '../auth/token-verifier.service.js';
import { shuttingDown, type ShutdownService } from '../lifecycle/shutdown.service.js';
import type { ConnectionCaps } from './connection-caps.service.js';
import type { RateLimitsService } from './rate-limits.service.js';
import type { SocketData } from '../realtime/realtime.types.js';

let connectionCounter = 0;

/** An error that refuses a handshake: the client's connect_error gets `message` = code and `data`. */
class HandshakeError extends Error {
  constructor(readonly data: { code: string; message: string; details?: Record<string, unknown> }) {
    super(data.code);
  }
}

function tokenOf(socket: Socket): unknown {
  const auth = socket.handshake.auth as Record<string, unknown> | undefined;
  if (auth && auth.token !== undefined) return auth.token;
  const header = socket.handshake.headers.authorization;
  if (typeof header === 'string' && /^Bearer\s+/i.test(header)) return header.replace(/^Bearer\s+/i, '').trim();
  return undefined;
}

function deviceIdOf(socket: Socket): unknown {
  const auth = socket.handshake.auth as Record<string, unknown> | undefined;
  return auth?.deviceId ?? socket.handshake.query.deviceId;
}

/**
 * Socket.IO middleware for `/v1`: verifies the JWT (auth.token or an Authorization
 * bearer header) and the deviceId, and prepares the session's stored state, before the
 * connection is accepted. Nest guards and
 * pipes do not run at the handshake, so this is where it happens. Once the drain began
 * (SIGTERM) a handshake is refused `unavailable`, also one that was under way then: the
 * client backs off and connects to another instance.
 */
export function handshakeMiddleware(
  verifier: TokenVerifier,
  limits: RateLimitsService,
  caps: ConnectionCaps,
  shutdown: Pick<ShutdownService, 'admit' | 'draining'>,
  prepareSession: (device: { userId: string; deviceId: string }) => Promise<number>,
  newSessionId: () => string,
) {
  return (socket: Socket, next: (error?: Error) => void): void => {
    let settled = false;
    const refuse = (error: unknown): void => {
      caps.release(socket.id);
      if (settled) return;
      settled = true;
      const { code, message, details } = toPublicError(error);
      next(
        new HandshakeError(details && code === ErrorCode.RateLimited ? { code, message, details } : { code, message }),
      );
    };
    const inFlight = shutdown.admit(() => refuse(shuttingDown()));
    if (!inFlight) return refuse(shuttingDown());
    const deviceId = deviceIdOf(socket);
    void verifier
      .verify(tokenOf(socket))
      .then(async (identity) => {
        if (typeof deviceId !== 'string' || !DEVICE_ID.test(deviceId)) {
          throw new AppError(ErrorCode.BadRequest, `deviceId must match ${DEVICE_ID.source}`);
        }
        caps.acquire(socket.id, identity.userId, socket.handshake.address);
        await limits.consumeConnect(identity.userId);
        const unacked = await prepareSession({ userId: identity.userId, deviceId });
        if (shutdown.draining) throw shuttingDown();
        const data: SocketData = {
          userId: identity.userId,
          deviceId,
          sessionId: newSessionId(),
          connectedAt: Date.now() + (connectionCounter++ % 1000) / 1000,
          tokenExpiresAt: identity.expiresAt,
          isService: identity.isService,
          unacked,
        };
        socket.data = data;
        settled = true;
        next();
      })
      .catch(refuse)
      .finally(() => inFlight.release());
  };
}
