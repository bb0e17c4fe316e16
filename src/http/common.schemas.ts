import { z } from 'zod';

import { DEVICE_ID, USER_ID, UUID } from '../common/ids.js';

/**
 * The schemas of the fields the wire contract defines once (PROTOCOL.md section 1): the
 * REST routes, the gateway's event schemas and its handshake all validate with these, so
 * each rule and its error message live in one place. A route's or an event's own schemas
 * sit beside it.
 */

/** A send's idempotency key, chosen by the client. */
const CLIENT_MSG_ID = /^[A-Za-z0-9_-]{1,64}$/;
const CONTENT_TYPE =
  /^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}\/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}(\s*;\s*[A-Za-z0-9!#$&^_.+-]+=("[^"]*"|[A-Za-z0-9!#$&^_.+-]+))*$/;

/** The pattern between `^` and `$`, to build a larger pattern from. */
const inner = (pattern: RegExp): string => pattern.source.slice(1, -1);

/** `userId/deviceId`, one device of a user (a deviceId has no '/', so the last one splits). */
export const USER_DEVICE = new RegExp(`^${inner(USER_ID)}\\/${inner(DEVICE_ID)}$`, 'u');

/** A user id: a token's `sub` (1 to 128 characters, no control characters). */
export const userIdSchema = z
  .string({ error: 'must be a string' })
  .min(1, 'must not be empty')
  .max(128, 'must be at most 128 characters')
  .regex(USER_ID, 'must not contain control characters');

export const conversationIdSchema = z
  .string({ error: 'must be a string' })
  .regex(UUID, 'must be a UUID')
  .describe('conversation id (UUID)');

export const deviceIdSchema = z
  .string({ error: 'must be a string' })
  .regex(DEVICE_ID, `must match ${DEVICE_ID.source}`)
  .describe('the client install id, as in the socket handshake');

export const clientMsgIdSchema = z
  .string({ error: 'must be a string' })
  .regex(CLIENT_MSG_ID, `must match ${CLIENT_MSG_ID.source}`);

export const contentTypeSchema = z
  .string({ error: 'must be a string' })
  .max(255)
  .regex(CONTENT_TYPE, 'must be a MIME type like text/plain');

/** A message's place in its conversation (a read mark, a history bound). */
export const seqSchema = z
  .number({ error: 'must be a number' })
  .int('must be a whole number')
  .min(0, 'must be 0 or more')
  .max(Number.MAX_SAFE_INTEGER);

export const ACTING_USER_DOC = 'service tokens only: the user to act for (user tokens act for their own sub)';

/** `userId` naming the user a service token acts for (query of GET/DELETE, body of POST/PUT). */
export const actingUserSchema = userIdSchema.optional().describe(ACTING_USER_DOC);

/** A whole number from a query string (`?limit=20`). */
export const queryInt = (min: number, max: number) =>
  z.coerce
    .number({ error: 'must be a number' })
    .int('must be a whole number')
    .min(min, `must be ${min} to ${max}`)
    .max(max, `must be ${min} to ${max}`);

export const isoDateSchema = z.string().describe('ISO-8601 timestamp');
