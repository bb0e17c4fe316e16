/** Shapes shared by the offline queue's Redis and PostgreSQL sides. */

/** One message waiting in a device's offline queue. */
export interface PendingEntry {
  messageId: string;
  conversationId: string;
  seq: number;
  senderId: string;
  /** Queue order: the message's created_at in ms, increasing with seq in a conversation. */
  score: number;
}

/** What a device's queue holds for one conversation, as checked against PostgreSQL. */
export interface ConversationState {
  conversationId: string;
  /** Highest seq ever queued. */
  highestSeq: number;
  /** Every seq up to this one was acked (or dropped past the cap). */
  cursor: number;
  /** Entries waiting. */
  queued: number;
  /** Entries acked past the cursor. */
  ackedAhead: number;
}
