import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { BatchConflict, MessagesRepository } from '../../src/messages/messages.repository.js';
import { MessagesService } from '../../src/messages/messages.service.js';
import { SendBatcher } from '../../src/messages/send-batcher.js';
import { startTestApp, type TestApp } from '../support/app.js';
import { createConversation, userId } from '../support/fixtures.js';

// The group commit's fallback: when a batch clashes with a concurrent writer (another
// instance storing the same clientMsgId), its messages are stored one by one. They must
// keep the order the batch had (PROTOCOL.md section 2), so the clash is forced here on the
// real repository and the sends go through the real service.
describe('send order when a batch falls back to one-by-one stores', () => {
  let service: TestApp;

  beforeAll(async () => {
    service = await startTestApp();
  });

  afterAll(async () => {
    await service.close();
  });

  it('stores the clashed batch in arrival order, answering its resend with the stored message', async () => {
    const [alice, bob] = [userId('alice'), userId('bob')];
    const conversationId = await createConversation(service, alice, [bob]);
    const messages = service.app.get(MessagesService);
    // The group commit's own repository (more than one module provides the class).
    const batcher: unknown = service.app.get(SendBatcher);
    const repository = (batcher as { messages: MessagesRepository }).messages;
    const sender = { userId: alice, deviceId: 'phone', socketId: 'socket-1' };
    const first = await messages.send(sender, { conversationId, clientMsgId: 'seed', body: 'seed' });

    // Every batch store clashes once (both the fast path and the transaction); the
    // one-by-one store that follows is the real one.
    const clashes = { count: 0 };
    const insertBatch = repository.insertBatch.bind(repository);
    const insertPredicted = repository.insertPredicted.bind(repository);
    repository.insertBatch = (...args) => {
      clashes.count++;
      return clashes.count <= 2 ? Promise.reject(new BatchConflict()) : insertBatch(...args);
    };
    repository.insertPredicted = (...args) => {
      clashes.count++;
      return clashes.count <= 2 ? Promise.reject(new BatchConflict()) : insertPredicted(...args);
    };
    try {
      const sends = Array.from({ length: 40 }, (_, i) =>
        messages.send(sender, { conversationId, clientMsgId: i === 20 ? 'seed' : `m${i}`, body: `m${i}` }),
      );
      const replies = await Promise.all(sends);
      expect(clashes.count).toBeGreaterThanOrEqual(1);
      expect(replies[20]).toEqual({ message: first.message, duplicate: true });
      const seqs = replies.filter((reply) => !reply.duplicate).map((reply) => reply.message.seq);
      expect(seqs).toEqual(Array.from({ length: 39 }, (_, i) => i + 2));
    } finally {
      repository.insertBatch = insertBatch;
      repository.insertPredicted = insertPredicted;
    }
  });
});
