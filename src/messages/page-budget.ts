import type { WireMessage } from '@messaging-service/client/protocol';

/** Room for a message's other fields (ids, clientMsgId, dates) and its JSON punctuation. */
const FIELDS_BYTES = 512;

/** About what a message weighs in a reply: its content (string length) and its fields. */
export function wireBytes(message: WireMessage): number {
  return (message.body?.length ?? 0) + (message.ciphertext?.length ?? 0) + FIELDS_BYTES;
}

/**
 * The part of a page that fits `maxBytes`: the longest run from the start (`oldest`) or
 * from the end (`newest`), never less than one message so that paging always moves on.
 * A page of 100 messages at the size limit is several MB, more than one socket may
 * hold unsent (SOCKET_SEND_BUFFER_BYTES); the caller says `hasMore` for the rest.
 */
export function fitPage(messages: readonly WireMessage[], maxBytes: number, keep: 'oldest' | 'newest'): WireMessage[] {
  const ordered = keep === 'oldest' ? messages : [...messages].reverse();
  let total = 0;
  let count = 0;
  for (const message of ordered) {
    total += wireBytes(message);
    if (count > 0 && total > maxBytes) break;
    count++;
  }
  if (count === messages.length) return [...messages];
  return keep === 'oldest' ? messages.slice(0, count) : messages.slice(messages.length - count);
}
