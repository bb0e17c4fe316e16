import { randomUUID } from 'node:crypto';

import { Injectable, Logger, type OnApplicationShutdown, type OnModuleInit } from '@nestjs/common';

import { MembershipService } from '../conversations/membership.service.js';
import { MessageStore } from '../message-store/message-store.service.js';
import { RealtimeService } from '../realtime/realtime.service.js';
import { liveChannelOf, liveTipsChannelOf } from '../redis/channels.js';
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

/**
 * How long a publish Redis refused is tried again. A Redis Cluster fails a killed master
 * over to its replica within its node timeout and an election (about 7-9 s with a 5 s
 * timeout); until then PUBLISH fails on the dead node. The summaries (TIPS_*) reveal a
 * lost message only while it is in their window, 5 s: the last ones sent in a longer
 * outage would reach the connected devices of the other instances only when a later one
 * of their conversation arrives, or at their next reconnect.
 */
const REPUBLISH_FOR_MS = 60_000;
/** Between two tries of a refused publish (grows to REPUBLISH_MAX_DELAY_MS). */
const REPUBLISH_DELAY_MS = 100;
const REPUBLISH_MAX_DELAY_MS = 1_000;
/**
 * Publishes waiting for a retry at most (memory in a long outage: each holds its
 * envelope); past it, new failures are left to the device queues.
 */
const MAX_RETRYING = 10_000;

/**
 * Every TIPS_INTERVAL_MS an instance that published live messages tells the others the
 * latest seq it published per conversation within the last TIPS_WINDOW_MS. A receiver
 * that missed a publish (its subscriber reconnecting, a publish given up on) learns of the
 * gap without waiting for a later message of the conversation, and reads it back. The
 * window spans several summaries, so a missed summary is covered by the next ones.
 */
const TIPS_INTERVAL_MS = 1_000;
const TIPS_WINDOW_MS = 5_000;
/** Conversations per summary at most (the most recently published). */
const MAX_TIPS = 5_000;

/** A spell of refused publishes, reported once at each end. */
class PublishOutage {
  givenUp = 0;

  constructor(
    private readonly logger: Logger,
    error: unknown,
  ) {
    logger.warn(`live messages cannot be published, retrying: ${String(error)}`);
  }

  recovered(): void {
    this.logger.warn(
      `live messages are published again; ${this.givenUp} given up on (their devices have them in their queues)`,
    );
  }
}

/** One live message as it crosses Redis: its origin, so an instance skips its own. */
interface Envelope {
  origin: string;
  message: WireMessage;
  userIds: string[];
  previousAt: number;
}

/** An instance's summary of what it published lately: [conversationId, latest seq]. */
interface Tips {
  origin: string;
  tips: [string, number][];
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
  private readonly tipsChannel: string;
  private readonly merge: SeqMerge;
  private subscriber?: RedisClient;
  /** Retries of refused publishes, cleared at shutdown. */
  private readonly retries = new Set<NodeJS.Timeout>();
  /** While publishes fail: one warning when it starts, one when it ends (not one per message). */
  private outage?: PublishOutage;
  private closing = false;
  /** Conversations this instance published to lately, oldest first: latest seq and when. */
  private readonly published = new Map<string, { seq: number; at: number }>();
  private tipsTimer?: NodeJS.Timeout;
  /** Until then, summaries may list what went out before this instance listened. */
  private listeningSince = Infinity;

  constructor(
    private readonly redis: RedisService,
    private readonly topology: InstanceTopology,
    private readonly realtime: RealtimeService,
    private readonly store: MessageStore,
    private readonly membership: MembershipService,
    metrics: MessagingMetrics,
  ) {
    this.channel = liveChannelOf(redis.channelDb);
    this.tipsChannel = liveTipsChannelOf(redis.channelDb);
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
    this.subscriber.on('message', (channel: string, raw: string) => this.received(channel, raw));
    await this.subscriber.subscribe(this.channel, this.tipsChannel).catch((error: unknown) => {
      this.logger.warn(`live message channel unavailable for now: ${String(error)}`);
    });
    this.listeningSince = Date.now();
    this.tipsTimer = setInterval(() => this.sendTips(), TIPS_INTERVAL_MS);
    this.tipsTimer.unref();
  }

  async onApplicationShutdown(): Promise<void> {
    this.closing = true;
    clearInterval(this.tipsTimer);
    for (const timer of this.retries) clearTimeout(timer);
    this.retries.clear();
    await this.subscriber?.quit().catch(() => this.subscriber?.disconnect());
  }

  /**
   * Delivers a just-stored message to the sockets of `userIds` on every instance but the
   * sending device's. `previousAt` is the store's (StoreOutcome).
   */
  publish(message: WireMessage, userIds: string[], previousAt: number): void {
    this.merge.accept({ message, userIds, previousAt });
    // Noted even while alone: if that was a wrong count, the summaries repair it.
    const { conversationId, seq } = message;
    const latest = this.published.get(conversationId);
    if (latest === undefined || latest.seq < seq) {
      // Re-inserted: the map stays in order of publishing, oldest first.
      this.published.delete(conversationId);
      this.published.set(conversationId, { seq, at: Date.now() });
    }
    if (this.topology.alone) return;
    const envelope: Envelope = { origin: this.origin, message, userIds, previousAt };
    this.send(JSON.stringify(envelope), Date.now() + REPUBLISH_FOR_MS, REPUBLISH_DELAY_MS);
  }

  /**
   * Publishes, trying again while Redis refuses (until `until`). A late copy is safe: the
   * receivers' SeqMerge emits it in its place or drops it as late (its gap was read back
   * from PostgreSQL when a later seq arrived), and a copy that reached Redis although the
   * reply was lost is dropped the same way. A publish given up on is left to the device
   * queues (get-unacked at the next connect).
   */
  private send(raw: string, until: number, delayMs: number): void {
    this.redis.client.publish(this.channel, raw).then(
      () => {
        // The spell ends once nothing waits for a retry any more.
        if (!this.outage || this.retries.size > 0) return;
        this.outage.recovered();
        this.outage = undefined;
      },
      (error: unknown) => {
        if (this.closing) return;
        this.outage ??= new PublishOutage(this.logger, error);
        if (Date.now() + delayMs > until || this.retries.size >= MAX_RETRYING) {
          this.outage.givenUp += 1;
          return;
        }
        const timer = setTimeout(() => {
          this.retries.delete(timer);
          this.send(raw, until, Math.min(delayMs * 2, REPUBLISH_MAX_DELAY_MS));
        }, delayMs);
        timer.unref();
        this.retries.add(timer);
      },
    );
  }

  /** The latest seqs published within TIPS_WINDOW_MS, to the other instances. */
  private sendTips(): void {
    const since = Date.now() - TIPS_WINDOW_MS;
    for (const [conversationId, { at }] of this.published) {
      if (at >= since) break;
      this.published.delete(conversationId);
    }
    if (this.published.size === 0 || this.topology.alone) return;
    const tips: [string, number][] = [];
    for (const [conversationId, { seq }] of this.published) tips.push([conversationId, seq]);
    const summary: Tips = { origin: this.origin, tips: tips.slice(-MAX_TIPS) };
    // Not retried: the next summaries cover the same window.
    this.redis.client.publish(this.tipsChannel, JSON.stringify(summary)).catch(() => undefined);
  }

  private received(channel: string, raw: string): void {
    let envelope: Envelope | Tips;
    try {
      envelope = JSON.parse(raw) as Envelope | Tips;
      if (envelope.origin === this.origin) return;
      if (channel === this.tipsChannel) {
        // Conversations first heard of here are skipped while the window may hold what
        // was published before this instance listened (its sockets have that through
        // their queues).
        const knownOnly = Date.now() < this.listeningSince + TIPS_WINDOW_MS;
        for (const [conversationId, seq] of (envelope as Tips).tips) {
          this.merge.expectStored(conversationId, seq, knownOnly);
        }
        return;
      }
      const { message, userIds, previousAt } = envelope as Envelope;
      this.merge.accept({ message, userIds, previousAt });
    } catch {
      // A subscriber's handler must not throw (nothing would catch it).
      this.logger.warn(`ignored a malformed payload on ${channel}`);
    }
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
