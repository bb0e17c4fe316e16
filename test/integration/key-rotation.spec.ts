import { randomBytes, randomUUID } from 'node:crypto';

import { Logger } from '@nestjs/common';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { AppConfig } from '../../src/config/app-config.js';
import { parseEnv } from '../../src/config/config.parser.js';
import { ConversationKeysRepository } from '../../src/crypto/conversation-keys.repository.js';
import { CryptoService, type MessageAad } from '../../src/crypto/crypto.service.js';
import { KeyRotationService } from '../../src/crypto/key-rotation.service.js';
import { PrismaService } from '../../src/prisma/prisma.service.js';
import { createTestDatabase, type TestDatabase } from '../support/databases.js';

const MASTER_1 = randomBytes(32).toString('base64');
const MASTER_2 = randomBytes(32).toString('base64');

function configFor(databaseUrl: string, keys: string, active: number): AppConfig {
  return parseEnv({
    NODE_ENV: 'test',
    DATABASE_URL: databaseUrl,
    REDIS_URL: 'redis://127.0.0.1:6379', // unused: nothing here touches Redis
    JWT_SECRET: 'integration-secret-integration-secret-01',
    ENCRYPTION_KEYS: keys,
    ENCRYPTION_ACTIVE_KEY: String(active),
  });
}

async function cryptoFor(config: AppConfig): Promise<CryptoService> {
  const crypto = new CryptoService(config);
  await crypto.onModuleInit();
  return crypto;
}

describe('master key rotation against PostgreSQL', () => {
  let database: TestDatabase;
  let prisma: PrismaService;

  beforeAll(async () => {
    Logger.overrideLogger(false);
    database = await createTestDatabase();
    prisma = new PrismaService(configFor(database.url, `1:${MASTER_1}`, 1));
    await prisma.onModuleInit();
  });

  afterAll(async () => {
    await prisma?.onApplicationShutdown();
    await database?.drop();
  });

  it('re-wraps every conversation key under the new version and leaves message rows as they were', async () => {
    const before = await cryptoFor(configFor(database.url, `1:${MASTER_1}`, 1));
    const conversationIds = [randomUUID(), randomUUID(), randomUUID()];
    for (const id of conversationIds) {
      const { wrappedKey, keyVersion } = before.createDataKey(id);
      await prisma.conversation.create({ data: { id, kind: 'group', title: 'rotation', wrappedKey, keyVersion } });
    }

    const [sealedIn] = conversationIds;
    const conversation = await prisma.conversation.findUniqueOrThrow({ where: { id: sealedIn } });
    const dataKey = before.unwrapDataKey(conversation.id, conversation.wrappedKey, conversation.keyVersion);
    const body = new TextEncoder().encode('sealed before the rotation');
    const aad: MessageAad = { conversationId: sealedIn, messageId: randomUUID(), seq: 1n, keyVersion: 1 };
    const { ciphertext, nonce } = before.seal(dataKey, body, aad);
    await prisma.message.create({
      data: {
        id: aad.messageId,
        conversationId: sealedIn,
        seq: aad.seq,
        senderId: 'alice',
        senderDeviceId: 'alice-phone',
        clientMsgId: randomUUID(),
        contentType: 'text/plain',
        ciphertext,
        nonce,
        keyVersion: aad.keyVersion,
      },
    });
    const messageBefore = await prisma.message.findUniqueOrThrow({ where: { id: aad.messageId } });

    const after = await cryptoFor(configFor(database.url, `1:${MASTER_1},2:${MASTER_2}`, 2));
    const rotation = new KeyRotationService(new ConversationKeysRepository(prisma), after);
    expect(await rotation.rotateAll({ batchSize: 2 })).toEqual({ rewrapped: 3, alreadyCurrent: 0 });

    const rows = await prisma.$queryRaw<{ id: string; key_version: number }[]>`
      SELECT id::text AS id, key_version FROM conversations ORDER BY id`;
    expect(rows).toEqual([...conversationIds].sort().map((id) => ({ id, key_version: 2 })));

    const messageAfter = await prisma.message.findUniqueOrThrow({ where: { id: aad.messageId } });
    expect(messageAfter.ciphertext).toEqual(messageBefore.ciphertext);
    expect(messageAfter.nonce).toEqual(messageBefore.nonce);
    expect(messageAfter.keyVersion).toBe(1);

    // With version 1 retired, the re-wrapped key still opens the old message.
    const retired = await cryptoFor(configFor(database.url, `2:${MASTER_2}`, 2));
    const rotated = await prisma.conversation.findUniqueOrThrow({ where: { id: sealedIn } });
    const rotatedKey = retired.unwrapDataKey(rotated.id, rotated.wrappedKey, rotated.keyVersion);
    expect(retired.open(rotatedKey, messageAfter.ciphertext, messageAfter.nonce, aad)).toEqual(body);

    // A second run finds nothing left to do.
    expect(await rotation.rotateAll()).toEqual({ rewrapped: 0, alreadyCurrent: 3 });
  });
});
