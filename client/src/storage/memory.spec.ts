import { describe, expect, it } from 'vitest';

import { memoryStorage } from './memory.js';
import { storageConformance, storedSend } from './storage-conformance.js';

describe('memoryStorage', () => {
  storageConformance(() => ({ storage: memoryStorage() }));

  it('starts empty each time it is made', async () => {
    await memoryStorage().putOutbox([storedSend(1)]);

    expect(await memoryStorage().load()).toEqual({ outbox: [], highWater: {} });
  });
});
