import { Controller, Get, UseGuards } from '@nestjs/common';
import { ApiBearerAuth, ApiTags } from '@nestjs/swagger';
import { z } from 'zod';

import { AppError } from '../common/app-error.js';
import { AppConfig } from '../config/app-config.js';
import { BearerAuthGuard } from '../http/bearer-auth.guard.js';
import { dataOf, RestRoute } from '../http/openapi.js';

export const webPushKeyReply = dataOf(
  z.object({
    publicKey: z.string().describe("base64url of the VAPID public key: PushManager.subscribe's applicationServerKey"),
  }),
);

/** REST: what a browser needs to subscribe to Web Push (PROTOCOL.md section 4). */
@ApiTags('push')
@ApiBearerAuth('bearer')
@UseGuards(BearerAuthGuard)
@Controller('v1/push')
export class PushController {
  constructor(private readonly config: AppConfig) {}

  @Get('web-push-key')
  @RestRoute({
    summary: 'The VAPID public key browsers subscribe with',
    description:
      'Pass it as `applicationServerKey` to `PushManager.subscribe`, then register the subscription with ' +
      '`PUT /v1/devices/:deviceId` (`platform: web`, `webPush`). 404 when web push is off.',
    responses: [{ status: 200, schema: webPushKeyReply, description: 'the key' }],
    errors: [404],
  })
  webPushKey(): z.infer<typeof webPushKeyReply> {
    const webPush = this.config.webPush;
    if (!webPush) throw AppError.notFound('web push is off on this service (VAPID_* are unset)');
    return { data: { publicKey: webPush.publicKey } };
  }
}
