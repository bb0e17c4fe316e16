import { describe, expect, it } from 'vitest';

import type { CacheBus } from '../redis/cache-bus.service.js';
import type { ConversationAccess, ConversationsRepository } from './conversations.repository.js';
import { MembershipService } from './membership.service.js';

/** Members per conversation, as PostgreSQL would answer; `hold` parks the next read. */
class Members {
  readonly rows = new Map<string, string[]>([['c', ['alice', 'bob']]]);
  reads = 0;
  private gate?: Promise<void>;

  /** Parks the reads that come next (after taking their snapshot) until the returned release. */
  hold(): () => void {
    let release!: () => void;
    this.gate = new Promise<void>((resolve) => (release = resolve));
    return () => {
      this.gate = undefined;
      release();
    };
  }

  private async answer<T>(value: () => T): Promise<T> {
    this.reads++;
    if (this.gate) await this.gate;
    return value();
  }

  memberIds(conversationId: string): Promise<string[]> {
    const snapshot = [...(this.rows.get(conversationId) ?? [])];
    return this.answer(() => snapshot);
  }

  accessFor(conversationId: string, userId: string): Promise<ConversationAccess | 'not_found' | 'not_member'> {
    const members = this.rows.get(conversationId);
    const answer: ConversationAccess | 'not_found' | 'not_member' = !members
      ? 'not_found'
      : !members.includes(userId)
        ? 'not_member'
        : {
            id: conversationId,
            kind: 'group',
            encryption: 'server',
            wrappedKey: new Uint8Array(),
            keyVersion: 1,
            lastSeq: 0,
            readSeq: 0,
          };
    return this.answer(() => answer);
  }
}

/** CacheBus on one instance: invalidations run the local handlers. */
class LocalBus {
  private readonly handlers = new Map<string, ((key: string) => void)[]>();
  on(topic: string, handler: (key: string) => void): void {
    this.handlers.set(topic, [...(this.handlers.get(topic) ?? []), handler]);
  }
  invalidate(topic: string, key: string): void {
    for (const handler of this.handlers.get(topic) ?? []) handler(key);
  }
}

function membership() {
  const members = new Members();
  const bus = new LocalBus();
  const service = new MembershipService(members as unknown as ConversationsRepository, bus as unknown as CacheBus);
  return { members, bus, service };
}

describe('MembershipService caches', () => {
  it('answers a member from memory after the first look-up', async () => {
    const { members, service } = membership();
    await service.requireMember('c', 'alice');
    expect(service.cachedMember('c', 'alice')?.id).toBe('c');
    await service.requireMember('c', 'alice');
    expect(members.reads).toBe(1);
  });

  it('never caches a refusal: a user added later is let in at once', async () => {
    const { members, service } = membership();
    await expect(service.requireMember('c', 'carol')).rejects.toMatchObject({ code: 'forbidden' });
    members.rows.set('c', ['alice', 'bob', 'carol']);
    await expect(service.requireMember('c', 'carol')).resolves.toMatchObject({ id: 'c' });
  });

  it('forgets a removed member at once', async () => {
    const { members, service } = membership();
    await service.requireMember('c', 'bob');
    members.rows.set('c', ['alice']);
    service.membersChanged('c');
    expect(service.cachedMember('c', 'bob')).toBeUndefined();
    await expect(service.requireMember('c', 'bob')).rejects.toMatchObject({ code: 'forbidden' });
  });

  it('does not keep a member list read before a change that landed while it loaded', async () => {
    const { members, service } = membership();
    const release = members.hold();
    const loading = service.memberIds('c'); // reads [alice, bob], then waits
    members.rows.set('c', ['alice']);
    service.membersChanged('c');
    release();
    expect(await loading).toEqual(['alice', 'bob']); // that caller saw the old list...
    expect(await service.memberIds('c')).toEqual(['alice']); // ...but it was not cached
  });
});
