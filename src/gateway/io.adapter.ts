import type { INestApplicationContext } from '@nestjs/common';
import { IoAdapter } from '@nestjs/platform-socket.io';
import type { Server, ServerOptions } from 'socket.io';

import type { AppConfig } from '../config/app-config.js';

/** Room for the event envelope (event name, ids, JSON and base64 overhead) above the body limit. */
const ENVELOPE_BYTES = 64 * 1024;

/**
 * Socket.IO server options: a frame limit well above maxMessageBytes (base64 e2e
 * ciphertext is 4/3 larger) so an oversized message gets a `payload_too_large` reply,
 * while a frame past the limit only closes its own connection; CORS from CORS_ORIGINS
 * (browsers' polling transport). Auth is by token, never cookies, so cross-site
 * WebSocket handshakes gain nothing.
 */
export class AppIoAdapter extends IoAdapter {
  constructor(
    app: INestApplicationContext,
    private readonly config: AppConfig,
  ) {
    super(app);
  }

  override createIOServer(port: number, options?: ServerOptions): Server {
    const origins = this.config.corsOrigins;
    return super.createIOServer(port, {
      ...options,
      maxHttpBufferSize: Math.ceil(this.config.limits.maxMessageBytes * 2) + ENVELOPE_BYTES,
      pingInterval: 25_000,
      pingTimeout: 20_000,
      connectTimeout: 10_000,
      cors: origins.length > 0 ? { origin: origins.includes('*') ? true : origins, credentials: true } : undefined,
    } as ServerOptions);
  }
}
