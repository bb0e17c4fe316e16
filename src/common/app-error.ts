import type { ErrorCode as WireErrorCode } from '@messaging-service/client/protocol';

/** The error codes of the wire contract (PROTOCOL.md section 3), typed by the shared protocol. */
export const ErrorCode = {
  BadRequest: 'bad_request',
  Unauthorized: 'unauthorized',
  TokenExpired: 'token_expired',
  Forbidden: 'forbidden',
  NotFound: 'not_found',
  Conflict: 'conflict',
  DevicesChanged: 'devices_changed',
  PayloadTooLarge: 'payload_too_large',
  RateLimited: 'rate_limited',
  UnknownEvent: 'unknown_event',
  SessionReplaced: 'session_replaced',
  Unavailable: 'unavailable',
  Internal: 'internal',
} as const satisfies Record<string, WireErrorCode>;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];
// Every wire code has a name above: a code added to the protocol breaks this line until it does.
const _everyWireCodeNamed: [WireErrorCode] extends [ErrorCode] ? true : never = true;

/** HTTP status for each code; codes that only exist on sockets have none. */
export const HTTP_STATUS_BY_CODE: Record<ErrorCode, number> = {
  bad_request: 400,
  unauthorized: 401,
  token_expired: 401,
  forbidden: 403,
  not_found: 404,
  conflict: 409,
  devices_changed: 409,
  payload_too_large: 413,
  rate_limited: 429,
  unknown_event: 400,
  session_replaced: 409,
  unavailable: 503,
  internal: 500,
};

/** The one error type of the service: a contract code, a safe message, optional details. */
export class AppError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
    this.name = 'AppError';
  }

  static badRequest(message: string, details?: Record<string, unknown>): AppError {
    return new AppError(ErrorCode.BadRequest, message, details);
  }

  static forbidden(message = 'not allowed'): AppError {
    return new AppError(ErrorCode.Forbidden, message);
  }

  static notFound(message: string): AppError {
    return new AppError(ErrorCode.NotFound, message);
  }
}
