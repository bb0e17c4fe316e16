import { Injectable, Logger } from '@nestjs/common';

import { AppError, ErrorCode } from '../common/app-error.js';
import { toPublicError } from '../common/error-mapping.js';
import { MetricsService } from '../metrics/metrics.service.js';
import { ShutdownService, shuttingDown } from '../lifecycle/shutdown.service.js';
import { MessagingMetrics } from '../messages/messaging.metrics.js';
import type { ClientToServerEvents, Reply } from '@messaging-service/client/protocol';
import { RateLimitsService } from './rate-limits.service.js';
import type { AppSocket } from './session.service.js';

type EventName = keyof ClientToServerEvents;
type DataOf<E extends EventName> = Parameters<ClientToServerEvents[E]>[1] extends (reply: Reply<infer T>) => void
  ? T
  : never;

/** One handler per client event: takes the raw payload, returns the reply's `data`. */
export type EventHandlers = {
  [E in EventName]?: (socket: AppSocket, payload: unknown) => Promise<DataOf<E>>;
};

/**
 * The contract's request plumbing for Socket.IO: every request gets exactly one reply
 * through its ack (`{ ok, data | error }`), or an `error` event when it came without an
 * ack and failed; unknown events are answered `unknown_event`; anything unexpected is
 * `internal` with a request id, logged with its stack, and never leaves the handler.
 * Every request counts as in flight for the drain: once it began, new ones are answered
 * `unavailable`, and one still running when the grace runs out is answered `unavailable`
 * then (its late outcome is dropped, so the one reply it got stays the only one).
 */
@Injectable()
export class RequestDispatcher {
  private readonly logger = new Logger('Socket');
  /**
   * Histogram children per (event, outcome): saves building the labels per request
   * (prom-client still hashes them on every observe: 2% of the service's CPU, #20).
   */
  private readonly timers = new Map<string, { observe(seconds: number): void }>();

  constructor(
    private readonly metrics: MessagingMetrics,
    private readonly httpMetrics: MetricsService,
    private readonly limits: RateLimitsService,
    private readonly shutdown: ShutdownService,
  ) {}

  /**
   * One listener per socket for every event (cheaper per connection than one per event):
   * known events go to their handler, anything else is answered `unknown_event`.
   */
  bind(socket: AppSocket, handlers: EventHandlers, ready: Promise<void>): void {
    // Once the session is set up, requests skip waiting on it (one await fewer each).
    let session: Promise<void> | null = ready;
    ready.then(
      () => (session = null),
      () => undefined,
    );
    socket.onAny((event: unknown, ...args: unknown[]) => {
      const name = typeof event === 'string' ? event : String(event);
      const handler = Object.hasOwn(handlers, name)
        ? (handlers[name as EventName] as ((socket: AppSocket, payload: unknown) => Promise<unknown>) | undefined)
        : undefined;
      void this.handle(
        socket,
        name,
        args,
        session,
        handler ?? (() => Promise.reject(new AppError(ErrorCode.UnknownEvent, `unknown event "${name.slice(0, 64)}"`))),
      );
    });
  }

  private async handle(
    socket: AppSocket,
    event: string,
    args: unknown[],
    ready: Promise<void> | null,
    handler: (socket: AppSocket, payload: unknown) => Promise<unknown>,
  ): Promise<void> {
    const last = args[args.length - 1];
    const ack = typeof last === 'function' ? (last as (reply: unknown) => void) : undefined;
    const payload = ack ? (args.length > 1 ? args[0] : undefined) : args[0];
    const started = performance.now();
    let outcome: string = 'ok';
    let answered = false;
    const fail = (error: unknown): void => {
      if (answered) return;
      answered = true;
      const requestId = randomId();
      const publicError = toPublicError(error, requestId);
      outcome = publicError.code;
      if (publicError.code === ErrorCode.Internal) {
        this.logger.error({ msg: `request "${event.slice(0, 64)}" failed`, requestId, err: error });
      }
      this.httpMetrics.errors.inc({ code: publicError.code, transport: 'socket' });
      const { requestId: _omit, ...wire } = publicError;
      try {
        if (ack) ack({ ok: false, error: wire });
        else socket.emit('error', { ...wire, event: event.slice(0, 64) });
      } catch (emitError) {
        this.logger.warn(`could not reply to "${event.slice(0, 64)}": ${String(emitError)}`);
      }
    };
    const inFlight = this.shutdown.admit(() => fail(shuttingDown()));
    try {
      if (!inFlight) throw shuttingDown();
      if (ready) await ready;
      await this.limits.consumeEvent(socket.id);
      const data = await handler(socket, payload);
      if (!answered) {
        answered = true;
        ack?.({ ok: true, data: data ?? {} });
      }
    } catch (error) {
      fail(error);
    } finally {
      inFlight?.release();
      // Unknown event names are not labels: a client could mint unbounded series.
      const eventLabel = outcome === ErrorCode.UnknownEvent ? 'unknown' : event;
      this.timerFor(eventLabel, outcome).observe((performance.now() - started) / 1000);
    }
  }

  private timerFor(event: string, outcome: string): { observe(seconds: number): void } {
    const key = `${event}\n${outcome}`;
    let timer = this.timers.get(key);
    if (!timer) {
      timer = this.metrics.requestDuration.labels({ event, outcome });
      this.timers.set(key, timer);
    }
    return timer;
  }
}

function randomId(): string {
  return globalThis.crypto.randomUUID();
}
