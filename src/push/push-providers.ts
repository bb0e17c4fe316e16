import { Injectable } from '@nestjs/common';

import type { Platform, PushAddress } from '../devices/devices.repository.js';
import { ApnsClient } from './apns.client.js';
import { FcmClient } from './fcm.client.js';
import { PushHttp } from './push-http.js';
import type { PushNotice, PushResult } from './push.provider.js';
import { WebPushClient } from './web-push.client.js';

/**
 * The provider of each platform: APNs for ios, FCM for android, Web Push for web. The one
 * place that knows all three; the job pipeline asks it which platforms are on and hands
 * it each address.
 */
@Injectable()
export class PushProviders {
  constructor(
    private readonly apns: ApnsClient,
    private readonly fcm: FcmClient,
    private readonly webPush: WebPushClient,
    private readonly http: PushHttp,
  ) {}

  /** The platforms whose provider is configured, in a fixed order. */
  get enabledPlatforms(): Platform[] {
    const on: Platform[] = [];
    if (this.apns.enabled) on.push('ios');
    if (this.fcm.enabled) on.push('android');
    if (this.webPush.enabled) on.push('web');
    return on;
  }

  isEnabled(platform: Platform): boolean {
    return this.enabledPlatforms.includes(platform);
  }

  /** Opens every configured provider; throws (at boot) when one's credentials are unusable. */
  open(): void {
    for (const provider of [this.apns, this.fcm, this.webPush]) {
      if (provider.enabled) provider.open();
    }
  }

  send(address: PushAddress, notice: PushNotice): Promise<PushResult> {
    switch (address.platform) {
      case 'ios':
        return this.apns.send(address, notice);
      case 'android':
        return this.fcm.send(address, notice);
      case 'web':
        return this.webPush.send(address, notice);
    }
  }

  async close(): Promise<void> {
    await Promise.all([this.apns.close(), this.fcm.close(), this.webPush.close()]);
    this.http.close();
  }
}
