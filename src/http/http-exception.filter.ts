import { randomUUID } from 'node:crypto';

import { Catch, HttpException, Logger, type ArgumentsHost, type ExceptionFilter } from '@nestjs/common';
import type { Request, Response } from 'express';

import { AppError, ErrorCode, HTTP_STATUS_BY_CODE } from '../common/app-error.js';
import { toPublicError, type PublicError } from '../common/error-mapping.js';
import type { MetricsService } from '../metrics/metrics.service.js';

/** Nest's and Express's own HTTP errors (unknown route, body-parser) in contract codes. */
const CODE_BY_STATUS: Record<number, ErrorCode> = {
  400: ErrorCode.BadRequest,
  401: ErrorCode.Unauthorized,
  403: ErrorCode.Forbidden,
  404: ErrorCode.NotFound,
  409: ErrorCode.Conflict,
  413: ErrorCode.PayloadTooLarge,
  429: ErrorCode.RateLimited,
  503: ErrorCode.Unavailable,
};

/** The body-parser's messages that are safe to show (the rest say too much or too little). */
const BODY_PARSER_MESSAGES: Record<string, string> = {
  'entity.parse.failed': 'the body is not valid JSON',
  'entity.too.large': 'the body is too large',
  'entity.verify.failed': 'the body could not be verified',
  'encoding.unsupported': 'the body encoding is not supported',
  'charset.unsupported': 'the body charset is not supported',
  'request.aborted': 'the request was aborted',
  'request.size.invalid': 'the body size does not match Content-Length',
  'parameters.too.many': 'the body has too many parameters',
};

/**
 * The one HTTP exception filter: every error leaves as
 * `{ error: { code, message, details?, requestId } }` with the status of its code
 * (PROTOCOL.md section 3). AppErrors keep their code; Nest's HTTP exceptions (an unknown
 * route is a NotFoundException) and body-parser errors (malformed JSON, too large) map
 * by status; dependency outages are `unavailable`; anything else is `internal`, logged
 * with its stack under the request id, and never shows its message.
 */
@Catch()
export class HttpExceptionFilter implements ExceptionFilter {
  private readonly logger = new Logger('Http');

  constructor(private readonly metrics: MetricsService) {}

  catch(exception: unknown, host: ArgumentsHost): void {
    const http = host.switchToHttp();
    const request = http.getRequest<Request & { id?: unknown }>();
    const response = http.getResponse<Response>();
    const requestId =
      typeof request.id === 'string' || typeof request.id === 'number' ? String(request.id) : randomUUID();

    if (response.headersSent) {
      // The reply went out already (the drain answers `unavailable` to a request that
      // outlasts the grace): a late failure has nobody left to tell.
      this.logger.warn({
        msg: `${request.method} ${request.originalUrl.split('?')[0]} failed after its reply was sent`,
        requestId,
        err: exception,
      });
      response.end();
      return;
    }
    const error = this.toPublic(exception, request, requestId);
    if (error.code === ErrorCode.Internal) {
      this.logger.error({
        msg: `${request.method} ${request.originalUrl.split('?')[0]} failed`,
        requestId,
        err: exception,
      });
    }
    this.metrics.errors.inc({ code: error.code, transport: 'http' });
    const status = HTTP_STATUS_BY_CODE[error.code];
    if (status === 401) response.setHeader('WWW-Authenticate', 'Bearer');
    if (error.code === ErrorCode.Unavailable) response.setHeader('Retry-After', '1');
    const { requestId: _omit, ...rest } = error;
    response.status(status).json({ error: { ...rest, requestId } });
  }

  private toPublic(exception: unknown, request: Request, requestId: string): PublicError {
    if (exception instanceof AppError) return toPublicError(exception, requestId);
    // Nest wraps body-parser's errors in an HttpException with the original as cause.
    const bodyParser = bodyParserError(exception instanceof HttpException ? exception.cause : exception);
    if (bodyParser) return bodyParser;
    if (exception instanceof HttpException) {
      const status = exception.getStatus();
      // Nest's NotFoundException for a path no controller serves.
      if (status === 404)
        return { code: ErrorCode.NotFound, message: `no route ${request.method} ${request.path.slice(0, 200)}` };
      const code = CODE_BY_STATUS[status] ?? (status < 500 ? ErrorCode.BadRequest : undefined);
      if (code) return { code, message: httpExceptionMessage(exception) };
    }
    return toPublicError(exception, requestId);
  }
}

function httpExceptionMessage(exception: HttpException): string {
  const body = exception.getResponse();
  if (typeof body === 'string') return body;
  const message = (body as { message?: unknown }).message;
  if (typeof message === 'string') return message;
  if (Array.isArray(message)) return message.map(String).join('; ');
  return exception.message;
}

/** Errors raised by body-parser carry `type` and a 4xx `status`. */
function bodyParserError(exception: unknown): PublicError | null {
  if (!(exception instanceof Error)) return null;
  const { type, status } = exception as { type?: unknown; status?: unknown };
  if (typeof type !== 'string' || typeof status !== 'number' || status < 400 || status >= 500) return null;
  const code = status === 413 ? ErrorCode.PayloadTooLarge : ErrorCode.BadRequest;
  return { code, message: BODY_PARSER_MESSAGES[type] ?? 'the request body could not be read' };
}
