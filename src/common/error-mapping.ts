import { randomUUID } from 'node:crypto';

import { AppError, ErrorCode } from './app-error.js';

/** An error as a client may see it: a contract code, a safe message, optional details. */
export interface PublicError {
  code: ErrorCode;
  message: string;
  details?: Record<string, unknown>;
  /** Set for `internal`: the id under which the cause was logged. */
  requestId?: string;
}

const UNAVAILABLE_PATTERNS = [
  /ECONNREFUSED/,
  /ECONNRESET/,
  /ETIMEDOUT/,
  /Connection terminated/i,
  /Connection is closed/i,
  /connect ECONN/i,
  /Can't reach database/i,
  /timeout exceeded when trying to connect/i,
  /MaxRetriesPerRequest/i,
  /Stream isn't writeable/i,
  /the database system is (starting|shutting) up/i,
  /terminating connection due to administrator command/i,
  /\b57P0[123]\b/,
];

/** True when the error means a dependency (PostgreSQL, Redis) is down. */
function isUnavailable(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const code = (error as { code?: unknown }).code;
  const text = `${error.name} ${error.message} ${typeof code === 'string' ? code : ''}`;
  return UNAVAILABLE_PATTERNS.some((pattern) => pattern.test(text));
}

/**
 * Maps anything thrown to what a client may see. AppErrors pass (but `internal` ones
 * lose their message); dependency outages become `unavailable`; everything else
 * becomes `internal` with a fresh request id, to be logged with the cause.
 */
export function toPublicError(error: unknown, requestId: string = randomUUID()): PublicError {
  if (error instanceof AppError && error.code !== ErrorCode.Internal) {
    return error.details === undefined
      ? { code: error.code, message: error.message }
      : { code: error.code, message: error.message, details: error.details };
  }
  if (isUnavailable(error)) {
    return {
      code: ErrorCode.Unavailable,
      message: 'a dependency is unavailable; retry later',
      details: { retryable: true },
    };
  }
  return { code: ErrorCode.Internal, message: 'internal error', details: { requestId }, requestId };
}
