import type { ErrorCode } from './protocol.js';

/**
 * Codes of the SDK's own failures, beside the wire codes (PROTOCOL.md section 3):
 * `timeout` (no reply in time), `closed` (the client was closed), `listener_error` (an app
 * listener threw), `storage_error` (the storage refused a write), `token_error` (the token
 * provider threw).
 */
export type ClientErrorCode = ErrorCode | 'timeout' | 'closed' | 'listener_error' | 'storage_error' | 'token_error';

/**
 * The one error type of the SDK: every rejected promise and every `'error'` event carries one.
 *
 * @example
 *   try { await client.send(id, { body: 'hi' }); }
 *   catch (error) { if (error instanceof ClientError && error.code === 'forbidden') leaveScreen(); }
 */
export class ClientError extends Error {
  constructor(
    readonly code: ClientErrorCode,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
    this.name = 'ClientError';
  }

  /** Wraps anything thrown into a ClientError (kept as is when it already is one). */
  static from(error: unknown, code: ClientErrorCode): ClientError {
    if (error instanceof ClientError) return error;
    const message = error instanceof Error ? error.message : String(error);
    return new ClientError(code, message, { cause: error });
  }
}

/** Send errors that no retry can fix: the send is rejected and leaves the outbox (SDK.md "Sending"). */
export const PERMANENT_SEND_ERRORS: ReadonlySet<string> = new Set<ErrorCode>([
  'bad_request',
  'forbidden',
  'not_found',
  'payload_too_large',
  // Not listed by SDK.md, but a retry can never succeed either: a state clash, or an
  // event the server does not know (an SDK newer than the service).
  'conflict',
  'unknown_event',
]);
