import { Injectable } from '@nestjs/common';

import { AppError, ErrorCode } from '../common/app-error.js';
import { AppConfig } from '../config/app-config.js';

/**
 * What a refused client is told to wait: a cap frees up only when one of its sockets
 * goes, which no timer predicts; a few seconds keeps a retrying client from hammering.
 */
const RETRY_AFTER_MS = 5_000;

/**
 * Live sockets per user and per peer address on this instance (PROTOCOL.md section 7,
 * MAX_CONNECTIONS_PER_USER and MAX_CONNECTIONS_PER_IP): a handshake past either is
 * refused `rate_limited`. A slot is taken at the handshake and given back when the socket
 * goes (or the handshake fails after taking it).
 */
@Injectable()
export class ConnectionCaps {
  private readonly perUser = new Map<string, number>();
  private readonly perIp = new Map<string, number>();
  private readonly held = new Map<string, { userId: string; ip: string }>();

  constructor(private readonly config: AppConfig) {}

  /** Takes a slot for socket `socketId`, or throws `rate_limited`. */
  acquire(socketId: string, userId: string, ip: string): void {
    const caps = this.config.connectionCaps;
    if ((this.perUser.get(userId) ?? 0) >= caps.perUser) {
      throw new AppError(ErrorCode.RateLimited, 'too many live connections for this user', {
        retryAfterMs: RETRY_AFTER_MS,
      });
    }
    if (caps.perIp > 0 && (this.perIp.get(ip) ?? 0) >= caps.perIp) {
      throw new AppError(ErrorCode.RateLimited, 'too many live connections from this address', {
        retryAfterMs: RETRY_AFTER_MS,
      });
    }
    adjust(this.perUser, userId, 1);
    adjust(this.perIp, ip, 1);
    this.held.set(socketId, { userId, ip });
  }

  /** Gives the socket's slot back; a socket that holds none is ignored. */
  release(socketId: string): void {
    const slot = this.held.get(socketId);
    if (!slot) return;
    this.held.delete(socketId);
    adjust(this.perUser, slot.userId, -1);
    adjust(this.perIp, slot.ip, -1);
  }
}

function adjust(counts: Map<string, number>, key: string, by: number): void {
  const next = (counts.get(key) ?? 0) + by;
  if (next > 0) counts.set(key, next);
  else counts.delete(key);
}
