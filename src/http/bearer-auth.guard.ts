import { createParamDecorator, Injectable, type CanActivate, type ExecutionContext } from '@nestjs/common';
import type { Request } from 'express';

import { AppError, ErrorCode } from '../common/app-error.js';
import { TokenVerifier, type Identity } from '../auth/token-verifier.service.js';

/** A request that passed BearerAuthGuard. */
export interface AuthenticatedRequest extends Request {
  identity: Identity;
}

/**
 * REST authentication: `Authorization: Bearer <jwt>`, verified by the same TokenVerifier
 * as the socket handshake. A missing or malformed header is `unauthorized`; an expired
 * token `token_expired` (both 401, PROTOCOL.md section 3).
 */
@Injectable()
export class BearerAuthGuard implements CanActivate {
  constructor(private readonly verifier: TokenVerifier) {}

  async canActivate(context: ExecutionContext): Promise<boolean> {
    const request = context.switchToHttp().getRequest<AuthenticatedRequest>();
    const header = request.headers.authorization;
    const match = typeof header === 'string' ? /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header) : null;
    if (!match) throw new AppError(ErrorCode.Unauthorized, 'an Authorization: Bearer <token> header is required');
    request.identity = await this.verifier.verify(match[1]);
    return true;
  }
}

/** The verified identity of the caller (after BearerAuthGuard). */
export const Caller = createParamDecorator(
  (_data: unknown, context: ExecutionContext): Identity =>
    context.switchToHttp().getRequest<AuthenticatedRequest>().identity,
);

/**
 * The user a request acts for. A user token acts for its own `sub`; naming another user
 * is `forbidden`. A service token acts for the user the request names, or for no one
 * (null) when it names none.
 */
export function actingUserOf(caller: Identity, named: string | undefined): string | null {
  if (!caller.isService) {
    if (named !== undefined && named !== caller.userId) {
      throw AppError.forbidden('a user token acts only for its own user');
    }
    return caller.userId;
  }
  return named ?? null;
}

/** Like actingUserOf, for operations that need a user: a service token must name one (`field`). */
export function requireActingUser(caller: Identity, named: string | undefined, field = 'userId'): string {
  const userId = actingUserOf(caller, named);
  if (userId === null) {
    throw AppError.badRequest(`a service token must name the user it acts for in ${field}`, {
      problems: [{ path: field, message: 'required with a service token' }],
    });
  }
  return userId;
}
