import { Redis } from 'ioredis';

/**
 * A real ioredis client with nowhere to go: every command is rejected at once (no
 * offline queue) instead of waiting, as while Redis is down.
 */
export function unreachableRedis(): Redis {
  const client = new Redis({
    host: '127.0.0.1',
    port: 1,
    lazyConnect: true,
    enableOfflineQueue: false,
    retryStrategy: () => null,
  });
  client.on('error', () => undefined);
  return client;
}

/**
 * Whether anything ever attached a handler to `promise` (a caller that drops a promise
 * never does): the library surface the promise-marking patches rely on.
 */
export function watchHandlers<T>(promise: Promise<T>): () => boolean {
  let observed = false;
  const then = promise.then.bind(promise);
  promise.then = ((...handlers: Parameters<typeof then>) => {
    observed = true;
    return then(...handlers);
  }) as typeof promise.then;
  return () => observed;
}
