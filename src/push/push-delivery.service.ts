import { Inject, Injectable, Logger } from '@nestjs/common';

import { DevicesRepository, type PushAddress } from '../devices/devices.repository.js';
import { OfflineQueueService } from '../offline-queue/offline-queue.service.js';
import { PresenceService } from '../presence/presence.service.js';
import { PushAttemptError, type PushAttempt, type PushJobData } from './push-jobs.repository.js';
import { PushPreviewService } from './push-preview.service.js';
import { PushProviders } from './push-providers.js';
import { PushMetrics, type PushSkip } from './push.metrics.js';
import { PUSH_OPTIONS, type PushOptions } from './push.options.js';
import type { PushNotice } from './push.provider.js';

/**
 * Runs one push job, whatever the device's platform: checks that the push is still
 * wanted, builds a content-free notice and hands it to the platform's provider (APNs,
 * FCM or Web Push), then acts on the answer.
 *
 * Sent only if, when the job runs after the grace period, the device:
 * - still has a push address on a platform whose provider is on (read now, so a new
 *   token or subscription is used),
 * - has not acked the message: it is still in the device's offline queue, and its
 *   delivery cursor (the PostgreSQL record the queue is rebuilt from) is below its seq,
 * - has no live socket on any instance.
 * Otherwise the job completes as `skipped`. A dead address (the provider said so) is
 * forgotten. Tokens and subscriptions are never logged.
 */
@Injectable()
export class PushDeliveryService {
  private readonly logger = new Logger(PushDeliveryService.name);

  constructor(
    @Inject(PUSH_OPTIONS) private readonly options: PushOptions,
    private readonly devices: DevicesRepository,
    private readonly queue: OfflineQueueService,
    private readonly presence: PresenceService,
    private readonly providers: PushProviders,
    private readonly metrics: PushMetrics,
    private readonly previews: PushPreviewService,
  ) {}

  /** Throws PushAttemptError for a failed try (retryable or not); resolves otherwise. */
  async deliver({ data, attempt, attempts }: PushAttempt): Promise<void> {
    const { userId, deviceId } = data;
    const target = await this.devices.pushTarget(userId, deviceId, data.conversationId);
    const address = target?.address;
    if (!target || !address) return this.skip('unknown', 'no_token');
    const { platform } = address;
    if (!this.providers.isEnabled(platform)) return this.skip(platform, 'provider_off');
    if (target.ackedSeq === null || target.ackedSeq >= data.seq) return this.skip(platform, 'acked');
    if ((await this.queue.isQueued({ userId, deviceId }, data.messageId)) === false)
      return this.skip(platform, 'acked');
    if (await this.presence.isDeviceOnline(userId, deviceId)) return this.skip(platform, 'online');

    const result = await this.providers.send(address, await this.noticeFor(address, data));
    if (result.ok) {
      this.metrics.count(platform, 'sent', 'accepted');
      return;
    }

    const what = `${platform} push to ${userId}/${deviceId} (message ${data.messageId}) refused: ${result.status ?? '-'} ${result.reason}${result.detail ? ` (${result.detail})` : ''}`;
    switch (result.kind) {
      case 'unregister': {
        const cleared = await this.devices.forgetPushAddress(userId, deviceId, address);
        this.logger.log(`${what}; ${cleared ? 'address removed' : 'address already replaced'}`);
        this.metrics.count(platform, 'failed', result.reason);
        throw new PushAttemptError(result.reason, false);
      }
      case 'reject':
        this.logger.warn(what);
        this.metrics.count(platform, 'failed', result.reason);
        throw new PushAttemptError(result.reason, false);
      case 'retry': {
        const last = attempt >= attempts;
        this.logger.warn(`${what}; ${last ? `giving up after ${attempts} tries` : `try ${attempt} of ${attempts}`}`);
        this.metrics.count(platform, last ? 'failed' : 'retried', result.reason);
        throw new PushAttemptError(result.reason, !last, result.retryAfterMs);
      }
    }
  }

  private async noticeFor(address: PushAddress, data: PushJobData): Promise<PushNotice> {
    const { userId, deviceId } = data;
    return {
      conversationId: data.conversationId,
      messageId: data.messageId,
      e2e: data.e2e,
      expiresAt: Math.floor(Date.now() / 1000) + this.options.expirySec,
      // Only APNs shows an alert; FCM and Web Push messages are data-only.
      alert:
        address.platform === 'ios'
          ? {
              // This message at least is unacked, even if Redis lost the queue.
              badge: Math.max(1, await this.queue.length({ userId, deviceId })),
              preview: await this.previews.previewOf(data),
            }
          : undefined,
    };
  }

  private skip(platform: PushAddress['platform'] | 'unknown', reason: PushSkip): void {
    this.metrics.count(platform, 'skipped', reason);
  }
}
