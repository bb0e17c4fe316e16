import { EventEmitter } from 'node:events';

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

describe('LiveStream summaries of what it published', () => {
  let publish: ReturnType<typeof vi.fn>;
  let subscriber: EventEmitter & { subscribe: ReturnType<typeof vi.fn>; quit: () => Promise<void> };
  let stream: LiveStream;
  const fills: [string, number, number][] = [];

  beforeEach(async () => {
    vi.useFakeTimers();
    publish = vi.fn().mockResolvedValue(1);
    subscriber = Object.assign(new EventEmitter(), {
      subscribe: vi.fn().mockResolvedValue(2),
      quit: () => Promise.resolve(),
    });
    const redis = { channelDb: 3, client: { publish }, duplicate: () => subscriber } as unknown as RedisService;
    stream = new LiveStream(
      redis,
      { alone: false } as InstanceTopology,
      { emitMessageHere: () => undefined } as unknown as RealtimeService,
      {
        page: (conversationId: string, { afterSeq, beforeSeq }: { afterSeq: number; beforeSeq: number }) => {
          fills.push([conversationId, afterSeq, beforeSeq]);
          return Promise.resolve({ messages: [] });
        },
      } as unknown as MessageStore,
      { memberIds: () => Promise.resolve(['bob']) } as unknown as MembershipService,
      { liveReordered: { inc: () => undefined } } as unknown as MessagingMetrics,
    );
    await stream.onModuleInit();
  });

  afterEach(async () => {
    await stream.onApplicationShutdown();
    fills.length = 0;
    vi.useRealTimers();
  });

  const tipsSent = () =>
    publish.mock.calls
      .filter(([channel]) => channel === 'live:tips:3')
      .map(([, raw]) => (JSON.parse(raw as string) as { tips: [string, number][] }).tips);

  it('sends the latest seq per conversation every second, for the last five seconds', async () => {
    expect(subscriber.subscribe).toHaveBeenCalledWith('live:messages:3', 'live:tips:3');
    stream.publish(message, ['bob'], Date.now());
    stream.publish({ ...message, id: 'm-2', seq: 2 }, ['bob'], Date.now());
    await vi.advanceTimersByTimeAsync(1_000);
    expect(tipsSent()).toEqual([[[message.conversationId, 2]]]);
    await vi.advanceTimersByTimeAsync(6_000);
    // Repeated while within the window (a missed summary is covered), then dropped.
    expect(tipsSent().length).toBeGreaterThanOrEqual(4);
    expect(tipsSent().length).toBeLessThanOrEqual(6);
    const count = tipsSent().length;
    await vi.advanceTimersByTimeAsync(3_000);
    expect(tipsSent()).toHaveLength(count);
  });

  it('reads back a summarised seq it has not emitted, and shrugs off malformed payloads', async () => {
    stream.publish(message, ['bob'], Date.now());
    const other = '0d1e2f30-4a5b-4c6d-8e9f-a0b1c2d3e4f5';
    // Within its first five seconds an instance skips conversations it has not seen.
    subscriber.emit('message', 'live:tips:3', JSON.stringify({ origin: 'b', tips: [[other, 4]] }));
    subscriber.emit('message', 'live:tips:3', JSON.stringify({ origin: 'b', tips: [[message.conversationId, 3]] }));
    subscriber.emit('message', 'live:tips:3', '{"origin":"b","tips":7}');
    subscriber.emit('message', 'live:messages:3', '{"origin":"b"}');
    subscriber.emit('message', 'live:messages:3', 'not json');
    await vi.advanceTimersByTimeAsync(1_000);
    expect(fills).toEqual([[message.conversationId, 1, 4]]);
  });
});
