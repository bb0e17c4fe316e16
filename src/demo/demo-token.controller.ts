import { Body, Controller, HttpCode, Post, UsePipes } from '@nestjs/common';
import { ApiExcludeController } from '@nestjs/swagger';
import { z } from 'zod';

import { userIdSchema } from '../http/common.schemas.js';
import { RequestValidationPipe } from '../http/request-validation.js';
import { DemoTokenService } from './demo-token.service.js';

export const demoTokenBody = z.object({ userId: userIdSchema });

/**
 * `POST /demo/token { userId }` → `{ data: { token, expiresAt } }`: a token for any user
 * name, for the demo page's sign-in. Development and test only: DemoModule never mounts
 * it with NODE_ENV=production, and it stays out of the OpenAPI document.
 */
@ApiExcludeController()
@UsePipes(RequestValidationPipe)
@Controller('demo')
export class DemoTokenController {
  constructor(private readonly tokens: DemoTokenService) {}

  @Post('token')
  @HttpCode(200)
  async token(@Body({ schema: demoTokenBody }) body: z.infer<typeof demoTokenBody>) {
    return { data: await this.tokens.issue(body.userId) };
  }
}
