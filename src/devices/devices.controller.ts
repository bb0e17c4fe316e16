import { Body, Controller, Delete, Get, Param, Put, Query, Res, UseGuards, UsePipes } from '@nestjs/common';
import { ApiBearerAuth, ApiTags } from '@nestjs/swagger';
import type { Response } from 'express';
import type { z } from 'zod';

import type { Identity } from '../auth/token-verifier.service.js';
import { BearerAuthGuard, Caller, requireActingUser } from '../http/bearer-auth.guard.js';
import { ACTING_USER_DOC, deviceIdSchema, userIdSchema } from '../http/common.schemas.js';
import { RestRoute } from '../http/openapi.js';
import { RequestValidationPipe } from '../http/request-validation.js';
import { DeviceRegistrationService } from './device-registration.service.js';
import {
  deviceKeysReply,
  deviceRemovedReply,
  deviceReply,
  registerDeviceBody,
  toDeviceJson,
} from './devices.schemas.js';

const actingUserQuery = { schema: userIdSchema.optional().describe(ACTING_USER_DOC) };

/** REST: the acting user's devices (PROTOCOL.md section 4). */
@ApiTags('devices')
@ApiBearerAuth('bearer')
@UseGuards(BearerAuthGuard)
@UsePipes(RequestValidationPipe)
@Controller('v1/devices')
export class DevicesController {
  constructor(private readonly registration: DeviceRegistrationService) {}

  @Put(':deviceId')
  @RestRoute({
    summary: 'Register or update a device',
    description:
      'The device receives the messages sent from its registration on (what came before is read with history). ' +
      'Fields left out keep their registered value; null clears one. `platform` is needed once, before any push ' +
      "field, which is checked against the device's platform (the body's, else the registered one); " +
      'changing the platform clears the push fields of the one left.',
    responses: [
      { status: 201, schema: deviceReply, description: 'registered' },
      { status: 200, schema: deviceReply, description: 'updated' },
    ],
    errors: [400, 403],
  })
  async register(
    @Caller() caller: Identity,
    @Param('deviceId', { schema: deviceIdSchema }) deviceId: string,
    @Body({ schema: registerDeviceBody }) body: z.infer<typeof registerDeviceBody>,
    @Res({ passthrough: true }) response: Response,
  ) {
    const { userId, ...registration } = body;
    const { device, created } = await this.registration.register(
      requireActingUser(caller, userId),
      deviceId,
      registration,
    );
    response.status(created ? 201 : 200);
    return { data: toDeviceJson(device) };
  }

  @Delete(':deviceId')
  @RestRoute({
    summary: 'Unregister a device',
    description: 'Deletes it with its offline queue and disconnects its live socket, if any.',
    responses: [{ status: 200, schema: deviceRemovedReply, description: 'unregistered' }],
    errors: [400, 403, 404],
  })
  async unregister(
    @Caller() caller: Identity,
    @Param('deviceId', { schema: deviceIdSchema }) deviceId: string,
    @Query('userId', actingUserQuery) named: string | undefined,
  ) {
    const userId = requireActingUser(caller, named);
    await this.registration.unregister(userId, deviceId);
    return { data: { userId, deviceId } };
  }
}

/** REST: any user's device public keys, for e2e conversations. */
@ApiTags('devices')
@ApiBearerAuth('bearer')
@UseGuards(BearerAuthGuard)
@UsePipes(RequestValidationPipe)
@Controller('v1/users/:userId/devices/keys')
export class DeviceKeysController {
  constructor(private readonly registration: DeviceRegistrationService) {}

  @Get()
  @RestRoute({
    summary: "A user's device public keys",
    description: 'Any authenticated caller may read them; only devices with a key are listed.',
    responses: [{ status: 200, schema: deviceKeysReply, description: 'the keys, by deviceId' }],
    errors: [400],
  })
  async keys(@Param('userId', { schema: userIdSchema }) userId: string) {
    return { data: await this.registration.publicKeys(userId) };
  }
}
