import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';

import { Module } from '@nestjs/common';
import { LoggerModule } from 'nestjs-pino';

import { AppConfig } from '../config/app-config.js';

/** Paths pino must never print: credentials, keys and message contents. */
const REDACTED_PATHS = [
  'req.headers.authorization',
  'req.headers.cookie',
  'req.query.token',
  'token',
  'auth.token',
  'body',
  'ciphertext',
  'apnsToken',
  '*.token',
  '*.body',
  '*.ciphertext',
  '*.apnsToken',
];

const REQUEST_ID = /^[A-Za-z0-9._-]{1,128}$/;

/** Structured JSON logs (pino) with a request id on every line of a request. */
@Module({
  imports: [
    LoggerModule.forRootAsync({
      inject: [AppConfig],
      useFactory: (config: AppConfig) => ({
        pinoHttp: {
          level: config.logLevel,
          redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
          genReqId: (request: IncomingMessage, response: ServerResponse) => {
            const header = request.headers['x-request-id'];
            const id = typeof header === 'string' && REQUEST_ID.test(header) ? header : randomUUID();
            response.setHeader('x-request-id', id);
            return id;
          },
          customProps: () => ({ service: 'messaging-service' }),
          // Health probes and scrapes would drown everything else.
          autoLogging: { ignore: (request: IncomingMessage) => /^\/(health|metrics)/.test(request.url ?? '') },
          serializers: {
            req: (request: { id: unknown; method: string; url: string }) => ({
              id: request.id,
              method: request.method,
              url: request.url.split('?')[0],
            }),
          },
        },
      }),
    }),
  ],
})
export class LoggingModule {}
