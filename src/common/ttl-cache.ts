import { LRUCache } from 'lru-cache';

/**
 * An in-memory cache of values loaded from PostgreSQL and invalidated over CacheBus:
 * bounded in size (least recently used go first) and in age (`ttlMs`, the bound should
 * an invalidation ever be missed), on lru-cache.
 *
 * What lru-cache does not do: loads race invalidations. A load that began before an
 * invalidation may finish after it with the old value; storing that would undo the
 * invalidation. So a value is stored only if nothing was invalidated since its load
 * began: take `version` before loading and pass it to `set`.
 */
export class TtlCache<V extends object> {
  private readonly entries: LRUCache<string, V>;
  private invalidations = 0;

  constructor(ttlMs: number, maxEntries = 50_000) {
    this.entries = new LRUCache<string, V>({ max: maxEntries, ttl: ttlMs });
  }

  get(key: string): V | undefined {
    return this.entries.get(key);
  }

  /** Take before loading; pass to `set`. */
  get version(): number {
    return this.invalidations;
  }

  /** Stores `value` unless something was invalidated since `version` was taken. */
  set(key: string, value: V, version: number): void {
    if (version !== this.invalidations) return;
    this.entries.set(key, value);
  }

  delete(key: string): void {
    this.invalidations += 1;
    this.entries.delete(key);
  }

  /** Deletes every key starting with `prefix`. */
  deletePrefix(prefix: string): void {
    this.invalidations += 1;
    for (const key of [...this.entries.keys()]) if (key.startsWith(prefix)) this.entries.delete(key);
  }
}
