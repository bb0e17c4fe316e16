import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { Reply, SendData } from '@messaging-service/client/protocol';
import { startTestApp, type TestApp } from '../support/app.js';
import { connect, type TestClient } from '../support/clients.js';
import { createConversation, userId } from '../support/fixtures.js';

// PROTOCOL.md section 2: the sends one connection makes into one conversation are stored in
// the order the server received them; a resend of a stored clientMsgId answers the stored
// message and does not change the order of the rest. Every send below is pipelined (none
// waits for the previous reply), as the client SDK and any chat client under a fast typist do.

interface Sent {
  conversationId: string;
  clientMsgId: string;
  reply: Promise<Reply<SendData>>;
}

/** Emits a send without waiting; the reply comes later (fails after 20 s without one). */
function pipeline(client: TestClient, conversationId: string, clientMsgId: string): Sent {
  const reply = client.socket
    .timeout(20_000)
    .emitWithAck('send', { conversationId, clientMsgId, body: clientMsgId }) as Promise<Reply<SendData>>;
  return { conversationId, clientMsgId, reply };
}

/** Per conversation, the seqs of the new (non-duplicate) sends, in call order. */
async function newSeqsByConversation(sent: Sent[]): Promise<Map<string, number[]>> {
  const seqs = new Map<string, number[]>();
  for (const send of sent) {
    const reply = await send.reply;
    if (!reply.ok) throw new Error(`send ${send.clientMsgId} failed: ${JSON.stringify(reply.error)}`);
    if (reply.data.duplicate) continue;
    const list = seqs.get(send.conversationId) ?? [];
    list.push(reply.data.message.seq);
    seqs.set(send.conversationId, list);
  }
  return seqs;
}

function expectRising(seqs: number[], what: string): void {
  const inversions = seqs.filter((seq, i) => i > 0 && seq <= seqs[i - 1]).length;
  expect(inversions, `${what}: seqs in call order ${seqs.join(',')}`).toBe(0);
}

describe('send order over one connection', () => {
  let service: TestApp;
  const open: TestClient[] = [];
  const client = async (user: string, deviceId = 'phone') => {
    const c = await connect(service.url, user, { deviceId });
    open.push(c);
    return c;
  };

  beforeAll(async () => {
    // Generous request rate: these tests are about order, not the rate limit.
    service = await startTestApp({ RATE_LIMIT_EVENTS_PER_SEC: '100000' });
  });

  afterAll(async () => {
    for (const c of open) c.close();
    await service.close();
  });

  it('stores 300 pipelined sends into a fresh conversation in call order, every time (5 rounds)', async () => {
    for (let round = 0; round < 5; round++) {
      const [alice, bob] = [userId('alice'), userId('bob')];
      const conversationId = await createConversation(service, alice, [bob]);
      const socket = await client(alice);
      const sent = Array.from({ length: 300 }, (_, i) => pipeline(socket, conversationId, `r${round}-m${i}`));
      const seqs = (await newSeqsByConversation(sent)).get(conversationId) ?? [];
      expect(seqs).toEqual(Array.from({ length: 300 }, (_, i) => i + 1));
    }
  });

  it('keeps the order in each of two conversations one socket alternates between', async () => {
    const [alice, bob, carol] = [userId('alice'), userId('bob'), userId('carol')];
    const first = await createConversation(service, alice, [bob]);
    const second = await createConversation(service, alice, [carol]);
    const socket = await client(alice);
    const sent = Array.from({ length: 200 }, (_, i) => pipeline(socket, i % 2 === 0 ? first : second, `alt-${i}`));
    const seqs = await newSeqsByConversation(sent);
    expect(seqs.get(first)).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));
    expect(seqs.get(second)).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));
  });

  it('answers a resend in the middle of a pipeline with the stored message, the rest keeping their order', async () => {
    const [alice, bob] = [userId('alice'), userId('bob')];
    const conversationId = await createConversation(service, alice, [bob]);
    const socket = await client(alice);
    const original = await pipeline(socket, conversationId, 'stored-once').reply;
    if (!original.ok) throw new Error(JSON.stringify(original.error));

    const sent = Array.from({ length: 100 }, (_, i) => pipeline(socket, conversationId, `after-${i}`));
    sent.splice(50, 0, pipeline(socket, conversationId, 'stored-once'));
    const resend = await sent[50].reply;
    expect(resend).toEqual({ ok: true, data: { message: original.data.message, duplicate: true } });
    const seqs = (await newSeqsByConversation(sent)).get(conversationId) ?? [];
    expect(seqs).toEqual(Array.from({ length: 100 }, (_, i) => i + 2));
  });

  it('keeps call order per socket and conversation under random pipelines with resends mixed in', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          conversations: fc.integer({ min: 1, max: 3 }),
          sockets: fc.integer({ min: 1, max: 3 }),
          // Each step: which socket, which conversation, and whether it resends a stored id.
          steps: fc.array(fc.record({ socket: fc.nat(2), conversation: fc.nat(2), resend: fc.boolean() }), {
            minLength: 5,
            maxLength: 60,
          }),
        }),
        async ({ conversations, sockets, steps }) => {
          const users = Array.from({ length: 3 }, (_, i) => userId(`u${i}`));
          const conversationIds = await Promise.all(
            Array.from({ length: conversations }, () => createConversation(service, users[0], users.slice(1))),
          );
          // Sockets of different users and devices: every order is per socket.
          const clients = await Promise.all(Array.from({ length: sockets }, (_, i) => client(users[i], `device-${i}`)));
          // One stored message per socket and conversation, for the resends to name.
          const stored = new Map<string, string>();
          for (const [s, socket] of clients.entries()) {
            for (const [c, conversationId] of conversationIds.entries()) {
              const clientMsgId = `seed-${s}-${c}`;
              const reply = await pipeline(socket, conversationId, clientMsgId).reply;
              if (!reply.ok) throw new Error(JSON.stringify(reply.error));
              stored.set(`${s}/${c}`, reply.data.message.id);
            }
          }
          const sent: (Sent & { key: string })[] = steps.map((step, i) => {
            const s = step.socket % sockets;
            const c = step.conversation % conversations;
            const clientMsgId = step.resend ? `seed-${s}-${c}` : `n${i}`;
            return { ...pipeline(clients[s], conversationIds[c], clientMsgId), key: `${s}/${c}` };
          });
          for (const key of new Set(sent.map((send) => send.key))) {
            const mine = sent.filter((send) => send.key === key);
            for (const send of mine.filter((m) => m.clientMsgId.startsWith('seed-'))) {
              const reply = await send.reply;
              expect(reply.ok && reply.data.duplicate && reply.data.message.id).toBe(stored.get(key));
            }
            const seqs = (await newSeqsByConversation(mine)).get(mine[0].conversationId) ?? [];
            expectRising(seqs, `socket/conversation ${key}`);
          }
          for (const c of clients) c.close();
        },
      ),
      { numRuns: 15 },
    );
  }, 120_000);
});
