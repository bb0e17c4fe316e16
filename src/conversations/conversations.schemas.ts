import { z } from 'zod';

import { actingUserSchema, isoDateSchema, queryInt, seqSchema, userIdSchema } from '../http/common.schemas.js';
import { dataOf } from '../http/openapi.js';
import type { ConversationRecord, ConversationSummary } from './conversations.repository.js';

/** Request and reply schemas of the conversation and member routes (REST). */

const MAX_MEMBERS_PER_REQUEST = 1_000;

export const createConversationBody = z.object({
  kind: z.enum(['direct', 'group'], { error: "must be 'direct' or 'group'" }),
  memberIds: z
    .array(userIdSchema, { error: 'must be an array of user ids' })
    .max(MAX_MEMBERS_PER_REQUEST, `at most ${MAX_MEMBERS_PER_REQUEST} members`)
    .describe('the members; a user caller is always one, listed or not. direct: exactly two in all'),
  title: z
    .string({ error: 'must be a string' })
    .trim()
    .min(1, 'must not be empty')
    .max(200, 'must be at most 200 characters')
    .regex(/^\P{Cc}*$/u, 'must not contain control characters')
    .optional(),
  encryption: z
    .enum(['server', 'e2e'], { error: "must be 'server' or 'e2e'" })
    .optional()
    .describe("'server' (default): the service encrypts bodies at rest; 'e2e': clients send ciphertext"),
  userId: actingUserSchema.describe(
    'service tokens only: the user creating it (a member and its owner); without it the first member owns it',
  ),
});

export const listConversationsQuery = z.object({
  cursor: z.string().max(512, 'is not valid').optional().describe('nextCursor of the previous page'),
  limit: queryInt(1, 100).optional().describe('page size, 1 to 100 (default 20)'),
  userId: actingUserSchema,
});

export const actingUserQuery = z.object({ userId: actingUserSchema });

export const readBody = z.object({
  seq: seqSchema.describe('the highest seq read; the mark only moves forward, up to the last seq'),
  userId: actingUserSchema,
});

export const addMembersBody = z.object({
  userIds: z
    .array(userIdSchema, { error: 'must be an array of user ids' })
    .min(1, 'must list at least one user')
    .max(MAX_MEMBERS_PER_REQUEST, `at most ${MAX_MEMBERS_PER_REQUEST} users`),
  userId: actingUserSchema,
});

// Replies.

const memberSchema = z.object({
  userId: z.string(),
  role: z.enum(['owner', 'member']),
  readSeq: z.number().int().describe('the member’s read mark'),
  joinedAt: isoDateSchema,
});

const conversationFields = {
  id: z.string().describe('UUID'),
  kind: z.enum(['direct', 'group']),
  title: z.string().nullable(),
  encryption: z.enum(['server', 'e2e']),
  lastSeq: z.number().int().describe('seq of the latest message (0 before the first)'),
  createdAt: isoDateSchema,
  lastActivityAt: isoDateSchema.describe('when the latest message was sent (or the conversation created)'),
};

const conversationSchema = z
  .object({ ...conversationFields, members: z.array(memberSchema).describe('oldest member first') })
  .meta({ id: 'Conversation' });

const conversationSummarySchema = z
  .object({ ...conversationFields, readSeq: z.number().int().describe('the acting user’s read mark') })
  .meta({ id: 'ConversationSummary' });

export const conversationReply = dataOf(conversationSchema);
export const conversationListReply = z.object({
  data: z.array(conversationSummarySchema).describe('newest activity first'),
  nextCursor: z.string().nullable().describe('pass as ?cursor= for the next page; null on the last page'),
});
export const readReply = dataOf(z.object({ readSeq: z.number().int() }));
export const memberRemovedReply = dataOf(z.object({ conversationId: z.string(), userId: z.string() }));

export type ConversationJson = z.infer<typeof conversationSchema>;
export type ConversationSummaryJson = z.infer<typeof conversationSummarySchema>;

/** The fields a conversation and a list entry share. */
function commonJson(conversation: ConversationRecord | ConversationSummary) {
  return {
    id: conversation.id,
    kind: conversation.kind,
    title: conversation.title,
    encryption: conversation.encryption,
    lastSeq: conversation.lastSeq,
    createdAt: conversation.createdAt.toISOString(),
    lastActivityAt: conversation.lastActivityAt.toISOString(),
  };
}

export function toConversationJson(conversation: ConversationRecord): ConversationJson {
  return {
    ...commonJson(conversation),
    members: conversation.members.map((member) => ({
      userId: member.userId,
      role: member.role,
      readSeq: member.readSeq,
      joinedAt: member.joinedAt.toISOString(),
    })),
  };
}

export function toConversationSummaryJson(conversation: ConversationSummary): ConversationSummaryJson {
  return {
    ...commonJson(conversation),
    readSeq: conversation.readSeq,
  };
}
