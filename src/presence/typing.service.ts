import { Injectable, type OnApplicationShutdown } from '@nestjs/common';

import { AppConfig } from '../config/app-config.js';
import { RealtimeService } from '../realtime/realtime.service.js';

interface TypingState {
  socketId: string;
  lastRelayAt: number;
  expiresAt: number;
  timer: NodeJS.Timeout;
}

/**
 * Typing indicators: relayed to the other joined members, never stored. Repeats are
 * coalesced (one relay per user and conversation per TYPING_COALESCE_MS); a state not
 * refreshed within TYPING_TIMEOUT_MS ends by itself, and so does every state of a socket
 * that disconnects; the end is relayed as `isTyping: false`.
 */
@Injectable()
export class TypingService implements OnApplicationShutdown {
  private readonly states = new Map<string, TypingState>();

  constructor(
    private readonly realtime: RealtimeService,
    private readonly config: AppConfig,
  ) {}

  update(conversationId: string, userId: string, socketId: string, isTyping: boolean): { expiresAt: string } {
    const key = `${conversationId}\n${userId}`;
    const now = Date.now();
    const existing = this.states.get(key);
    if (!isTyping) {
      if (existing) this.stop(key, conversationId, userId);
      return { expiresAt: new Date(now).toISOString() };
    }
    const expiresAt = now + this.config.typing.timeoutMs;
    if (existing) clearTimeout(existing.timer);
    const timer = setTimeout(() => this.stop(key, conversationId, userId), this.config.typing.timeoutMs);
    timer.unref();
    const relay = !existing || now - existing.lastRelayAt >= this.config.typing.coalesceMs;
    this.states.set(key, { socketId, lastRelayAt: relay ? now : (existing?.lastRelayAt ?? now), expiresAt, timer });
    if (relay) {
      this.realtime.emitTyping(conversationId, {
        conversationId,
        userId,
        isTyping: true,
        expiresAt: new Date(expiresAt).toISOString(),
      });
    }
    return { expiresAt: new Date(expiresAt).toISOString() };
  }

  /** Ends every typing state the socket started (it disconnected or left). */
  socketGone(socketId: string, conversationId?: string): void {
    for (const [key, state] of this.states) {
      if (state.socketId !== socketId) continue;
      const [conv, userId] = key.split('\n');
      if (conversationId && conv !== conversationId) continue;
      this.stop(key, conv, userId);
    }
  }

  onApplicationShutdown(): void {
    for (const state of this.states.values()) clearTimeout(state.timer);
    this.states.clear();
  }

  private stop(key: string, conversationId: string, userId: string): void {
    const state = this.states.get(key);
    if (!state) return;
    clearTimeout(state.timer);
    this.states.delete(key);
    this.realtime.emitTyping(conversationId, {
      conversationId,
      userId,
      isTyping: false,
      expiresAt: new Date().toISOString(),
    });
  }
}
