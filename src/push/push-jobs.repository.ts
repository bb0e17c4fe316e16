import { Inject, Injectable, Logger } from '@nestjs/common';
import { Queue, UnrecoverableError, Worker, type Job } from 'bullmq';

import { AppConfig } from '../config/app-config.js';
import { connectRedis, type RedisClient } from '../redis/redis-client.js';
import { PUSH_OPTIONS, PUSH_QUEUE_NAME, pushQueuePrefixFor, type PushOptions } from './push.options.js';

/** One push: a message for one device. No token: it is read fresh when the job runs. */
export interface PushJobData {
  messageId: string;
  conversationId: string;
  seq: number;
  userId: string;
  deviceId: string;
  e2e: boolean;
}

/** One run of a job, as the handler sees it. */
export interface PushAttempt {
  data: PushJobData;
  /** 1 for the first try. */
  attempt: number;
  /** Tries this job gets at most. */
  attempts: number;
}

/**
 * Thrown by a handler for a failed try; `retryable: false` ends the job at once.
 * `retryAfterMs` (the provider's Retry-After) delays the next try at least that long.
 */
export class PushAttemptError extends Error {
  constructor(
    readonly reason: string,
    readonly retryable: boolean,
    readonly retryAfterMs?: number,
  ) {
    super(reason);
    this.name = 'PushAttemptError';
  }
}

/** Each retry waits up to 20% less than its exponential step, so retries spread out. */
const BACKOFF_JITTER = 0.2;
/** The job option naming the backoff below (a custom BullMQ strategy). */
const BACKOFF_TYPE = 'push';

/**
 * How long before try `attemptsMade + 1`: `backoffMs` doubled per try made, less up to
 * 20% jitter (as BullMQ's exponential backoff), but never sooner than the provider's
 * Retry-After (capped at `maxRetryAfterMs`).
 */
export function retryDelayMs(
  attemptsMade: number,
  options: Pick<PushOptions, 'backoffMs' | 'maxRetryAfterMs'>,
  error: unknown,
  random: () => number = Math.random,
): number {
  const step = Math.round(2 ** Math.max(0, attemptsMade - 1) * options.backoffMs);
  const backoff = Math.floor(step * (1 - BACKOFF_JITTER) + random() * step * BACKOFF_JITTER);
  const asked = error instanceof PushAttemptError ? (error.retryAfterMs ?? 0) : 0;
  return Math.max(backoff, Math.min(asked, options.maxRetryAfterMs));
}

/**
 * The durable push queue: BullMQ in Redis (keys `bull:push:*`, in a cluster `{bull}:push:*`),
 * so jobs outlive a restart.
 * One job per message and device (`jobId` dedupes), delayed by the grace period, retried
 * with exponential backoff (or the provider's Retry-After), kept as failed after the last
 * try. The same jobs serve every platform: a job names a device, not a provider.
 *
 * Two connections of its own, not the shared one: the worker's (BullMQ duplicates it for
 * its blocking fetch) must have `maxRetriesPerRequest: null`; the producer's keeps failing
 * fast, so that enqueueing never hangs while Redis is away.
 */
@Injectable()
export class PushJobsRepository {
  private readonly logger = new Logger(PushJobsRepository.name);
  private producer?: RedisClient;
  private consumer?: RedisClient;
  private queue?: Queue<PushJobData>;
  private worker?: Worker<PushJobData>;

  constructor(
    private readonly config: AppConfig,
    @Inject(PUSH_OPTIONS) private readonly options: PushOptions,
  ) {}

  /** Opens the queue and starts the worker, which hands each try to `handler`. */
  open(handler: (attempt: PushAttempt) => Promise<void>): void {
    const onError = (what: string) => (error: Error) => this.logger.warn(`${what}: ${error.message}`);
    const prefix = pushQueuePrefixFor(this.config.redisMode);
    this.producer = connectRedis(this.config, {
      maxRetriesPerRequest: 1,
      connectTimeout: 5_000,
      retryStrategy: (attempt) => Math.min(attempt * 100, 2_000),
    });
    this.producer.on('error', onError('push queue redis'));
    this.consumer = connectRedis(this.config, {
      maxRetriesPerRequest: null,
      connectTimeout: 5_000,
      retryStrategy: (attempt) => Math.min(attempt * 100, 2_000),
    });
    this.consumer.on('error', onError('push worker redis'));
    this.queue = new Queue<PushJobData>(PUSH_QUEUE_NAME, { connection: this.producer, prefix });
    this.queue.on('error', onError('push queue'));
    this.worker = new Worker<PushJobData>(
      PUSH_QUEUE_NAME,
      async (job: Job<PushJobData>) => {
        try {
          await handler({ data: job.data, attempt: job.attemptsMade + 1, attempts: job.opts.attempts ?? 1 });
        } catch (error) {
          if (error instanceof PushAttemptError && !error.retryable) throw new UnrecoverableError(error.reason);
          throw error;
        }
      },
      {
        connection: this.consumer,
        prefix,
        concurrency: this.options.concurrency,
        settings: { backoffStrategy: (attemptsMade, _type, error) => retryDelayMs(attemptsMade, this.options, error) },
      },
    );
    this.worker.on('error', onError('push worker'));
  }

  /** Queues pushes; a job whose id is already queued (or recently done) is not added again. */
  async add(jobs: readonly PushJobData[]): Promise<void> {
    if (!this.queue || jobs.length === 0) return;
    const o = this.options;
    await this.queue.addBulk(
      jobs.map((data) => ({
        name: 'push',
        data,
        opts: {
          jobId: pushJobId(data),
          delay: o.graceMs,
          attempts: o.attempts,
          backoff: { type: BACKOFF_TYPE, delay: o.backoffMs },
          removeOnComplete: { age: o.keepCompletedSec, count: o.keepCompletedCount },
          removeOnFail: { age: o.keepFailedSec },
        },
      })),
    );
  }

  /**
   * Stops taking jobs (waiting for the ones running), then closes the queue and both
   * connections. Jobs not yet run stay in Redis for the next start.
   */
  async close(): Promise<void> {
    const { worker, queue, producer, consumer } = this;
    this.worker = this.queue = this.producer = this.consumer = undefined;
    await worker?.close().catch((error: unknown) => this.logger.warn(`closing the push worker: ${String(error)}`));
    await queue?.close().catch((error: unknown) => this.logger.warn(`closing the push queue: ${String(error)}`));
    for (const connection of [producer, consumer]) {
      await connection?.quit().catch(() => connection.disconnect());
    }
  }
}

/**
 * `<messageId>:<userId>:<deviceId>`. BullMQ allows `:` in a custom id only as exactly two
 * separators, and a user id (a token's `sub`) may contain one, so it is URI-encoded.
 */
export function pushJobId(data: Pick<PushJobData, 'messageId' | 'userId' | 'deviceId'>): string {
  return `${data.messageId}:${encodeURIComponent(data.userId)}:${data.deviceId}`;
}
