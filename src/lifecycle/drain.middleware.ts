import { Injectable, type NestMiddleware } from '@nestjs/common';
import type { NextFunction, Request, Response } from 'express';

import { ShutdownService, shuttingDown } from './shutdown.service.js';

/**
 * REST's part of the drain: a request arriving after SIGTERM is refused `unavailable`
 * (through the HTTP exception filter, like any error); one admitted before is waited for,
 * and answered `unavailable` here if it outlasts the grace. Health and metrics are not
 * routed through it: ops keep seeing the instance while it drains.
 */
@Injectable()
export class DrainMiddleware implements NestMiddleware {
  constructor(private readonly shutdown: ShutdownService) {}

  use(request: Request, response: Response, next: NextFunction): void {
    const inFlight = this.shutdown.admit(() => answerUnavailable(request, response));
    if (!inFlight) {
      // Keep-alive would bring this client's next request back to an instance that is leaving.
      response.setHeader('Connection', 'close');
      throw shuttingDown();
    }
    response.once('close', () => inFlight.release());
    next();
  }
}

function answerUnavailable(request: Request & { id?: unknown }, response: Response): void {
  if (response.headersSent) return;
  const { code, message } = shuttingDown();
  const requestId = typeof request.id === 'string' || typeof request.id === 'number' ? String(request.id) : undefined;
  response
    .status(503)
    .set({ Connection: 'close', 'Retry-After': '1' })
    .json({ error: { code, message, ...(requestId !== undefined ? { requestId } : {}) } });
}
