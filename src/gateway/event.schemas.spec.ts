import { describe, expect, it } from 'vitest';

import { AppError } from '../common/app-error.js';
import { ackSchema, getUnackedSchema, historySchema, parsePayload, sendSchema, typingSchema } from './event.schemas.js';

const CONVERSATION = '2f1c8e9a-6b1d-4c55-9a57-0d2b8f1e3c4d';

function errorOf(run: () => unknown): AppError {
  try {
    run();
  } catch (error) {
    if (error instanceof AppError) return error;
    throw error;
  }
  throw new Error('expected a validation error');
}

describe('event schemas', () => {
  it('accepts a well-formed send and keeps only known fields', () => {
    const payload = parsePayload(sendSchema, {
      conversationId: CONVERSATION,
      clientMsgId: 'abc_DEF-123',
      body: 'hi',
      contentType: 'text/markdown; charset=utf-8',
      extra: 'ignored',
    });
    expect(payload).toEqual({
      conversationId: CONVERSATION,
      clientMsgId: 'abc_DEF-123',
      body: 'hi',
      contentType: 'text/markdown; charset=utf-8',
    });
  });

  it('lists each problem of a bad payload as bad_request', () => {
    const error = errorOf(() => parsePayload(sendSchema, { conversationId: 'x', clientMsgId: 'has space', body: 5 }));
    expect(error.code).toBe('bad_request');
    const paths = (error.details as { problems: { path: string }[] }).problems.map((p) => p.path).sort();
    expect(paths).toEqual(['body', 'clientMsgId', 'conversationId']);
  });

  it('refuses payloads that are not objects', () => {
    for (const payload of ['text', 42, [1], true]) {
      expect(errorOf(() => parsePayload(typingSchema, payload)).code).toBe('bad_request');
    }
    // No payload at all is an empty object: here that lacks the required fields.
    expect(errorOf(() => parsePayload(typingSchema, undefined)).code).toBe('bad_request');
  });

  it('answers payload_too_large for more ids than maxBatch, bad_request for none', () => {
    const schema = ackSchema(3);
    expect(parsePayload(schema, { messageIds: ['a', 'b', 'c'] }).messageIds).toHaveLength(3);
    expect(errorOf(() => parsePayload(schema, { messageIds: ['a', 'b', 'c', 'd'] })).code).toBe('payload_too_large');
    expect(errorOf(() => parsePayload(schema, { messageIds: [] })).code).toBe('bad_request');
  });

  it('bounds page sizes', () => {
    expect(parsePayload(getUnackedSchema(100), {}).limit).toBeUndefined();
    expect(errorOf(() => parsePayload(getUnackedSchema(100), { limit: 101 })).code).toBe('bad_request');
    expect(errorOf(() => parsePayload(historySchema, { conversationId: CONVERSATION, limit: 0 })).code).toBe(
      'bad_request',
    );
    expect(errorOf(() => parsePayload(historySchema, { conversationId: CONVERSATION, beforeSeq: 1.5 })).code).toBe(
      'bad_request',
    );
  });
});
