import { afterEach, describe, expect, it } from 'vitest';

import { useTestRedisDb } from '../support/databases.js';
import { startTopologyInstance, type TopologyInstance } from '../support/instance-topology.js';

/** One instance's Redis providers, through the lifecycle hooks Nest would call. */
type Instance = TopologyInstance;

async function until(condition: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

describe('InstanceTopology', () => {
  const running: Instance[] = [];

  async function start(redisUrl: string): Promise<Instance> {
    const instance = await startTopologyInstance({ redisUrl });
    running.push(instance);
    return instance;
  }

  afterEach(async () => {
    for (const instance of running.splice(0)) await instance.stop();
  });

  it('knows it is alone, stops as soon as another instance has booted, and notices it leave', async () => {
    const { url } = useTestRedisDb();
    const first = await start(url);
    await until(() => first.topology.alone, 'the first count');

    const second = await start(url);
    // The announcement has reached every subscriber by the time the second has booted.
    await until(() => !first.topology.alone, 'the announcement', 100);
    expect(second.topology.alone).toBe(false);

    await second.stop();
    running.splice(running.indexOf(second), 1);
    await until(() => first.topology.alone, 'a count without the second', 5_000);
  });

  it('keeps instances on different Redis databases apart', async () => {
    const first = await start(useTestRedisDb().url);
    const second = await start(useTestRedisDb().url);
    await until(() => first.topology.alone && second.topology.alone, 'both counts');
  });

  it('keeps cache invalidations local while alone and sends them to the others otherwise', async () => {
    const { url } = useTestRedisDb();
    const first = await start(url);
    await until(() => first.topology.alone, 'the first count');
    const here: string[] = [];
    first.cache.on('topic', (key) => here.push(key));
    first.cache.invalidate('topic', 'alone');
    expect(here).toEqual(['alone']);

    const second = await start(url);
    const there: string[] = [];
    second.cache.on('topic', (key) => there.push(key));
    await until(() => !first.topology.alone, 'the announcement', 100);
    first.cache.invalidate('topic', 'shared');
    expect(here).toEqual(['alone', 'shared']);
    await until(() => there.length === 1, 'the invalidation to cross');
    expect(there).toEqual(['shared']);
  });
});
