import { Module } from '@nestjs/common';

import { AppConfig } from '../config/app-config.js';
import { DevicesModule } from '../devices/devices.module.js';
import { MessageStoreModule } from '../message-store/message-store.module.js';
import { OfflineQueueModule } from '../offline-queue/offline-queue.module.js';
import { PresenceModule } from '../presence/presence.module.js';
import { ApnsClient } from './apns.client.js';
import { FcmClient } from './fcm.client.js';
import { PushController } from './push.controller.js';
import { PushDeliveryService } from './push-delivery.service.js';
import { PushHttp } from './push-http.js';
import { PushJobsRepository } from './push-jobs.repository.js';
import { PushPreviewService } from './push-preview.service.js';
import { PushProviders } from './push-providers.js';
import { PushMetrics } from './push.metrics.js';
import { PUSH_OPTIONS, pushOptionsFor } from './push.options.js';
import { PushService } from './push.service.js';
import { WebPushClient } from './web-push.client.js';

/**
 * Push for offline devices (PushService), fed by the message fan-out: one job pipeline,
 * one provider per platform (APNs, FCM, Web Push), and the VAPID key route. Previews
 * open messages through the message store.
 */
@Module({
  imports: [DevicesModule, MessageStoreModule, OfflineQueueModule, PresenceModule],
  controllers: [PushController],
  providers: [
    { provide: PUSH_OPTIONS, useFactory: pushOptionsFor, inject: [AppConfig] },
    PushService,
    PushDeliveryService,
    PushPreviewService,
    PushJobsRepository,
    PushProviders,
    PushHttp,
    ApnsClient,
    FcmClient,
    WebPushClient,
    PushMetrics,
  ],
  exports: [PushService],
})
export class PushModule {}
