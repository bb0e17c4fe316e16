import type { Server as HttpServer } from 'node:http';
import type { Socket } from 'node:net';

import { Injectable, Logger, type BeforeApplicationShutdown, type OnApplicationBootstrap } from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';

import { AppError, ErrorCode } from '../common/app-error.js';
import { AppConfig } from '../config/app-config.js';
import { RealtimeService } from '../realtime/realtime.service.js';

/** A request admitted before the drain began; released once it is answered. */
export interface InFlight {
  release(): void;
}

interface Entry {
  /** Answers the request `unavailable` when the grace runs out first (none for tracked work). */
  abandon?: () => void;
}

/** The refusal of a handshake or request once the drain began: the client retries elsewhere. */
export function shuttingDown(): AppError {
  return new AppError(ErrorCode.Unavailable, 'the service is shutting down; retry on another connection');
}

/**
 * Of SHUTDOWN_GRACE_MS, what the wait for requests leaves for the rest: disconnecting
 * the clients (half of it), then closing the servers and dependencies (the other half).
 */
const reserveOf = (graceMs: number) => Math.min(2_000, Math.floor(graceMs / 4));

/**
 * The drain after SIGTERM (PROTOCOL.md section 7), run by `app.close()` before Nest
 * closes the servers (`dispose`) and the resources close (`onApplicationShutdown`):
 *
 * 1. readiness turns 503, handshakes are refused `unavailable`, and so are new socket
 *    requests and REST requests: clients and load balancers go to another instance;
 * 2. what was admitted before finishes and is answered (a send is stored, then `ok`),
 *    until the grace less a reserve runs out; what is still running then is answered
 *    `unavailable` (never `ok`: it may still be stored, and a resend is idempotent);
 * 3. every socket is disconnected, so its client sees "io server disconnect" right after
 *    its last replies; the listener stops;
 * 4. the session cleanups this starts are waited for, and so are the clients closing
 *    their connections (which they do once they have read everything); what is still
 *    open half the reserve later (a peer that stopped reading, an idle keep-alive) is
 *    cut, so closing the servers cannot outlast the grace.
 *
 * PostgreSQL, Redis and the push queue close only after this, in onApplicationShutdown:
 * nothing admitted loses a dependency halfway.
 */
@Injectable()
export class ShutdownService implements OnApplicationBootstrap, BeforeApplicationShutdown {
  private readonly logger = new Logger(ShutdownService.name);
  private readonly inFlight = new Set<Entry>();
  private readonly connections = new Set<Socket>();
  private drainingSince: number | undefined;
  /** Wakes the drain's current wait: something in flight ended, or a connection closed. */
  private wake: (() => void) | undefined;

  constructor(
    private readonly config: AppConfig,
    private readonly realtime: RealtimeService,
    private readonly adapterHost: HttpAdapterHost,
  ) {}

  get draining(): boolean {
    return this.drainingSince !== undefined;
  }

  /**
   * A request (or handshake) starting: undefined once the drain began, to be refused with
   * `shuttingDown()`; else a handle to release once it is answered. `answerUnavailable`
   * runs instead if it is still running when the grace runs out.
   */
  admit(answerUnavailable: () => void): InFlight | undefined {
    if (this.draining) return undefined;
    const entry: Entry = { abandon: answerUnavailable };
    this.inFlight.add(entry);
    return { release: () => this.release(entry) };
  }

  /** Work the drain waits for, taken even while draining (a session's cleanup on disconnect). */
  track(work: Promise<unknown>): void {
    const entry: Entry = {};
    this.inFlight.add(entry);
    work.then(
      () => this.release(entry),
      () => this.release(entry),
    );
  }

  onApplicationBootstrap(): void {
    this.httpServer()?.on('connection', (socket: Socket) => {
      this.connections.add(socket);
      socket.once('close', () => {
        this.connections.delete(socket);
        this.woken();
      });
    });
  }

  async beforeApplicationShutdown(): Promise<void> {
    if (this.draining) return;
    const started = Date.now();
    this.drainingSince = started;
    const grace = this.config.shutdownGraceMs;
    const reserve = reserveOf(grace);
    const admitted = this.inFlight.size;

    if (!(await this.until(() => this.inFlight.size === 0, started + grace - reserve))) {
      let abandoned = 0;
      for (const entry of [...this.inFlight]) {
        if (!entry.abandon) continue;
        abandoned++;
        entry.abandon();
        this.release(entry);
      }
      if (abandoned > 0) {
        this.logger.warn(`${abandoned} request(s) still running after ${grace - reserve} ms answered unavailable`);
      }
    }

    this.realtime.disconnectLocal();
    const server = this.httpServer();
    // Also closes the idle keep-alive connections (Node >= 19).
    if (server?.listening) server.close();
    // Clients close within milliseconds of the DISCONNECT; one that has not after half the
    // reserve is not reading, and waiting longer would only delay the exit.
    const closeBy = Math.min(started + grace - reserve / 2, Date.now() + reserve / 2);
    const cleanedUp = await this.until(() => this.inFlight.size === 0, closeBy);
    const closed = await this.until(() => this.connections.size === 0, closeBy);
    const cut = this.connections.size;
    for (const socket of this.connections) socket.destroy();
    this.logger.log(
      `drained in ${Date.now() - started} ms: ${admitted} request(s) in flight at the start` +
        (cleanedUp ? '' : '; session cleanups left unfinished') +
        (closed ? '' : `; ${cut} connection(s) cut`),
    );
  }

  private release(entry: Entry): void {
    if (this.inFlight.delete(entry) && this.inFlight.size === 0) this.woken();
  }

  private woken(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }

  /** Resolves true once `done()` holds, false at `deadline`. */
  private async until(done: () => boolean, deadline: number): Promise<boolean> {
    while (!done()) {
      const left = deadline - Date.now();
      if (left <= 0) return false;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    return true;
  }

  private httpServer(): HttpServer | undefined {
    return this.adapterHost.httpAdapter?.getHttpServer() as HttpServer | undefined;
  }
}
