import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

import type { WireMessage } from '@messaging-service/client/protocol';
import type { MembershipService } from '../conversations/membership.service.js';
import type { MessageStore } from '../message-store/message-store.service.js';
import type { RealtimeService } from '../realtime/realtime.service.js';
import type { InstanceTopology } from '../redis/instance-topology.service.js';
import type { RedisService } from '../redis/redis.service.js';
import { LiveStream } from './live-stream.service.js';
import type { MessagingMetrics } from './messaging.metrics.js';

const message: WireMessage = {
  id: 'm-1',
  conversationId: '5b0c4d84-3d57-4c6e-9a51-0f4a8f3c2b10',
  seq: 1,
  senderId: 'alice',
  senderDeviceId: 'phone',
  clientMsgId: 'c-1',
  contentType: 'text/plain',
  body: 'hello',
  createdAt: new Date().toISOString(),
};

describe('LiveStream publish', () => {
  let publish: ReturnType<typeof vi.fn>;
  let stream: LiveStream;

  beforeEach(() => {
    vi.useFakeTimers();
    publish = vi.fn();
    const redis = { channelDb: 0, client: { publish } } as unknown as RedisService;
    stream = new LiveStream(
      redis,
      { alone: false } as InstanceTopology,
      { emitMessageHere: () => undefined } as unknown as RealtimeService,
      {} as MessageStore,
      {} as MembershipService,
      { liveReordered: { inc: () => undefined } } as unknown as MessagingMetrics,
    );
  });

  afterEach(() => {
    vi.useRealTimers();
  });

  it('tries a publish that Redis refused again until it goes through (a cluster failover)', async () => {
    publish
      .mockRejectedValueOnce(new Error('node down'))
      .mockRejectedValueOnce(new Error('node down'))
      .mockResolvedValue(1);
    stream.publish(message, ['bob'], Date.now());
    await vi.advanceTimersByTimeAsync(5_000);
    expect(publish).toHaveBeenCalledTimes(3);
    expect(new Set(publish.mock.calls.map(([, raw]) => raw as string)).size, 'the same envelope each time').toBe(1);
  });

  it('holds at most 10,000 publishes for a retry; failures past that are left to the queues', async () => {
    // Real timers: the fake clock walks its timers one by one, too slowly for 10,000.
    vi.useRealTimers();
    publish.mockRejectedValue(new Error('redis down'));
    for (let i = 0; i < 10_005; i++) stream.publish({ ...message, seq: i + 1 }, ['bob'], Date.now());
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(publish).toHaveBeenCalledTimes(10_005);
    // The first retries (after 100 ms; the next come 200 ms later): one per publish held,
    // none for the 5 past the cap.
    const deadline = Date.now() + 5_000;
    while (publish.mock.calls.length < 20_005 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    expect(publish).toHaveBeenCalledTimes(20_005);
    await stream.onApplicationShutdown();
  });

  it('gives up after a minute, and stops retrying at shutdown', async () => {
    publish.mockRejectedValue(new Error('node down'));
    stream.publish(message, ['bob'], Date.now());
    await vi.advanceTimersByTimeAsync(120_000);
    const tries = publish.mock.calls.length;
    expect(tries).toBeGreaterThan(50);
    expect(tries).toBeLessThan(70);

    publish.mockClear();
    stream.publish(message, ['bob'], Date.now());
    await vi.advanceTimersByTimeAsync(0);
    await stream.onApplicationShutdown();
    await vi.advanceTimersByTimeAsync(10_000);
    expect(publish).toHaveBeenCalledTimes(1);
  });
});
