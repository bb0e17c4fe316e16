import { randomUUID } from 'node:crypto';

import { ConversationsService } from '../../src/conversations/conversations.service.js';
import type { TestApp } from './app.js';

/** A unique user id, so tests sharing a database never collide. */
export const userId = (name: string) => `${name}-${randomUUID().slice(0, 8)}`;

/** Creates a conversation through the service layer (what REST's create does). */
export async function createConversation(
  service: TestApp,
  creatorId: string,
  otherIds: string[],
  options: { kind?: 'direct' | 'group'; encryption?: 'server' | 'e2e'; title?: string } = {},
): Promise<string> {
  const { conversation } = await service.app.get(ConversationsService).create(creatorId, {
    kind: options.kind ?? 'group',
    memberIds: otherIds,
    encryption: options.encryption,
    title: options.title,
  });
  return conversation.id;
}
