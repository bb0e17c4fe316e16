import { randomUUID } from 'node:crypto';

import { Injectable, Logger, type OnApplicationShutdown, type OnModuleInit } from '@nestjs/common';

import { MembershipService } from '../conversations/membership.service.js';
import { MessageStore } from '../message-store/message-store.service.js';
import { RealtimeService } from '../realtime/realtime.service.js';
import { liveChannelOf } from '../redis/channels.js';
import { InstanceTopology } from '../redis/instance-topology.service.js';
import type { RedisClient } from '../redis/redis-client.js';
import { RedisService } from '../redis/redis.service.js';
import type { WireMessage } from '@messaging-service/client/protocol';
import { MessagingMetrics } from './messaging.metrics.js';
import { type LiveItem, SeqMerge } from './seq-merge.js';

/**
 * How long a later seq waits for an earlier one from another instance before the gap is
 * read from PostgreSQL. Publishes of healthy instances arrive within milliseconds of
 * each other; this bound only matters when one is lost (an instance killed between its
 * commit and its publish, a Redis hiccup) or an instance stalls.
 */
const HOLD_MS = 500;

/** One live message as it crosses Redis: its origin, so an instance skips its own. */
interface Envelope {
  origin: string;
  message: WireMessage;
  userIds: string[];
  previousAt: number;
}

/**
 * Live messages from whichever instance stored them to the sockets of every instance, in
 * seq order per conversation (PROTOCOL.md §2, with any number of instances).
 *
 * The storing instance hands each message here once its fan-out step is done (not
 * necessarily in seq order: fan-outs finish in any order); it goes to this instance's
 * SeqMerge at once and to every other instance over one pub/sub channel, where each
 * one's SeqMerge interleaves the streams of all instances back into seq order, reading
 * from PostgreSQL what a lost publish left out.
 * While this is the only instance (InstanceTopology.alone) nothing is published.
 */
@Injectable()
export class LiveStream implements OnModuleInit, OnApplicationShutdown {
  private readonly logger = new Logger(LiveStream.name);
  private readonly origin = randomUUID();
  private readonly channel: string;
  private readonly merge: SeqMerge;
  private subscriber?: RedisClient;

  constructor(
    private readonly redis: RedisService,
    private readonly topology: InstanceTopology,
    private readonly realtime: RealtimeService,
    private readonly store: MessageStore,
    private readonly membership: MembershipService,
    metrics: MessagingMetrics,
  ) {
    this.channel = liveChannelOf(redis.channelDb);
    this.merge = new SeqMerge({
      holdMs: HOLD_MS,
      emit: (item) => this.realtime.emitMessageHere(item.userIds, item.message),
      fill: (conversationId, afterSeq, beforeSeq) => this.fill(conversationId, afterSeq, beforeSeq),
      observe: (event, count) => metrics.liveReordered.inc({ event }, count),
    });
  }

  async onModuleInit(): Promise<void> {
    // Subscribed before this instance announces itself (InstanceTopology, at bootstrap),
    // so no other instance starts publishing to it before it listens.
    this.subscriber = this.redis.duplicate();
    this.subscriber.on('error', () => undefined);
    this.subscriber.on('message', (_channel: string, raw: string) => this.received(raw));
    await this.subscriber.subscribe(this.channel).catch((error: unknown) => {
      this.logger.warn(`live message channel unavailable for now: ${String(error)}`);
    });
  }

  async onApplicationShutdown(): Promise<void> {
    await this.subscriber?.quit().catch(() => this.subscriber?.disconnect());
  }

  /**
   * Delivers a just-stored message to the sockets of `userIds` on every instance but the
   * sending device's. `previousAt` is the store's (StoreOutcome).
   */
  publish(message: WireMessage, userIds: string[], previousAt: number): void {
    this.merge.accept({ message, userIds, previousAt });
    if (this.topology.alone) return;
    const envelope: Envelope = { origin: this.origin, message, userIds, previousAt };
    // A lost publish is repaired by the receivers (the gap is read back once a later seq
    // arrives) and by every device's queue.
    this.redis.client.publish(this.channel, JSON.stringify(envelope)).catch((error: unknown) => {
      this.logger.warn(`could not publish a live message: ${String(error)}`);
    });
  }

  private received(raw: string): void {
    let envelope: Envelope;
    try {
      envelope = JSON.parse(raw) as Envelope;
    } catch {
      this.logger.warn('ignored a malformed live message');
      return;
    }
    if (envelope.origin === this.origin) return;
    this.merge.accept({
      message: envelope.message,
      userIds: envelope.userIds,
      previousAt: envelope.previousAt,
    });
  }

  /** The stored messages of a gap, to the conversation's current members. */
  private async fill(conversationId: string, afterSeq: number, beforeSeq: number): Promise<LiveItem[]> {
    const [page, userIds] = await Promise.all([
      this.store.page(conversationId, { afterSeq, beforeSeq, limit: beforeSeq - afterSeq - 1 }),
      this.membership.memberIds(conversationId),
    ]);
    return page.messages.map((message) => ({ message, userIds, previousAt: null }));
  }
}
