import { Body, Controller, Get, HttpCode, Param, Post, Query, Res, UseGuards, UsePipes } from '@nestjs/common';
import { ApiBearerAuth, ApiTags } from '@nestjs/swagger';
import type { Response } from 'express';
import type { z } from 'zod';

import type { Identity } from '../auth/token-verifier.service.js';
import { actingUserOf, BearerAuthGuard, Caller, requireActingUser } from '../http/bearer-auth.guard.js';
import { conversationIdSchema } from '../http/common.schemas.js';
import { RestRoute } from '../http/openapi.js';
import { RequestValidationPipe } from '../http/request-validation.js';
import {
  actingUserQuery,
  conversationListReply,
  conversationReply,
  createConversationBody,
  listConversationsQuery,
  readBody,
  readReply,
  toConversationJson,
  toConversationSummaryJson,
} from './conversations.schemas.js';
import { ConversationsService } from './conversations.service.js';
import { ReadMarksService } from './read-marks.service.js';

const DEFAULT_PAGE_SIZE = 20;

/** REST: creating, listing and reading conversations, and read marks (PROTOCOL.md section 4). */
@ApiTags('conversations')
@ApiBearerAuth('bearer')
@UseGuards(BearerAuthGuard)
@UsePipes(RequestValidationPipe)
@Controller('v1/conversations')
export class ConversationsController {
  constructor(
    private readonly conversations: ConversationsService,
    private readonly readMarks: ReadMarksService,
  ) {}

  @Post()
  @RestRoute({
    summary: 'Create a conversation',
    description:
      'A user caller is always a member (listed or not) and the owner. A direct conversation has exactly two ' +
      'members and is unique per pair: creating it again answers 200 with the existing one.',
    responses: [
      { status: 201, schema: conversationReply, description: 'created' },
      { status: 200, schema: conversationReply, description: 'the direct conversation of this pair already existed' },
    ],
    errors: [400, 403],
  })
  async create(
    @Caller() caller: Identity,
    @Body({ schema: createConversationBody }) body: z.infer<typeof createConversationBody>,
    @Res({ passthrough: true }) response: Response,
  ) {
    const { userId, ...input } = body;
    const { conversation, created } = await this.conversations.create(actingUserOf(caller, userId), input);
    response.status(created ? 201 : 200);
    return { data: toConversationJson(conversation) };
  }

  @Get()
  @RestRoute({
    summary: "List the acting user's conversations",
    description: 'Newest activity first, `limit` at a time; follow `nextCursor` until it is null.',
    responses: [{ status: 200, schema: conversationListReply, description: 'a page' }],
    errors: [400, 403],
  })
  async list(
    @Caller() caller: Identity,
    @Query({ schema: listConversationsQuery }) query: z.infer<typeof listConversationsQuery>,
  ) {
    const page = await this.conversations.listFor(requireActingUser(caller, query.userId), {
      cursor: query.cursor,
      limit: query.limit ?? DEFAULT_PAGE_SIZE,
    });
    return { data: page.conversations.map(toConversationSummaryJson), nextCursor: page.nextCursor };
  }

  @Get(':id')
  @RestRoute({
    summary: 'Get a conversation with its members',
    description: 'Members only; a service token naming no user may read any conversation.',
    responses: [{ status: 200, schema: conversationReply, description: 'the conversation' }],
    errors: [400, 403, 404],
  })
  async get(
    @Caller() caller: Identity,
    @Param('id', { schema: conversationIdSchema }) id: string,
    @Query({ schema: actingUserQuery }) query: z.infer<typeof actingUserQuery>,
  ) {
    return { data: toConversationJson(await this.conversations.getFor(actingUserOf(caller, query.userId), id)) };
  }

  @Post(':id/read')
  @HttpCode(200)
  @RestRoute({
    summary: 'Move the read mark forward',
    description:
      'The mark only moves forward (a lower seq leaves it unchanged) and never past the last seq. When it moves, ' +
      "a `receipt` with status 'read' goes to the conversation's joined sockets.",
    responses: [{ status: 200, schema: readReply, description: 'the read mark after the update' }],
    errors: [400, 403, 404],
  })
  async read(
    @Caller() caller: Identity,
    @Param('id', { schema: conversationIdSchema }) id: string,
    @Body({ schema: readBody }) body: z.infer<typeof readBody>,
  ) {
    return { data: await this.readMarks.markRead(requireActingUser(caller, body.userId), id, body.seq) };
  }
}
