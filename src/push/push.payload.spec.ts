import { describe, expect, it } from 'vitest';

import { buildPayload, GENERIC_ALERT, MAX_PAYLOAD_BYTES, truncate, type PushContent } from './push.payload.js';

const ids = {
  conversationId: '0b6f6c1e-5d0c-4f51-9d7e-3f7c2a1b9e10',
  messageId: '6a1f0f0e-2b8e-4c1e-8a53-0d9f1e2c3b4a',
};
const bytes = (value: unknown) => Buffer.byteLength(JSON.stringify(value));

describe('push payload', () => {
  it('says only "New message" in server-mode conversations without previews', () => {
    expect(buildPayload({ ...ids, e2e: false, badge: 3 }, 120)).toEqual({
      aps: { alert: { body: GENERIC_ALERT }, badge: 3, sound: 'default', 'thread-id': ids.conversationId },
      ...ids,
    });
  });

  it('never carries a preview for e2e conversations, even when given one', () => {
    const payload = buildPayload(
      { ...ids, e2e: true, badge: 1, preview: { sender: 'alice', text: 'secret plaintext' } },
      120,
    );
    expect(payload).toEqual({
      aps: {
        alert: { body: GENERIC_ALERT },
        badge: 1,
        sound: 'default',
        'thread-id': ids.conversationId,
        'mutable-content': 1,
      },
      ...ids,
    });
    expect(JSON.stringify(payload)).not.toContain('secret');
    expect(JSON.stringify(payload)).not.toContain('alice');
  });

  it('shows sender and a truncated preview when previews are on', () => {
    const content: PushContent = { ...ids, e2e: false, badge: 2, preview: { sender: 'alice', text: 'x'.repeat(500) } };
    const payload = buildPayload(content, 120);
    expect(payload.aps.alert.title).toBe('alice');
    expect([...payload.aps.alert.body]).toHaveLength(120);
    expect(payload.aps.alert.body.endsWith('…')).toBe(true);
  });

  it('keeps every payload within 4096 bytes, whatever the preview holds', () => {
    const heavy = [
      '😀'.repeat(5_000),
      '\u0000'.repeat(5_000),
      `e${'\u0301'.repeat(10_000)}`, // one grapheme of 20 kB
      '"\\'.repeat(5_000),
    ];
    for (const text of heavy) {
      const payload = buildPayload(
        { ...ids, e2e: false, badge: 99, preview: { sender: 's'.repeat(128), text } },
        4_000,
      );
      expect(bytes(payload)).toBeLessThanOrEqual(MAX_PAYLOAD_BYTES);
      expect(payload.messageId).toBe(ids.messageId);
    }
  });

  it('collapses whitespace and drops an empty preview', () => {
    expect(
      buildPayload({ ...ids, e2e: false, badge: 1, preview: { sender: 'a', text: ' one\n\ttwo ' } }, 120).aps.alert,
    ).toEqual({ title: 'a', body: 'one two' });
    expect(
      buildPayload({ ...ids, e2e: false, badge: 1, preview: { sender: 'a', text: ' \n ' } }, 120).aps.alert,
    ).toEqual({
      body: GENERIC_ALERT,
    });
  });

  it('truncates by user-perceived characters', () => {
    expect(truncate('hello', 5)).toBe('hello');
    expect(truncate('hello!', 5)).toBe('hell…');
    expect(truncate('👍🏽👍🏽👍🏽', 2)).toBe('👍🏽…');
  });
});
