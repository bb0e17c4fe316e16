import { Inject, Injectable, Logger } from '@nestjs/common';

import { AppConfig } from '../config/app-config.js';
import { DevicesRepository } from '../devices/devices.repository.js';
import { OfflineQueueService } from '../offline-queue/offline-queue.service.js';
import { PresenceService } from '../presence/presence.service.js';
import { ApnsClient, classifyApnsFailure } from './apns.client.js';
import { PushAttemptError, type PushAttempt } from './push-jobs.repository.js';
import { PushPreviewService } from './push-preview.service.js';
import { PushMetrics } from './push.metrics.js';
import { PUSH_OPTIONS, type PushOptions } from './push.options.js';
import { buildPayload, type PushContent } from './push.payload.js';

/**
 * Runs one push job: checks that the push is still wanted, builds a content-free
 * notification (or, with previews on, a server-mode preview) and sends it to APNs.
 *
 * Sent only if, when the job runs after the grace period, the device:
 * - is still an iOS device with a token (read now, so a new token is used),
 * - has not acked the message: it is still in the device's offline queue, and its
 *   delivery cursor (the PostgreSQL record the queue is rebuilt from) is below its seq,
 * - has no live socket on any instance.
 * Otherwise the job completes as `skipped`. Tokens are never logged.
 */
@Injectable()
export class PushDeliveryService {
  private readonly logger = new Logger(PushDeliveryService.name);

  constructor(
    private readonly config: AppConfig,
    @Inject(PUSH_OPTIONS) private readonly options: PushOptions,
    private readonly devices: DevicesRepository,
    private readonly queue: OfflineQueueService,
    private readonly presence: PresenceService,
    private readonly apns: ApnsClient,
    private readonly metrics: PushMetrics,
    private readonly previews: PushPreviewService,
  ) {}

  /** Throws PushAttemptError for a failed try (retryable or not); resolves otherwise. */
  async deliver({ data, attempt, attempts }: PushAttempt): Promise<void> {
    const apns = this.config.apns;
    if (!apns) return;
    const { userId, deviceId } = data;
    const target = await this.devices.pushTarget(userId, deviceId, data.conversationId);
    const address = target?.address;
    if (!target || address?.platform !== 'ios') return this.skip('no_token');
    if (target.ackedSeq === null || target.ackedSeq >= data.seq) return this.skip('acked');
    if ((await this.queue.isQueued({ userId, deviceId }, data.messageId)) === false) return this.skip('acked');
    if (await this.presence.isDeviceOnline(userId, deviceId)) return this.skip('online');

    const content: PushContent = {
      conversationId: data.conversationId,
      messageId: data.messageId,
      e2e: data.e2e,
      // This message at least is unacked, even if Redis lost the queue.
      badge: Math.max(1, await this.queue.length({ userId, deviceId })),
      preview: await this.previews.previewOf(data),
    };
    const result = await this.apns.send({
      environment: address.environment ?? (apns.production ? 'production' : 'sandbox'),
      token: address.token,
      topic: address.topic ?? apns.topic,
      payload: buildPayload(content, this.options.previewMaxChars),
      collapseId: data.conversationId,
      expiry: Math.floor(Date.now() / 1000) + this.options.expirySec,
    });
    if (result.ok) {
      this.metrics.count('sent', 'accepted');
      return;
    }

    const kind = classifyApnsFailure(result);
    const what = `push to ${userId}/${deviceId} (message ${data.messageId}) refused: ${result.status ?? '-'} ${result.reason}${result.detail ? ` (${result.detail})` : ''}`;
    switch (kind) {
      case 'unregister': {
        const cleared = await this.devices.forgetPushAddress(userId, deviceId, address);
        this.logger.log(`${what}; ${cleared ? 'token removed' : 'token already replaced'}`);
        this.metrics.count('failed', result.reason);
        throw new PushAttemptError(result.reason, false);
      }
      case 'reject':
        this.logger.warn(what);
        this.metrics.count('failed', result.reason);
        throw new PushAttemptError(result.reason, false);
      case 'retry': {
        const last = attempt >= attempts;
        this.logger.warn(`${what}; ${last ? `giving up after ${attempts} tries` : `try ${attempt} of ${attempts}`}`);
        this.metrics.count(last ? 'failed' : 'retried', result.reason);
        throw new PushAttemptError(result.reason, !last);
      }
    }
  }

  private skip(reason: 'no_token' | 'acked' | 'online'): void {
    this.metrics.count('skipped', reason);
  }
}
