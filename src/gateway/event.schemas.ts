import { z } from 'zod';

import type { RequestOf } from '@messaging-service/client/protocol';

import { AppError, ErrorCode } from '../common/app-error.js';
import { clientMsgIdSchema, contentTypeSchema, conversationIdSchema, seqSchema } from '../http/common.schemas.js';
import { recipientDevicesSchema } from '../messages/messages.schemas.js';

/** Schemas of the client events, one per event (PROTOCOL.md section 1). */

export const conversationRefSchema = z.object({ conversationId: conversationIdSchema });

export const sendSchema = z.object({
  conversationId: conversationIdSchema,
  clientMsgId: clientMsgIdSchema,
  body: z.string({ error: 'must be a string' }).optional(),
  ciphertext: z.string({ error: 'must be a base64 string' }).optional(),
  contentType: contentTypeSchema.optional(),
  recipientDevices: recipientDevicesSchema.optional(),
});

export const typingSchema = z.object({
  conversationId: conversationIdSchema,
  isTyping: z.boolean({ error: 'must be true or false' }),
});

export const readSchema = z.object({ conversationId: conversationIdSchema, seq: seqSchema });

export const historySchema = z.object({
  conversationId: conversationIdSchema,
  beforeSeq: seqSchema.optional(),
  afterSeq: seqSchema.optional(),
  limit: z
    .number({ error: 'must be a number' })
    .int('must be a whole number')
    .min(1, 'must be 1 to 100')
    .max(100, 'must be 1 to 100')
    .optional(),
});

export const authSchema = z.object({ token: z.string({ error: 'must be a string' }).min(1, 'required') });

export const pingSchema = z.object({ t: z.unknown().optional() });

/** `ack` and `get-unacked` depend on the configured maxBatch. */
export const ackSchema = (maxBatch: number) =>
  z.object({
    messageIds: z
      .array(z.string({ error: 'must be a string' }).min(1).max(128), { error: 'must be an array of message ids' })
      .min(1, 'must list at least one id')
      .superRefine((ids, ctx) => {
        if (ids.length > maxBatch) {
          ctx.addIssue({ code: 'custom', message: `at most ${maxBatch} ids`, params: { tooLarge: true } });
        }
      }),
  });

export const getUnackedSchema = (maxBatch: number) =>
  z.object({
    limit: z
      .number({ error: 'must be a number' })
      .int('must be a whole number')
      .min(1, `must be 1 to ${maxBatch}`)
      .max(maxBatch, `must be 1 to ${maxBatch}`)
      .optional(),
  });

/**
 * Validates a payload: not an object → bad_request; each problem listed in
 * `details.problems`. A list over a size limit is `payload_too_large`.
 */
export function parsePayload<T>(schema: z.ZodType<T>, payload: unknown): T {
  const input = payload === undefined || payload === null ? {} : payload;
  if (typeof input !== 'object' || Array.isArray(input)) {
    throw AppError.badRequest('payload must be an object', { problems: [{ path: '', message: 'must be an object' }] });
  }
  const result = schema.safeParse(input);
  if (result.success) return result.data;
  const problems = result.error.issues.map((issue) => ({ path: issue.path.join('.'), message: issue.message }));
  const tooLarge = result.error.issues.some(
    (issue) => issue.code === 'custom' && (issue.params as { tooLarge?: boolean } | undefined)?.tooLarge,
  );
  if (tooLarge)
    throw new AppError(ErrorCode.PayloadTooLarge, problems.map((p) => `${p.path}: ${p.message}`).join('; '), {
      problems,
    });
  throw AppError.badRequest(problems.map((p) => (p.path ? `${p.path}: ${p.message}` : p.message)).join('; '), {
    problems,
  });
}

// The schemas and the shared event map must not drift: each schema's output type is the
// event's request type, both ways, or the build fails here.
type Assignable<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
// Optional fields make two shapes assignable both ways despite a renamed field: the keys must agree too.
type Same<A, B> = Assignable<A, B> extends true ? Assignable<keyof A, keyof B> : false;
const _schemasMatchTheProtocol: {
  join: Same<z.infer<typeof conversationRefSchema>, RequestOf<'join'>>;
  leave: Same<z.infer<typeof conversationRefSchema>, RequestOf<'leave'>>;
  send: Same<z.infer<typeof sendSchema>, RequestOf<'send'>>;
  typing: Same<z.infer<typeof typingSchema>, RequestOf<'typing'>>;
  ack: Same<z.infer<ReturnType<typeof ackSchema>>, RequestOf<'ack'>>;
  getUnacked: Same<z.infer<ReturnType<typeof getUnackedSchema>>, RequestOf<'get-unacked'>>;
  read: Same<z.infer<typeof readSchema>, RequestOf<'read'>>;
  history: Same<z.infer<typeof historySchema>, RequestOf<'history'>>;
  auth: Same<z.infer<typeof authSchema>, RequestOf<'auth'>>;
  ping: Same<z.infer<typeof pingSchema>, RequestOf<'ping'>>;
} = {
  join: true,
  leave: true,
  send: true,
  typing: true,
  ack: true,
  getUnacked: true,
  read: true,
  history: true,
  auth: true,
  ping: true,
};
