/** APNs refuses alert payloads above 4 KiB (PayloadTooLarge). */
export const MAX_PAYLOAD_BYTES = 4_096;

/** The alert text of every push without a preview. */
export const GENERIC_ALERT = 'New message';

const MAX_TITLE_CHARS = 64;
const ELLIPSIS = '…';

/** What an APNs alert says, from the PushNotice PushDeliveryService built. */
export interface PushContent {
  conversationId: string;
  messageId: string;
  /** e2e conversations: the app's notification service extension fetches and decrypts. */
  e2e: boolean;
  /** The device's unacked count. */
  badge: number;
  /** Server-mode conversations with previews enabled only; ignored for e2e. */
  preview?: { sender: string; text: string };
}

/** The JSON body sent to APNs. */
export interface ApnsPayload {
  aps: {
    alert: { title?: string; body: string };
    badge: number;
    sound: 'default';
    'thread-id': string;
    'mutable-content'?: 1;
  };
  conversationId: string;
  messageId: string;
}

/**
 * The data of an FCM or Web Push message: the ids only, never content, whatever the
 * conversation's mode or the preview setting. The app fetches the message itself.
 */
export function pushData(content: Pick<PushContent, 'conversationId' | 'messageId'>): {
  conversationId: string;
  messageId: string;
} {
  return { conversationId: content.conversationId, messageId: content.messageId };
}

const segmenter = new Intl.Segmenter(undefined, { granularity: 'grapheme' });

/** At most `max` user-perceived characters of `text` (an ellipsis marks a cut). */
export function truncate(text: string, max: number): string {
  if (max <= 0) return '';
  const graphemes: string[] = [];
  for (const { segment } of segmenter.segment(text)) {
    graphemes.push(segment);
    if (graphemes.length > max) break;
  }
  if (graphemes.length <= max) return text;
  return graphemes.slice(0, Math.max(0, max - 1)).join('') + ELLIPSIS;
}

const byteLength = (payload: ApnsPayload) => Buffer.byteLength(JSON.stringify(payload), 'utf8');

/**
 * The payload of one push. Content-free unless a preview is given for a server-mode
 * conversation: e2e pushes carry only ids and `mutable-content: 1`, never message text.
 * A preview is shortened until the whole payload fits in MAX_PAYLOAD_BYTES.
 */
export function buildPayload(content: PushContent, previewMaxChars: number): ApnsPayload {
  const payload: ApnsPayload = {
    aps: {
      alert: { body: GENERIC_ALERT },
      badge: content.badge,
      sound: 'default',
      'thread-id': content.conversationId,
    },
    conversationId: content.conversationId,
    messageId: content.messageId,
  };
  if (content.e2e) {
    payload.aps['mutable-content'] = 1;
    return payload;
  }
  const preview = content.preview;
  if (!preview) return payload;
  const text = preview.text.replace(/\s+/g, ' ').trim();
  if (text === '') return payload;
  const title = truncate(preview.sender.replace(/\s+/g, ' ').trim(), MAX_TITLE_CHARS);
  for (let max = previewMaxChars; max > 0; max = Math.floor(max / 2)) {
    const candidate: ApnsPayload = { ...payload, aps: { ...payload.aps, alert: { title, body: truncate(text, max) } } };
    if (byteLength(candidate) <= MAX_PAYLOAD_BYTES) return candidate;
  }
  return payload;
}
