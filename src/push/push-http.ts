import http, { type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http';
import https from 'node:https';

import { Inject, Injectable } from '@nestjs/common';

import { PUSH_OPTIONS, type PushOptions } from './push.options.js';

/** An HTTP answer, its body cut at MAX_REPLY_BYTES. */
export interface HttpReply {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/**
 * Push services answer with a short JSON or nothing; a Web Push endpoint is a URL a
 * client chose, so its answer is read no further than this.
 */
const MAX_REPLY_BYTES = 64 * 1024;

/**
 * HTTP/1.1 for FCM, its token endpoint and Web Push services: keep-alive agents, so each
 * origin's connections are reused; a deadline on the whole request (connect, send, answer);
 * an answer read up to MAX_REPLY_BYTES. TLS trusts the system's roots plus
 * NODE_EXTRA_CA_CERTS, or PushOptions.ca instead (tests, a TLS-terminating proxy). Plain
 * http is used only where the configuration allowed it (FCM_BASE_URL or token_uri on
 * localhost); Web Push endpoints are https by validation.
 */
@Injectable()
export class PushHttp {
  private readonly httpsAgent: https.Agent;
  private readonly httpAgent = new http.Agent({ keepAlive: true });

  constructor(@Inject(PUSH_OPTIONS) private readonly options: PushOptions) {
    this.httpsAgent = new https.Agent({ keepAlive: true, ...(options.ca ? { ca: options.ca } : {}) });
  }

  /** POSTs `body`; rejects on a network error or when the deadline passes without a whole answer. */
  post(url: string, headers: OutgoingHttpHeaders, body: string | Buffer | null): Promise<HttpReply> {
    const target = new URL(url);
    const secure = target.protocol === 'https:';
    const signal = AbortSignal.timeout(this.options.requestTimeoutMs);
    return new Promise<HttpReply>((resolve, reject) => {
      const request = (secure ? https : http).request(
        target,
        { method: 'POST', headers, agent: secure ? this.httpsAgent : this.httpAgent, signal },
        (response) => {
          const chunks: Buffer[] = [];
          let size = 0;
          const done = () =>
            resolve({
              status: response.statusCode ?? 0,
              headers: response.headers,
              body: Buffer.concat(chunks).subarray(0, MAX_REPLY_BYTES).toString('utf8'),
            });
          response.on('data', (chunk: Buffer) => {
            chunks.push(chunk);
            size += chunk.length;
            if (size < MAX_REPLY_BYTES) return;
            // Enough to classify the answer: the rest is not read, and that connection goes.
            done();
            response.destroy();
          });
          response.on('end', done);
          response.on('error', reject);
        },
      );
      request.on('error', reject);
      request.end(body ?? undefined);
    });
  }

  /** Closes the idle connections. */
  close(): void {
    this.httpsAgent.destroy();
    this.httpAgent.destroy();
  }
}
