import { describe, expect, it } from 'vitest';

import type { WireMessage } from '@messaging-service/client/protocol';
import { fitPage, wireBytes } from './page-budget.js';

const message = (seq: number, size: number, field: 'body' | 'ciphertext' = 'body'): WireMessage => ({
  id: `m${seq}`,
  conversationId: 'c',
  seq,
  senderId: 'u',
  senderDeviceId: 'd',
  clientMsgId: `c${seq}`,
  contentType: 'text/plain',
  [field]: 'x'.repeat(size),
  createdAt: '2025-01-01T00:00:00.000Z',
});

describe('fitPage', () => {
  const page = [1, 2, 3, 4].map((seq) => message(seq, 10_000));
  const one = wireBytes(page[0]);

  it('keeps a page that fits whole', () => {
    expect(fitPage(page, 4 * one, 'oldest')).toEqual(page);
    expect(fitPage(page, Infinity, 'newest')).toEqual(page);
  });

  it('keeps the oldest that fit when paging forward, the newest when paging backward', () => {
    expect(fitPage(page, 2 * one + 1, 'oldest').map((m) => m.seq)).toEqual([1, 2]);
    expect(fitPage(page, 2 * one + 1, 'newest').map((m) => m.seq)).toEqual([3, 4]);
  });

  it('keeps one message larger than the budget, so that paging moves on', () => {
    expect(fitPage(page, 1, 'oldest').map((m) => m.seq)).toEqual([1]);
    expect(fitPage(page, 1, 'newest').map((m) => m.seq)).toEqual([4]);
    expect(fitPage([], 1, 'oldest')).toEqual([]);
  });

  it('weighs ciphertext as it weighs a body', () => {
    expect(wireBytes(message(1, 5_000, 'ciphertext'))).toBe(wireBytes(message(1, 5_000)));
    expect(wireBytes(message(1, 5_000))).toBeGreaterThan(5_000);
  });
});
