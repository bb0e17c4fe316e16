import { Injectable, type ArgumentMetadata, type PipeTransform } from '@nestjs/common';
import { z } from 'zod';

import { AppError, ErrorCode } from '../common/app-error.js';

/** One validation problem, as listed in `details.problems` (the socket side uses the same shape). */
interface Problem {
  path: string;
  message: string;
}

/**
 * The HTTP twin of the gateway's `parsePayload`: validates one part of a request against
 * its zod schema, either a whole body or query (`part`, which must be an object) or one
 * named field of it (`name`, which prefixes the problem paths). Every problem is listed
 * in `details.problems`; a list over a size limit (a custom issue flagged `tooLarge`)
 * is `payload_too_large`.
 */
function parseRequest<T>(schema: z.ZodType<T>, value: unknown, part: { whole: string } | { name: string }): T {
  let input = value;
  if ('whole' in part) {
    input = value === undefined || value === null ? {} : value;
    if (typeof input !== 'object' || Array.isArray(input)) {
      throw AppError.badRequest(`the ${part.whole} must be a JSON object`, {
        problems: [{ path: '', message: 'must be an object' }],
      });
    }
  }
  const name = 'name' in part ? part.name : undefined;
  const result = schema.safeParse(input);
  if (result.success) return result.data;
  const problems: Problem[] = result.error.issues.map((issue) => ({
    path: [...(name ? [name] : []), ...issue.path.map(String)].join('.'),
    message: issue.message,
  }));
  const summary = problems.map((p) => (p.path ? `${p.path}: ${p.message}` : p.message)).join('; ');
  const tooLarge = result.error.issues.some(
    (issue) => issue.code === 'custom' && (issue.params as { tooLarge?: boolean } | undefined)?.tooLarge,
  );
  if (tooLarge) throw new AppError(ErrorCode.PayloadTooLarge, summary, { problems });
  throw AppError.badRequest(summary, { problems });
}

/**
 * Validates every `@Body({ schema })`, `@Query({ schema })` and `@Param(name, { schema })`
 * of a controller with its zod schema (Nest hands the schema over in the argument's
 * metadata, and @nestjs/swagger documents the same schema). Arguments without a schema
 * and custom decorators pass untouched.
 */
@Injectable()
export class RequestValidationPipe implements PipeTransform {
  transform(value: unknown, metadata: ArgumentMetadata): unknown {
    const { schema, type } = metadata;
    if (!schema || type === 'custom') return value;
    if (!(schema instanceof z.ZodType)) throw new Error('RequestValidationPipe only knows zod schemas');
    return parseRequest(schema, value, metadata.data ? { name: metadata.data } : { whole: type });
  }
}
