import { z } from 'zod';

import {
  actingUserSchema,
  clientMsgIdSchema,
  contentTypeSchema,
  isoDateSchema,
  queryInt,
  seqSchema,
  USER_DEVICE,
  userIdSchema,
} from '../http/common.schemas.js';
import { dataOf } from '../http/openapi.js';

/**
 * Request and reply schemas of the message routes (REST). The field rules are the
 * socket `send`/`history` ones (PROTOCOL.md section 1).
 */

/** The sending device of every REST send: no real deviceId can contain '@'. */
export const REST_SENDER_DEVICE_ID = '@rest';

/** Most devices an e2e send may name: far above any real group's, low enough to bound the check. */
const MAX_RECIPIENT_DEVICES = 1_024;

/**
 * `recipientDevices` of an e2e send (socket and REST): the `userId/deviceId` pairs whose
 * keys the client sealed the message key to (a deviceId has no '/', so the last one splits).
 */
export const recipientDevicesSchema = z
  .array(z.string({ error: 'must be a string' }).regex(USER_DEVICE, 'must be userId/deviceId'), {
    error: 'must be an array of userId/deviceId strings',
  })
  .max(MAX_RECIPIENT_DEVICES, `at most ${MAX_RECIPIENT_DEVICES} devices`)
  .describe(
    'e2e conversations only: the userId/deviceId pairs the message key was sealed to. When they differ from the ' +
      "current members' devices that have a published key (the sending device aside), nothing is stored and the " +
      'reply is 409 devices_changed with details.missing and details.extra.',
  );

export const sendMessageBody = z.object({
  clientMsgId: clientMsgIdSchema.describe(
    'makes the send idempotent per sender: resending it returns the original (200, duplicate: true)',
  ),
  body: z.string({ error: 'must be a string' }).optional().describe('text, for server-encrypted conversations'),
  ciphertext: z
    .string({ error: 'must be a base64 string' })
    .optional()
    .describe('base64 of the end-to-end encrypted bytes, for e2e conversations'),
  contentType: contentTypeSchema.optional().describe('default text/plain'),
  recipientDevices: recipientDevicesSchema.optional(),
  senderId: userIdSchema
    .optional()
    .describe('service tokens only (required for them): the user who sends; user tokens send as their sub'),
});

export const historyQuery = z.object({
  beforeSeq: queryInt(0, Number.MAX_SAFE_INTEGER).optional().describe('only messages with a lower seq'),
  afterSeq: queryInt(0, Number.MAX_SAFE_INTEGER).optional().describe('only messages with a higher seq'),
  limit: queryInt(1, 100).optional().describe('page size, 1 to 100 (default 50)'),
  userId: actingUserSchema,
});

const messageSchema = z
  .object({
    id: z.string().describe('UUID'),
    conversationId: z.string(),
    seq: seqSchema.describe('counts from 1 in each conversation, no gaps'),
    senderId: z.string(),
    senderDeviceId: z.string().describe(`the sending device; '${REST_SENDER_DEVICE_ID}' for REST sends`),
    clientMsgId: z.string(),
    contentType: z.string(),
    body: z.string().optional().describe('server-encrypted conversations'),
    ciphertext: z.string().optional().describe('e2e conversations: base64'),
    createdAt: isoDateSchema,
  })
  .meta({ id: 'Message' });

export const sendReply = dataOf(
  z.object({ message: messageSchema, duplicate: z.boolean().describe('true: the clientMsgId was already sent') }),
);

export const historyReply = z.object({
  data: z.array(messageSchema).describe('ascending seq'),
  hasMore: z.boolean().describe('more messages lie in the paging direction'),
});
