import { Injectable, Logger } from '@nestjs/common';

import { AppConfig } from '../config/app-config.js';
import { MessagingMetrics } from '../messages/messaging.metrics.js';
import { capSendBuffer } from '../platform/send-buffer-cap.js';
import type { AppSocket } from './session.service.js';

/**
 * SOCKET_SEND_BUFFER_BYTES (PROTOCOL.md section 7): a client that stops reading while
 * messages flow to it is disconnected once the service holds more than that unsent for
 * its socket, so it costs bounded memory. Nothing is lost: messages leave a device's
 * offline queue only when it acks them, so the device gets them again with `get-unacked`
 * when it reconnects.
 */
@Injectable()
export class SlowConsumers {
  private readonly logger = new Logger(SlowConsumers.name);

  constructor(
    private readonly config: AppConfig,
    private readonly metrics: MessagingMetrics,
  ) {}

  watch(socket: AppSocket): void {
    const limitBytes = this.config.socketSendBufferBytes;
    capSendBuffer(socket.conn, limitBytes, (heldBytes) => {
      this.metrics.slowConsumerDisconnects.inc();
      this.logger.warn({
        msg: 'disconnected a socket that stopped reading: too much held unsent',
        userId: socket.data.userId,
        deviceId: socket.data.deviceId,
        transport: socket.conn.transport.name,
        heldBytes,
        limitBytes,
      });
    });
  }
}
