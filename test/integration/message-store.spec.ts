import { randomUUID } from 'node:crypto';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { MessageCodec } from '../../src/message-store/message.codec.js';
import { MessageStoreRepository } from '../../src/message-store/message-store.repository.js';
import { MessageStore } from '../../src/message-store/message-store.service.js';
import type { ConversationKey, NewMessage, StoreOutcome } from '../../src/message-store/message-store.types.js';
import { PrismaService } from '../../src/prisma/prisma.service.js';
import { startTestApp, type TestApp } from '../support/app.js';
import { createConversation, userId } from '../support/fixtures.js';

// The message store's branches against the real PostgreSQL of a test app: group commit,
// the predicted path and its misses, resends (alone, in a batch, racing on another
// instance), the clash fallback, and when each stored message's predecessor was. A second
// MessageStore over the same database stands for a second instance.

type Repository = Pick<MessageStoreRepository, 'insertBatch' | 'insertPredicted' | 'findByClientMsgId'>;

describe('MessageStore', () => {
  let service: TestApp;
  let repository: MessageStoreRepository;
  let codec: MessageCodec;
  let store: MessageStore;
  let alice: string;
  let bob: string;

  /** Another instance's store: its own heads, the same database. */
  const otherInstance = (over: Partial<Repository> = {}) =>
    new MessageStore(Object.assign(Object.create(repository) as MessageStoreRepository, over), codec);

  const newMessage = (conversationId: string, clientMsgId: string = randomUUID()): NewMessage => ({
    id: randomUUID(),
    conversationId,
    senderId: alice,
    senderDeviceId: 'phone',
    clientMsgId,
    contentType: 'text/plain',
  });
  const text = (body: string) => new TextEncoder().encode(body);
  const storeText = (on: MessageStore, conversationId: string, body: string, clientMsgId?: string) =>
    on.store(newMessage(conversationId, clientMsgId), text(body));
  const seqOf = (outcome: StoreOutcome) => outcome.message.seq;

  beforeAll(async () => {
    service = await startTestApp();
    repository = service.app.get(MessageStoreRepository);
    codec = service.app.get(MessageCodec);
    store = service.app.get(MessageStore);
    [alice, bob] = [userId('alice'), userId('bob')];
  });

  afterAll(async () => {
    await service?.close();
  });

  it('stores concurrent sends in the order they arrived, under gapless seqs, readable back', async () => {
    const conversationId = await createConversation(service, alice, [bob]);
    const outcomes = await Promise.all(Array.from({ length: 60 }, (_, i) => storeText(store, conversationId, `m${i}`)));
    expect(outcomes.map((o) => o.kind)).toEqual(Array(60).fill('stored'));
    expect(outcomes.map(seqOf)).toEqual(Array.from({ length: 60 }, (_, i) => i + 1));
    const page = await store.page(conversationId, { afterSeq: 0, limit: 100 });
    expect(page.messages.map((m) => m.body)).toEqual(outcomes.map((_, i) => `m${i}`));
    expect(page.messages.map((m) => m.createdAt)).toEqual(outcomes.map((o) => o.message.createdAt));
    // created_at increases with seq, even within one batch.
    const times = page.messages.map((m) => Date.parse(m.createdAt));
    expect(times.every((t, i) => i === 0 || t > times[i - 1])).toBe(true);
  });

  it('answers a resend with the stored message and spends no seq on it, alone or inside a batch', async () => {
    const conversationId = await createConversation(service, alice, [bob]);
    const first = await storeText(store, conversationId, 'original', 'once');
    const alone = await storeText(store, conversationId, 'again', 'once');
    expect(alone).toEqual({ kind: 'duplicate', message: first.message });

    const batch = await Promise.all(
      Array.from({ length: 20 }, (_, i) => storeText(store, conversationId, `b${i}`, i === 7 ? 'once' : undefined)),
    );
    expect(batch[7]).toEqual({ kind: 'duplicate', message: first.message });
    const seqs = batch.filter((o) => o.kind === 'stored').map(seqOf);
    expect(seqs).toEqual(Array.from({ length: 19 }, (_, i) => i + 2));
  });

  it('stores the same clientMsgId twice in one batch once, answering the second with the first', async () => {
    const conversationId = await createConversation(service, alice, [bob]);
    const [a, b, c] = await Promise.all([
      storeText(store, conversationId, 'x', 'twice'),
      storeText(store, conversationId, 'y', 'twice'),
      storeText(store, conversationId, 'z'),
    ]);
    expect(a.kind).toBe('stored');
    expect(b).toEqual({ kind: 'duplicate', message: a.message });
    expect([seqOf(a), seqOf(c)]).toEqual([1, 2]);
  });

  it('keeps seqs unique and gapless when two instances write into one conversation', async () => {
    const conversationId = await createConversation(service, alice, [bob]);
    const other = otherInstance();
    const outcomes: StoreOutcome[] = [];
    // Rounds of concurrent sends on both: each round finds the other's writes under the
    // head it remembered, so the predicted path misses and the transaction takes over.
    for (let round = 0; round < 5; round++) {
      outcomes.push(
        ...(await Promise.all(
          Array.from({ length: 10 }, (_, i) =>
            storeText(i % 2 === 0 ? store : other, conversationId, `r${round}-${i}`),
          ),
        )),
      );
    }
    expect(outcomes.every((o) => o.kind === 'stored')).toBe(true);
    expect(outcomes.map(seqOf).sort((x, y) => x - y)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
    const page = await store.page(conversationId, { afterSeq: 0, limit: 100 });
    expect(page.messages).toHaveLength(50);
  });

  it('gives a clientMsgId raced on two instances to one of them; the other answers with its message', async () => {
    const conversationId = await createConversation(service, alice, [bob]);
    const other = otherInstance();
    for (let race = 0; race < 5; race++) {
      const clientMsgId = `race-${race}`;
      const [mine, theirs] = await Promise.all([
        storeText(store, conversationId, 'mine', clientMsgId),
        storeText(other, conversationId, 'theirs', clientMsgId),
      ]);
      expect([mine.kind, theirs.kind].sort()).toEqual(['duplicate', 'stored']);
      expect(mine.message).toEqual(theirs.message);
    }
    const page = await store.page(conversationId, { afterSeq: 0, limit: 100 });
    expect(page.messages.map((m) => m.seq)).toEqual([1, 2, 3, 4, 5]);
  });

  it('falls back to one-by-one stores in arrival order when a batch clashes twice', async () => {
    const conversationId = await createConversation(service, alice, [bob]);
    let clashes = 0;
    const clashing = otherInstance({
      // Every batch of more than one clashes (as a concurrent writer's duplicate would);
      // the predicted path is not taken: this instance knows no head yet.
      insertBatch: (batch, seal, lookForResends) => {
        if (batch.length > 1) {
          clashes++;
          return Promise.resolve({ kind: 'clash' });
        }
        return repository.insertBatch(batch, seal, lookForResends);
      },
    });
    const seed = await storeText(store, conversationId, 'seed', 'seed');
    const outcomes = await Promise.all(
      Array.from({ length: 40 }, (_, i) => storeText(clashing, conversationId, `m${i}`, i === 20 ? 'seed' : undefined)),
    );
    expect(clashes).toBeGreaterThanOrEqual(2);
    expect(outcomes[20]).toEqual({ kind: 'duplicate', message: seed.message });
    const stored = outcomes.filter((o) => o.kind === 'stored');
    expect(stored.map(seqOf)).toEqual(Array.from({ length: 39 }, (_, i) => i + 2));
    expect(stored.map((o) => o.message.body)).toEqual(outcomes.flatMap((o, i) => (i === 20 ? [] : [`m${i}`])));
  });

  it("reports when each message's predecessor was committed, on the predicted path and in a transaction", async () => {
    const conversationId = await createConversation(service, alice, [bob]);
    const stored = async (on: MessageStore, body: string) => {
      const outcome = await storeText(on, conversationId, body);
      if (outcome.kind !== 'stored') throw new Error(`${body} was not stored`);
      return outcome;
    };
    // The first message's predecessor time is the conversation's creation.
    const first = await stored(store, 'p1');
    expect(first.previousAt).toBeLessThanOrEqual(Date.parse(first.message.createdAt));
    // This store knows the head now: the predicted path.
    const [second, third] = await Promise.all([stored(store, 'p2'), stored(store, 'p3')]);
    expect(second.previousAt).toBe(Date.parse(first.message.createdAt));
    expect(third.previousAt).toBe(Date.parse(second.message.createdAt));
    // Another instance has no head: its transaction reads the predecessor's time.
    const fourth = await stored(otherInstance(), 'p4');
    expect(fourth.message.seq).toBe(4);
    expect(fourth.previousAt).toBe(Date.parse(third.message.createdAt));
    // And the first store's head is stale now: it misses, then takes the transaction.
    const fifth = await stored(store, 'p5');
    expect(fifth.previousAt).toBe(Date.parse(fourth.message.createdAt));
  });

  it('stores predicted rows only where the head is as predicted, in the one-row and the many-row statement', async () => {
    const headOf = async (conversationId: string) => {
      const { rows } = await service.app.get(PrismaService).sql.query<{
        last_seq: string;
        at: Date;
        encryption: 'server' | 'e2e';
        wrapped_key: Uint8Array;
        key_version: number;
      }>('SELECT last_seq, last_activity_at AS at, encryption, wrapped_key, key_version FROM conversations WHERE id = $1', [conversationId]);
      const [row] = rows;
      const key: ConversationKey = {
        conversationId,
        encryption: row.encryption,
        wrappedKey: row.wrapped_key,
        keyVersion: row.key_version,
      };
      return { lastSeq: Number(row.last_seq), key, at: row.at.getTime() };
    };
    const rowsFor = (conversationId: string, head: { lastSeq: number; key: ConversationKey }, bodies: string[]) =>
      bodies.map((body, i) => {
        const message = newMessage(conversationId);
        const seq = head.lastSeq + i + 1;
        return { message, seq, ordinal: i + 1, sealed: codec.seal(head.key, message.id, seq, text(body)) };
      });
    const [a, b] = [await createConversation(service, alice, [bob]), await createConversation(service, alice, [bob])];

    // One row: stored when the head is as predicted, missed (nothing stored) when its seq
    // or its key moved.
    let head = await headOf(a);
    const one = rowsFor(a, head, ['a1']);
    const stored = await repository.insertPredicted(one, [{ conversationId: a, expected: head, count: 1 }]);
    expect([...stored.createdAt.keys()]).toEqual([one[0].message.id]);
    expect(stored.missed.size).toBe(0);
    const staleSeq = rowsFor(a, head, ['stale']);
    expect(await repository.insertPredicted(staleSeq, [{ conversationId: a, expected: head, count: 1 }])).toEqual({
      createdAt: new Map(),
      missed: new Set([a]),
    });
    head = await headOf(a);
    const otherKey = { ...head, key: { ...head.key, wrappedKey: new Uint8Array(head.key.wrappedKey.length) } };
    const staleKey = rowsFor(a, head, ['stale']);
    expect(await repository.insertPredicted(staleKey, [{ conversationId: a, expected: otherKey, count: 1 }])).toEqual({
      createdAt: new Map(),
      missed: new Set([a]),
    });

    // Many rows over two conversations: the one whose head moved is missed alone.
    const many = rowsFor(a, head, ['a2', 'a3']);
    const headB = await headOf(b);
    const staleB = { ...headB, lastSeq: headB.lastSeq + 1 };
    const manyB = rowsFor(b, staleB, ['b1']);
    const mixed = await repository.insertPredicted(
      [...many, ...manyB],
      [
        { conversationId: a, expected: head, count: 2 },
        { conversationId: b, expected: staleB, count: 1 },
      ],
    );
    expect([...mixed.createdAt.keys()]).toEqual(many.map((r) => r.message.id));
    expect(mixed.missed).toEqual(new Set([b]));

    // What was stored opens under its seq, with created_at rising with seq.
    const page = await store.page(a, { afterSeq: 0, limit: 10 });
    expect(page.messages.map((m) => [m.seq, m.body])).toEqual([
      [1, 'a1'],
      [2, 'a2'],
      [3, 'a3'],
    ]);
    const times = page.messages.map((m) => Date.parse(m.createdAt));
    expect(times[1]).toBeGreaterThan(times[0]);
    expect(times[2]).toBeGreaterThan(times[1]);
    expect((await store.page(b, { afterSeq: 0, limit: 10 })).messages).toEqual([]);
    expect((await headOf(b)).lastSeq).toBe(0);
  });

  it('rejects every send of a batch the database refuses, and stores the next one under the first seq', async () => {
    const conversationId = await createConversation(service, alice, [bob]);
    let refusing = true;
    const failing = new MessageStore(
      Object.assign(Object.create(repository) as MessageStoreRepository, {
        insertBatch: (...args: Parameters<Repository['insertBatch']>) =>
          refusing
            ? // Seals as the real one does, then fails.
              repository.insertBatch(
                args[0],
                (...sealArgs) => {
                  args[1](...sealArgs);
                  throw new Error('connection terminated');
                },
                args[2],
              )
            : repository.insertBatch(...args),
      }),
      codec,
    );
    const refused = await Promise.allSettled([
      storeText(failing, conversationId, 'a'),
      storeText(failing, conversationId, 'b'),
    ]);
    expect(refused.map((r) => r.status)).toEqual(['rejected', 'rejected']);
    refusing = false;
    const next = await storeText(failing, conversationId, 'c');
    expect(next.kind).toBe('stored');
    expect(seqOf(next)).toBe(1);
  });
});
