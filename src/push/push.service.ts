import { Injectable, Logger, type OnApplicationShutdown, type OnModuleInit } from '@nestjs/common';

import { DevicesRepository } from '../devices/devices.repository.js';
import type { DeviceRef } from '../devices/devices.types.js';
import type { WireMessage } from '@messaging-service/client/protocol';
import { PushDeliveryService } from './push-delivery.service.js';
import { PushAttemptError, PushJobsRepository, type PushAttempt } from './push-jobs.repository.js';
import { PushProviders } from './push-providers.js';
import { PushMetrics } from './push.metrics.js';

/**
 * Push notifications for devices that are offline when a message arrives: APNs for iOS,
 * FCM for Android, Web Push for browsers, through one job pipeline.
 *
 * After a message is queued for its recipient devices, every recipient with a push
 * address on a platform whose provider is on (the sender's own other devices excepted)
 * gets one delayed job, `<messageId>:<userId>:<deviceId>`, in a durable BullMQ queue.
 * After the grace period PushDeliveryService sends it only if the device still has not
 * acked the message and has no live socket. Off, with nothing queued, when no provider
 * is configured.
 */
@Injectable()
export class PushService implements OnModuleInit, OnApplicationShutdown {
  private readonly logger = new Logger(PushService.name);
  /** Enqueues under way, awaited at shutdown. */
  private readonly pending = new Set<Promise<void>>();
  private open = false;

  constructor(
    private readonly devices: DevicesRepository,
    private readonly jobs: PushJobsRepository,
    private readonly delivery: PushDeliveryService,
    private readonly providers: PushProviders,
    private readonly metrics: PushMetrics,
  ) {}

  get enabled(): boolean {
    return this.providers.enabledPlatforms.length > 0;
  }

  onModuleInit(): void {
    if (!this.enabled) return;
    this.providers.open();
    this.jobs.open((attempt) => this.run(attempt));
    this.open = true;
  }

  async onApplicationShutdown(): Promise<void> {
    if (!this.open) return;
    this.open = false;
    await Promise.allSettled([...this.pending]);
    await this.jobs.close();
    await this.providers.close();
  }

  /**
   * Called once per stored message, right after it was queued for `recipients`. Returns
   * at once (the live emit is not held up) and never throws; shutdown waits for it.
   */
  messageQueued(message: WireMessage, recipients: readonly DeviceRef[]): void {
    if (!this.open) return;
    const others = recipients.filter((device) => device.userId !== message.senderId);
    if (others.length === 0) return;
    const work = this.enqueue(message, others).catch((error: unknown) => {
      this.metrics.count('unknown', 'failed', 'enqueue_error');
      this.logger.error(`could not queue the pushes of message ${message.id}: ${String(error)}`);
    });
    this.pending.add(work);
    void work.finally(() => this.pending.delete(work));
  }

  private async enqueue(message: WireMessage, recipients: readonly DeviceRef[]): Promise<void> {
    const targets = await this.devices.pushableAmong(recipients, this.providers.enabledPlatforms);
    await this.jobs.add(
      targets.map((device) => ({
        messageId: message.id,
        conversationId: message.conversationId,
        seq: message.seq,
        userId: device.userId,
        deviceId: device.deviceId,
        e2e: message.ciphertext !== undefined,
      })),
    );
  }

  /** One try of a job. An unexpected error (PostgreSQL, Redis) is retried like a 5xx. */
  private async run(attempt: PushAttempt): Promise<void> {
    try {
      await this.delivery.deliver(attempt);
    } catch (error) {
      if (error instanceof PushAttemptError) throw error;
      const last = attempt.attempt >= attempt.attempts;
      this.metrics.count('unknown', last ? 'failed' : 'retried', 'error');
      this.logger.warn(`push try ${attempt.attempt} of ${attempt.attempts} failed: ${String(error)}`);
      throw new PushAttemptError('error', !last);
    }
  }
}
