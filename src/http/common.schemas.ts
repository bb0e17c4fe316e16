import { z } from 'zod';

import { USER_ID } from '../common/ids.js';

/** Schemas shared by the REST handlers (each handler's own schemas sit beside it). */

const UUID = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;

/** A user id: a token's `sub` (1 to 128 characters, no control characters). */
export const userIdSchema = z
  .string({ error: 'must be a string' })
  .min(1, 'must not be empty')
  .max(128, 'must be at most 128 characters')
  .regex(USER_ID, 'must not contain control characters');

export const conversationIdSchema = z.string().regex(UUID, 'must be a UUID').describe('conversation id (UUID)');

/** A client install's id, `^[A-Za-z0-9_-]{1,64}$` (PROTOCOL.md section 1). */
export const deviceIdSchema = z
  .string()
  .regex(/^[A-Za-z0-9_-]{1,64}$/, 'must match ^[A-Za-z0-9_-]{1,64}$')
  .describe('the client install id, as in the socket handshake');

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
