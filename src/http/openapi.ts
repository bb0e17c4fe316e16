import { applyDecorators, type INestApplication } from '@nestjs/common';
import { ApiOperation, ApiResponse, DocumentBuilder, SwaggerModule } from '@nestjs/swagger';
import { z } from 'zod';

import { ErrorCode, HTTP_STATUS_BY_CODE } from '../common/app-error.js';

/** The error body of every REST error (PROTOCOL.md section 4). */
const errorBodySchema = z
  .object({
    error: z.object({
      code: z.enum(Object.values(ErrorCode) as [ErrorCode, ...ErrorCode[]]),
      message: z.string(),
      details: z
        .record(z.string(), z.unknown())
        .optional()
        .describe('for bad_request: `problems: [{ path, message }]`, one per problem'),
      requestId: z.string().describe('the id this request was logged under (also the x-request-id header)'),
    }),
  })
  .meta({ id: 'ErrorBody' });

const ERROR_DESCRIPTIONS: Record<number, string> = {
  400: 'bad_request: the request fails validation; details.problems lists each problem',
  401: 'unauthorized or token_expired: no valid bearer token',
  403: 'forbidden: not a member, or not allowed',
  404: 'not_found: no such conversation, member or device',
  409: 'conflict: a state clash (e.g. member already present)',
  413: 'payload_too_large: over a size limit',
};

/** `{ data: <schema> }`, the envelope of every successful reply. */
export function dataOf<T extends z.ZodType>(schema: T) {
  return z.object({ data: schema });
}

export interface RouteDoc {
  summary: string;
  description?: string;
  /** Successful replies: status → body schema (already enveloped) and what it means. */
  responses: { status: number; schema: z.ZodType; description: string }[];
  /** The error statuses this route can answer besides 401, 500 and 503. */
  errors: (400 | 403 | 404 | 409 | 413)[];
}

/**
 * Documents one REST route from the zod schemas it validates and answers with: request
 * schemas come from `@Body/@Query/@Param({ schema })` (read by @nestjs/swagger), replies
 * and errors from here.
 */
export function RestRoute(doc: RouteDoc): MethodDecorator {
  const errors = [...new Set([...doc.errors, 401])].sort();
  return applyDecorators(
    ApiOperation({ summary: doc.summary, description: doc.description }),
    ...doc.responses.map((r) =>
      ApiResponse({ status: r.status, description: r.description, standardSchema: r.schema }),
    ),
    ...errors.map((status) =>
      ApiResponse({ status, description: ERROR_DESCRIPTIONS[status], standardSchema: errorBodySchema }),
    ),
    ApiResponse({
      status: HTTP_STATUS_BY_CODE.unavailable,
      description: 'unavailable: PostgreSQL or Redis is down; retry later',
      standardSchema: errorBodySchema,
    }),
    ApiResponse({
      status: HTTP_STATUS_BY_CODE.internal,
      description: 'internal: anything else; carries the requestId it was logged under',
      standardSchema: errorBodySchema,
    }),
  );
}

/** Serves the OpenAPI document: the UI at `/docs`, the JSON at `/docs-json`. */
export function setupOpenApi(app: INestApplication): void {
  const config = new DocumentBuilder()
    .setTitle('messaging-service REST API')
    .setDescription(
      [
        'For internal services and apps (PROTOCOL.md section 4). Every route takes `Authorization: Bearer <jwt>`.',
        'User tokens act as their `sub`. Service tokens (scope `service`) act for the user a request names:',
        '`userId` (query for GET/DELETE, body for POST/PUT) or `senderId` when sending; where an operation',
        'needs a user and a service token names none, the answer is 400.',
        'Successful replies are `{ data: … }`; errors are `{ error: { code, message, details?, requestId } }`.',
      ].join(' '),
    )
    .setVersion('1')
    .addBearerAuth({ type: 'http', scheme: 'bearer', bearerFormat: 'JWT' }, 'bearer')
    .build();
  SwaggerModule.setup('docs', app, () => SwaggerModule.createDocument(app, config), {
    jsonDocumentUrl: 'docs-json',
    raw: ['json'],
  });
}
