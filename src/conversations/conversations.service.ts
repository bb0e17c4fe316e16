import { randomUUID } from 'node:crypto';

import { Injectable } from '@nestjs/common';

import { AppError, ErrorCode } from '../common/app-error.js';
import { CryptoService } from '../crypto/crypto.service.js';
import { DevicesRepository } from '../devices/devices.repository.js';
import { ConversationsRepository, type ConversationRecord } from './conversations.repository.js';

export interface CreateConversationInput {
  kind: 'direct' | 'group';
  memberIds: string[];
  title?: string;
  encryption?: 'server' | 'e2e';
}

/** Creating and reading conversations; shared by REST and tests. */
@Injectable()
export class ConversationsService {
  constructor(
    private readonly conversations: ConversationsRepository,
    private readonly devices: DevicesRepository,
    private readonly crypto: CryptoService,
  ) {}

  /**
   * Creates a conversation with a fresh wrapped data key. `creatorId` (a user caller) is
   * always a member and its owner. A direct conversation has exactly two members and is
   * unique per pair: creating it again returns the existing one (`created: false`).
   */
  async create(
    creatorId: string | null,
    input: CreateConversationInput,
  ): Promise<{ conversation: ConversationRecord; created: boolean }> {
    const memberIds = [...new Set([...(creatorId ? [creatorId] : []), ...input.memberIds])];
    let directKey: string | null = null;
    if (input.kind === 'direct') {
      if (memberIds.length !== 2) {
        throw AppError.badRequest('a direct conversation has exactly two members', {
          problems: [{ path: 'memberIds', message: 'a direct conversation has exactly two members' }],
        });
      }
      directKey = [...memberIds].sort().join('\n');
      const existing = await this.conversations.findByDirectKey(directKey);
      if (existing) return { conversation: await this.get(existing), created: false };
    } else if (memberIds.length === 0) {
      throw AppError.badRequest('a conversation needs at least one member', {
        problems: [{ path: 'memberIds', message: 'must list at least one member' }],
      });
    }
    const id = randomUUID();
    const key = this.crypto.createDataKey(id);
    try {
      await this.conversations.create({
        id,
        kind: input.kind,
        title: input.title ?? null,
        encryption: input.encryption ?? 'server',
        directKey,
        wrappedKey: key.wrappedKey,
        keyVersion: key.keyVersion,
        members: memberIds.map((userId) => ({
          userId,
          role: userId === (creatorId ?? memberIds[0]) ? 'owner' : 'member',
        })),
      });
    } catch (error) {
      // Two creators raced for the same direct pair: the unique key let one win.
      if (directKey && /direct_key|Unique constraint/i.test(String(error))) {
        const existing = await this.conversations.findByDirectKey(directKey);
        if (existing) return { conversation: await this.get(existing), created: false };
      }
      throw error;
    }
    for (const userId of memberIds) await this.devices.ensureCursorsForMember(id, userId);
    return { conversation: await this.get(id), created: true };
  }

  async get(conversationId: string): Promise<ConversationRecord> {
    const conversation = await this.conversations.findWithMembers(conversationId);
    if (!conversation) throw new AppError(ErrorCode.NotFound, 'no such conversation');
    return conversation;
  }
}
