import DataLoader from 'dataloader';

/** Requests per batched statement: keeps its arrays and its locks modest. */
const MAX_BATCH = 500;

/**
 * A DataLoader that gathers the requests made while the event loop handles one round of
 * input (e.g. a storm of sockets connecting) into one call of `batch`, run at
 * `setImmediate`. No caching: every `load` is a fresh request. `batch` gets the keys in
 * request order, repeats included, and returns one result per key.
 *
 * Per-tick batching (DataLoader's default) would not gather them: Node runs the
 * microtasks and nextTicks after every single socket's callback, so each connection's
 * request would go alone.
 */
export function batchLoader<K, V>(batch: (keys: readonly K[]) => Promise<V[]>): DataLoader<K, V> {
  return new DataLoader<K, V>(batch, {
    cache: false,
    maxBatchSize: MAX_BATCH,
    batchScheduleFn: (callback) => setImmediate(callback),
  });
}
