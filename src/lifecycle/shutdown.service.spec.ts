import { Logger } from '@nestjs/common';
import type { HttpAdapterHost } from '@nestjs/core';
import { beforeAll, describe, expect, it } from 'vitest';

import type { AppConfig } from '../config/app-config.js';
import type { RealtimeService } from '../realtime/realtime.service.js';
import { ShutdownService } from './shutdown.service.js';

const GRACE_MS = 400;
/** reserveOf(400): the request wait ends 100 ms before the grace. */
const REQUEST_WAIT_MS = 300;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A service without an HTTP server, whose socket disconnect is recorded (and may start cleanups). */
function shutdownService(onDisconnect: (service: ShutdownService) => void = () => undefined) {
  const events: string[] = [];
  const realtime = {
    disconnectLocal: () => {
      events.push('disconnect');
      onDisconnect(service);
    },
  } as unknown as RealtimeService;
  const service = new ShutdownService({ shutdownGraceMs: GRACE_MS } as AppConfig, realtime, {
    httpAdapter: undefined,
  } as unknown as HttpAdapterHost);
  return { service, events };
}

describe('ShutdownService', () => {
  beforeAll(() => {
    Logger.overrideLogger(false);
  });

  it('takes requests until the drain begins, then refuses them', async () => {
    const { service } = shutdownService();
    const before = service.admit(() => undefined);
    expect(before).toBeDefined();
    before?.release();
    expect(service.draining).toBe(false);

    await service.beforeApplicationShutdown();

    expect(service.draining).toBe(true);
    expect(service.admit(() => undefined)).toBeUndefined();
  });

  it('waits for the requests in flight to be answered before it disconnects the sockets', async () => {
    const { service, events } = shutdownService();
    const inFlight = service.admit(() => events.push('answered unavailable'));
    setTimeout(() => {
      events.push('answered');
      inFlight?.release();
    }, 50);

    const started = Date.now();
    await service.beforeApplicationShutdown();

    expect(events).toEqual(['answered', 'disconnect']);
    expect(Date.now() - started).toBeLessThan(REQUEST_WAIT_MS);
  });

  it('answers unavailable what is still running when the grace less its reserve runs out, once', async () => {
    const { service, events } = shutdownService();
    const stuck = service.admit(() => events.push('answered unavailable'));

    const started = Date.now();
    await service.beforeApplicationShutdown();
    stuck?.release();

    expect(events).toEqual(['answered unavailable', 'disconnect']);
    expect(Date.now() - started).toBeGreaterThanOrEqual(REQUEST_WAIT_MS - 5);
    expect(Date.now() - started).toBeLessThan(GRACE_MS);
  });

  it('waits for the session cleanups the disconnect starts, within the grace', async () => {
    let cleanedUp = false;
    const { service } = shutdownService((s) => s.track(sleep(30).then(() => void (cleanedUp = true))));

    await service.beforeApplicationShutdown();

    expect(cleanedUp).toBe(true);
  });

  it('leaves a cleanup that never ends behind, and still ends before the grace', async () => {
    const { service } = shutdownService((s) => s.track(new Promise(() => undefined)));

    const started = Date.now();
    await service.beforeApplicationShutdown();

    expect(Date.now() - started).toBeLessThan(GRACE_MS);
  });
});
