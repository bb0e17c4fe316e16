import { Body, Controller, Get, Param, Post, Query, Res, UseGuards, UsePipes } from '@nestjs/common';
import { ApiBearerAuth, ApiTags } from '@nestjs/swagger';
import type { Response } from 'express';
import type { z } from 'zod';

import type { Identity } from '../auth/token-verifier.service.js';
import { BearerAuthGuard, Caller, requireActingUser } from '../http/bearer-auth.guard.js';
import { conversationIdSchema } from '../http/common.schemas.js';
import { RestRoute } from '../http/openapi.js';
import { RequestValidationPipe } from '../http/request-validation.js';
import { historyQuery, historyReply, REST_SENDER_DEVICE_ID, sendMessageBody, sendReply } from './messages.schemas.js';
import { MessagesService } from './messages.service.js';

/** REST: sending and reading messages, through the same MessagesService as the socket edge. */
@ApiTags('messages')
@ApiBearerAuth('bearer')
@UseGuards(BearerAuthGuard)
@UsePipes(RequestValidationPipe)
@Controller('v1/conversations/:id/messages')
export class MessagesController {
  constructor(private readonly messages: MessagesService) {}

  @Post()
  @RestRoute({
    summary: 'Send a message',
    description:
      'Same path as the socket `send`: idempotent per sender and clientMsgId, stored durably before the reply, ' +
      "then delivered to every device of every member (live or queued). Its senderDeviceId is '@rest'.",
    responses: [
      { status: 201, schema: sendReply, description: 'stored' },
      { status: 200, schema: sendReply, description: 'a duplicate clientMsgId: the original message' },
    ],
    errors: [400, 403, 404, 409, 413],
  })
  async send(
    @Caller() caller: Identity,
    @Param('id', { schema: conversationIdSchema }) id: string,
    @Body({ schema: sendMessageBody }) body: z.infer<typeof sendMessageBody>,
    @Res({ passthrough: true }) response: Response,
  ) {
    const { senderId, ...content } = body;
    const sender = { userId: requireActingUser(caller, senderId, 'senderId'), deviceId: REST_SENDER_DEVICE_ID };
    const sent = await this.messages.send(sender, { conversationId: id, ...content });
    response.status(sent.duplicate ? 200 : 201);
    return { data: sent };
  }

  @Get()
  @RestRoute({
    summary: 'Read message history',
    description:
      'Ascending seq. With only afterSeq, pages forward from it; otherwise pages backward from beforeSeq (or the ' +
      'latest). hasMore: more messages lie in the paging direction.',
    responses: [{ status: 200, schema: historyReply, description: 'a page' }],
    errors: [400, 403, 404],
  })
  async history(
    @Caller() caller: Identity,
    @Param('id', { schema: conversationIdSchema }) id: string,
    @Query({ schema: historyQuery }) query: z.infer<typeof historyQuery>,
  ) {
    const { userId, ...range } = query;
    const page = await this.messages.history(requireActingUser(caller, userId), { conversationId: id, ...range });
    return { data: page.messages, hasMore: page.hasMore };
  }
}
