import { setTimeout as sleep } from 'node:timers/promises';

import { describe, expect, it } from 'vitest';

import { TtlCache } from './ttl-cache.js';

describe('TtlCache', () => {
  it('keeps a value loaded while nothing was invalidated', () => {
    const cache = new TtlCache<{ n: number }>(60_000);
    const version = cache.version;
    cache.set('a', { n: 1 }, version);
    expect(cache.get('a')).toEqual({ n: 1 });
  });

  it('drops a value whose load began before an invalidation (the load raced it)', () => {
    const cache = new TtlCache<{ n: number }>(60_000);
    const version = cache.version; // the load starts
    cache.delete('a'); // a change lands meanwhile
    cache.set('a', { n: 1 }, version); // the load ends with what it read before
    expect(cache.get('a')).toBeUndefined();
    cache.set('a', { n: 2 }, cache.version);
    expect(cache.get('a')).toEqual({ n: 2 });
  });

  it('deletes by prefix, and a prefix invalidation also voids loads in flight', () => {
    const cache = new TtlCache<{ n: number }>(60_000);
    cache.set('c1\nalice', { n: 1 }, cache.version);
    cache.set('c1\nbob', { n: 2 }, cache.version);
    cache.set('c2\nalice', { n: 3 }, cache.version);
    const version = cache.version;
    cache.deletePrefix('c1\n');
    expect([cache.get('c1\nalice'), cache.get('c1\nbob'), cache.get('c2\nalice')]).toEqual([
      undefined,
      undefined,
      { n: 3 },
    ]);
    cache.set('c1\nalice', { n: 1 }, version);
    expect(cache.get('c1\nalice')).toBeUndefined();
  });

  it('forgets values after the TTL', async () => {
    const cache = new TtlCache<{ n: number }>(20);
    cache.set('a', { n: 1 }, cache.version);
    await sleep(60);
    expect(cache.get('a')).toBeUndefined();
  });

  it('holds at most maxEntries, evicting the least recently used', () => {
    const cache = new TtlCache<{ n: number }>(60_000, 2);
    cache.set('a', { n: 1 }, cache.version);
    cache.set('b', { n: 2 }, cache.version);
    cache.get('a');
    cache.set('c', { n: 3 }, cache.version);
    expect([cache.get('a'), cache.get('b'), cache.get('c')]).toEqual([{ n: 1 }, undefined, { n: 3 }]);
  });
});
