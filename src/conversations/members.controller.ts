import { Body, Controller, Delete, Param, Post, Query, UseGuards, UsePipes } from '@nestjs/common';
import { ApiBearerAuth, ApiTags } from '@nestjs/swagger';
import type { z } from 'zod';

import type { Identity } from '../auth/token-verifier.service.js';
import { actingUserOf, BearerAuthGuard, Caller } from '../http/bearer-auth.guard.js';
import { conversationIdSchema, userIdSchema } from '../http/common.schemas.js';
import { RestRoute } from '../http/openapi.js';
import { RequestValidationPipe } from '../http/request-validation.js';
import {
  actingUserQuery,
  addMembersBody,
  conversationReply,
  memberRemovedReply,
  toConversationJson,
} from './conversations.schemas.js';
import { MembersService, type MemberActor } from './members.service.js';

/** REST: adding and removing conversation members (PROTOCOL.md section 4). */
@ApiTags('members')
@ApiBearerAuth('bearer')
@UseGuards(BearerAuthGuard)
@UsePipes(RequestValidationPipe)
@Controller('v1/conversations/:id/members')
export class MembersController {
  constructor(private readonly members: MembersService) {}

  @Post()
  @RestRoute({
    summary: 'Add members to a group conversation',
    description:
      'Any member may add; a service token may act for no user. They receive messages from now on, and ' +
      "`membership` 'added' goes to the conversation's joined sockets and the added users. " +
      'An id already present, or a direct conversation, is 409 (nothing is added).',
    responses: [{ status: 201, schema: conversationReply, description: 'the conversation with its members' }],
    errors: [400, 403, 404, 409],
  })
  async add(
    @Caller() caller: Identity,
    @Param('id', { schema: conversationIdSchema }) id: string,
    @Body({ schema: addMembersBody }) body: z.infer<typeof addMembersBody>,
  ) {
    return { data: toConversationJson(await this.members.add(actorOf(caller, body.userId), id, body.userIds)) };
  }

  @Delete(':userId')
  @RestRoute({
    summary: 'Remove a member, or leave',
    description:
      'A member may remove itself (leave); removing someone else takes the owner or a service token acting for ' +
      'no user. The path `userId` is who is removed; the query `userId` is who acts (service tokens only). ' +
      "The removed user's sockets leave the conversation at once and receive nothing further of it. " +
      'Direct conversations keep their members (409).',
    responses: [{ status: 200, schema: memberRemovedReply, description: 'removed' }],
    errors: [400, 403, 404, 409],
  })
  async remove(
    @Caller() caller: Identity,
    @Param('id', { schema: conversationIdSchema }) id: string,
    @Param('userId', { schema: userIdSchema.describe('the member to remove') }) userId: string,
    @Query({ schema: actingUserQuery }) query: z.infer<typeof actingUserQuery>,
  ) {
    await this.members.remove(actorOf(caller, query.userId), id, userId);
    return { data: { conversationId: id, userId } };
  }
}

function actorOf(caller: Identity, named: string | undefined): MemberActor {
  const userId = actingUserOf(caller, named);
  return userId === null ? { kind: 'service' } : { kind: 'user', userId };
}
