import { io, type Socket } from 'socket.io-client';

import { AckBatcher } from './acks.js';
import { backoffDelay, type BackoffOptions } from './backoff.js';
import { EndToEnd, type KeyChange } from './e2e/end-to-end.js';
import { ClientError } from './errors.js';
import { Inbox } from './inbox.js';
import { Listeners } from './listeners.js';
import { Outbox } from './outbox.js';
import { ERROR_CODES } from './protocol.js';
import type {
  ClientToServerEvents,
  ErrorCode,
  ErrorEventPayload,
  JoinData,
  MembershipPayload,
  PresencePayload,
  ReceiptPayload,
  Reply,
  ReplyDataOf,
  RequestOf,
  ServerToClientEvents,
  SessionPayload,
  TypingPayload,
  WireMessage,
  WireError,
} from './protocol.js';
import { memoryStorage } from './storage/memory.js';
import type { ClientStorage, OutboxEntry, StoredSend } from './storage/storage.js';
import { StorageWriter } from './storage-writer.js';

/**
 * A message as the app receives it (PROTOCOL.md section 1). With `e2e: true` (the
 * option), a message of an e2e conversation comes with `e2e: true` and its decrypted
 * `body`, or with `undecryptable: true` and no body when this device cannot open it.
 */
export interface Message extends WireMessage {
  /** The message came end-to-end encrypted (`ciphertext` on the wire); `body` is what this device decrypted. */
  e2e?: true;
  /** With `e2e`: this device cannot open it (sent before its key existed, not sealed to it, or tampered with). */
  undecryptable?: true;
}

export type { KeyChange } from './e2e/end-to-end.js';

export type ClientState = 'idle' | 'connecting' | 'connected' | 'reconnecting' | 'closed';

export interface StateChange {
  state: ClientState;
  /** With 'reconnecting': the retry's number, from 0, reset once connected. */
  attempt?: number;
  /** With 'reconnecting': how long until that retry. */
  delayMs?: number;
  /** With 'closed' when it was not `close()`: why the client gave up. */
  error?: ClientError;
}

export interface SyncedEvent {
  /** Messages the drain of the offline queue emitted. */
  delivered: number;
  durationMs: number;
}

/** The events of `client.on` and their listeners. */
export interface ClientEvents {
  /** At most once per id, in strictly increasing seq per conversation; may return a promise (acked once it settles). */
  message: (message: Message) => unknown;
  typing: (payload: TypingPayload) => void;
  receipt: (payload: ReceiptPayload) => void;
  presence: (payload: PresencePayload) => void;
  membership: (payload: MembershipPayload) => void;
  session: (payload: SessionPayload) => void;
  state: (change: StateChange) => void;
  synced: (event: SyncedEvent) => void;
  error: (error: ClientError) => void;
  /** Any server event this SDK does not know, so that nothing is dropped silently. */
  unknownEvent: (name: string, payload: unknown) => void;
  /**
   * With `e2e: true`: a peer device's public key is not the one this client saw before
   * (keys are trusted on first use); compare fingerprints out of band.
   */
  keyChange: (change: KeyChange) => void;
}

export type TokenSource = string | (() => string | Promise<string>);

export interface MessagingClientOptions {
  /** The service's base URL; the SDK adds the `/v1` namespace. */
  url: string;
  /** PROTOCOL.md section 1 deviceId: stable per install. */
  deviceId: string;
  /** A JWT, or a function asked again before the token expires and when the server refuses it. */
  token: TokenSource;
  /** Default memoryStorage(). */
  storage?: ClientStorage;
  /** Full-jitter reconnect backoff; defaults 500 ms and 20 s. */
  reconnect?: Partial<BackoffOptions>;
  /** A send without a reply by then is resent with the same clientMsgId (default 10,000). */
  sendTimeoutMs?: number;
  /** Ack each message once its 'message' listeners ran (default true). */
  autoAck?: boolean;
  /** Ping interval while connected (default 15,000). */
  heartbeatMs?: number;
  /** A ping left unanswered this long counts as a dropped connection (default 10,000). */
  heartbeatTimeoutMs?: number;
  /** Timeout of join/leave/read/history/ack/ping and of waiting for a connection (default 10,000). */
  requestTimeoutMs?: number;
  /** How long a handshake may take (default 10,000). */
  connectTimeoutMs?: number;
  /** How long a later seq waits for a missing one before it is fetched with history (default 250). */
  gapWaitMs?: number;
  /**
   * Socket.IO transports (default websocket only: the one that works across instances
   * without sticky sessions). Add 'polling' for networks that block WebSockets.
   */
  transports?: ('websocket' | 'polling')[];
  /**
   * End-to-end encryption (default false): the device gets an X25519 key pair, kept in
   * the storage and published before `connect()` resolves; `send(id, { body })` into an
   * e2e conversation encrypts on the device, and received e2e messages are decrypted.
   * The storage must implement `getDeviceKey`/`putDeviceKey` (the shipped ones do).
   */
  e2e?: boolean;
}

export interface ClientMetrics {
  state: ClientState;
  connects: number;
  reconnects: number;
  lastConnectMs: number | undefined;
  rttMs: number | undefined;
  sent: number;
  resent: number;
  received: number;
  duplicatesDropped: number;
  gapsFilled: number;
  outboxDepth: number;
}

export type SendContent = { body: string; ciphertext?: never } | { ciphertext: string; body?: never };
export interface SendOptions {
  contentType?: string;
  clientMsgId?: string;
}

type WireSocket = Socket<ServerToClientEvents, ClientToServerEvents>;

const CLIENT_MSG_ID = /^[A-Za-z0-9_-]{1,64}$/;
/** Typing is refreshed this often while it stays true (the server ends it after 6 s). */
const TYPING_REFRESH_MS = 4_000;
const KNOWN_SERVER_EVENTS: ReadonlySet<string> = new Set<keyof ServerToClientEvents>([
  'session',
  'message',
  'typing',
  'receipt',
  'presence',
  'membership',
  'error',
]);

/** A user's device keys are read again after this long (a reinstalled device's new key). */
const E2E_KEY_MAX_AGE_MS = 60_000;

/** Failures to publish the device key that end the client (connect() rejects with them). */
const KEY_PUBLISH_FINAL: ReadonlySet<string> = new Set(['storage_error', 'bad_request', 'forbidden', 'conflict']);

/** REST statuses to codes, for a reply without a wire error body. */
const STATUS_CODES: Record<number, ErrorCode> = {
  400: 'bad_request',
  401: 'unauthorized',
  403: 'forbidden',
  404: 'not_found',
  409: 'conflict',
  413: 'payload_too_large',
  429: 'rate_limited',
};

/**
 * The typed client of the messaging service (SDK.md): one socket that heals itself, an
 * outbox that never loses a send, and a receiving side that emits every message once and
 * in order, caught up after every reconnect.
 *
 * @example
 *   const client = new MessagingClient({ url: 'https://chat.example.com', deviceId: 'web-1', token: getToken });
 *   client.on('message', (message) => render(message));
 *   await client.connect();
 *   await client.send(conversationId, { body: 'hello' });
 */
export class MessagingClient {
  private currentState: ClientState = 'idle';
  private readonly options: Required<Omit<MessagingClientOptions, 'storage' | 'reconnect' | 'token'>> & {
    reconnect: BackoffOptions;
  };
  private readonly storage: ClientStorage;
  private readonly writer: StorageWriter;
  private readonly listeners: Listeners<ClientEvents>;
  private readonly sending: Outbox;
  private readonly inbox: Inbox;
  private readonly acks: AckBatcher;
  private readonly loaded: Promise<void>;
  private readonly e2e: EndToEnd | undefined;

  private socket: WireSocket | undefined;
  /** Bumped whenever a socket is abandoned: callbacks of an older socket check it and stop. */
  private generation = 0;
  private attempt = 0;
  private attemptStartedAt = 0;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private heartbeatTimer: ReturnType<typeof setInterval> | undefined;
  private tokenTimer: ReturnType<typeof setTimeout> | undefined;
  private session: SessionPayload | undefined;
  private firstConnect:
    { promise: Promise<SessionPayload>; resolve(s: SessionPayload): void; reject(e: unknown): void } | undefined;
  private connectedWaiters: { resolve(): void; reject(e: ClientError): void }[] = [];
  private readonly requests = new Set<(error: ClientError) => void>();

  private readonly tokenSource: TokenSource;
  private token: string | undefined;
  private tokenExpiresAtMs: number | undefined;
  /** How long before expiry the token is replaced: a quarter of its life, at most a minute. */
  private tokenMarginMs = 60_000;
  private refusedTokens = 0;

  private readonly joined = new Set<string>();
  private readonly typingTimers = new Map<string, ReturnType<typeof setInterval>>();
  /** autoAck off, while a drain runs: what the app acked, and the page ids the drain waits for. */
  private drainAcks: { acked: Set<string>; waiting?: { ids: Set<string>; done(): void } } | undefined;
  private readonly onlineListener = () => this.retryNow();
  private readonly counters = { connects: 0, reconnects: 0, lastConnectMs: undefined as number | undefined };
  private rttMs: number | undefined;

  constructor(options: MessagingClientOptions) {
    if (!CLIENT_MSG_ID.test(options.deviceId)) {
      throw new ClientError('bad_request', 'deviceId must match ^[A-Za-z0-9_-]{1,64}$');
    }
    this.options = {
      url: options.url.replace(/\/+$/, ''),
      deviceId: options.deviceId,
      sendTimeoutMs: options.sendTimeoutMs ?? 10_000,
      autoAck: options.autoAck ?? true,
      heartbeatMs: options.heartbeatMs ?? 15_000,
      heartbeatTimeoutMs: options.heartbeatTimeoutMs ?? 10_000,
      requestTimeoutMs: options.requestTimeoutMs ?? 10_000,
      connectTimeoutMs: options.connectTimeoutMs ?? 10_000,
      gapWaitMs: options.gapWaitMs ?? 250,
      transports: options.transports ?? ['websocket'],
      e2e: options.e2e ?? false,
      reconnect: { minDelayMs: 500, maxDelayMs: 20_000, ...options.reconnect },
    };
    this.tokenSource = options.token;
    if (typeof options.token === 'string') this.token = options.token;
    this.storage = options.storage ?? memoryStorage();
    const storage = this.storage;
    if (this.options.e2e && (!storage.getDeviceKey || !storage.putDeviceKey)) {
      throw new ClientError('bad_request', 'e2e: true needs a storage with getDeviceKey and putDeviceKey');
    }
    const reportError = (error: ClientError) => this.reportError(error);
    this.listeners = new Listeners<ClientEvents>((event, error) => {
      // An 'error' listener that throws is not reported again (it would loop).
      if (event !== 'error') {
        this.reportError(ClientError.from(error, 'listener_error'), { event });
      }
    });
    this.writer = new StorageWriter(this.storage, (error) => reportError(ClientError.from(error, 'storage_error')));
    this.acks = new AckBatcher(
      (messageIds) => this.request('ack', { messageIds }, { waitForConnection: false }),
      () => this.session?.limits.maxBatch ?? 100,
      reportError,
    );
    this.e2e = this.options.e2e
      ? new EndToEnd({
          deviceId: this.options.deviceId,
          userId: () => this.session?.userId,
          rest: (method, path, body) => this.rest(method, path, body),
          loadKey: () => this.writer.read(() => storage.getDeviceKey!()).catch(storageFailure),
          saveKey: (key) => this.writer.read(() => storage.putDeviceKey!(key)).catch(storageFailure),
          maxMessageBytes: () => this.session?.limits.maxMessageBytes,
          onKeyChange: (change) => void this.listeners.emit('keyChange', change),
          keyMaxAgeMs: E2E_KEY_MAX_AGE_MS,
          now,
          onError: reportError,
        })
      : undefined;
    const e2e = this.e2e;
    this.sending = new Outbox({
      writer: this.writer,
      transmit: (payload, reply) => {
        const socket = this.connectedSocket();
        if (!socket) return false;
        socket.emit('send', payload, reply);
        return true;
      },
      connected: () => this.connectedSocket() !== undefined,
      sendTimeoutMs: this.options.sendTimeoutMs,
      retryDelay: (failures) => this.backoff(failures),
      onStored: (message) => void this.inbox.accept([message], 'own'),
      onError: reportError,
      ...(e2e
        ? {
            seal: (entry: StoredSend) => e2e.seal(entry),
            devicesChanged: (entry: StoredSend, details: Record<string, unknown> | undefined) =>
              e2e.devicesChanged(entry.conversationId, details),
          }
        : {}),
    });
    this.inbox = new Inbox({
      writer: this.writer,
      isOwn: (message) => message.senderDeviceId === this.options.deviceId && message.senderId === this.session?.userId,
      deliver: (message) => this.listeners.emit('message', this.present(message)),
      ackDuplicate: (messageId) => this.acks.add(messageId),
      delivered: (messageId) => {
        if (this.options.autoAck) this.acks.add(messageId);
      },
      sending: (conversationId) => this.sending.sending(conversationId),
      history: (conversationId, afterSeq, limit) => this.request('history', { conversationId, afterSeq, limit }),
      gapWaitMs: this.options.gapWaitMs,
      retryDelay: (failures) => this.backoff(failures),
      onError: reportError,
    });
    this.loaded = this.storage.load().then((state) => {
      this.sending.restore(state.outbox);
      this.inbox.restore(state.highWater);
    });
    // Reported through connect()/send(); this only keeps it from being an unhandled rejection.
    this.loaded.catch(() => undefined);
  }

  /** The connection's state; every change is also emitted as 'state'. */
  get state(): ClientState {
    return this.currentState;
  }

  /**
   * Connects (and stays connected until `close()`). Resolves with the first session;
   * rejects when the first handshake is refused for good (`unauthorized`, `bad_request`).
   */
  connect(): Promise<SessionPayload> {
    if (this.currentState === 'closed') return Promise.reject(new ClientError('closed', 'the client is closed'));
    if (this.session && this.currentState === 'connected') return Promise.resolve(this.session);
    if (!this.firstConnect) {
      let resolve!: (s: SessionPayload) => void;
      let reject!: (e: unknown) => void;
      const promise = new Promise<SessionPayload>((res, rej) => ((resolve = res), (reject = rej)));
      this.firstConnect = { promise, resolve, reject };
      if (typeof window !== 'undefined') window.addEventListener('online', this.onlineListener);
      this.setState({ state: 'connecting' });
      void this.open();
    }
    return this.firstConnect.promise;
  }

  /** Stops the client. Sends not yet stored stay in a durable storage's outbox for the next client. */
  async close(): Promise<void> {
    if (this.currentState === 'closed') return;
    this.shutDown(undefined);
    await this.writer.idle();
    await this.storage.close?.();
  }

  on<E extends keyof ClientEvents>(event: E, listener: ClientEvents[E]): () => void {
    return this.listeners.on(event, listener);
  }

  /**
   * Sends a message: written to the outbox first, resent until stored, in call order per
   * conversation. Resolves with the stored message; rejects only on a permanent error.
   */
  send(conversationId: string, content: SendContent, options: SendOptions = {}): Promise<Message> {
    const result = this.enqueueSend(conversationId, content, options).then((message) => this.present(message));
    // An app that does not await a send (it is in the outbox either way) must not crash on
    // an unhandled rejection; one that awaits still gets the rejection.
    result.catch(() => undefined);
    return result;
  }

  private async enqueueSend(conversationId: string, content: SendContent, options: SendOptions): Promise<WireMessage> {
    const clientMsgId = options.clientMsgId ?? randomId();
    const body = (content as { body?: unknown }).body;
    const ciphertext = (content as { ciphertext?: unknown }).ciphertext;
    if (typeof conversationId !== 'string' || conversationId.length === 0) {
      throw new ClientError('bad_request', 'conversationId must be a non-empty string');
    }
    if ((typeof body === 'string') === (typeof ciphertext === 'string')) {
      throw new ClientError('bad_request', 'give exactly one of body or ciphertext, as a string');
    }
    if (!CLIENT_MSG_ID.test(clientMsgId)) {
      throw new ClientError('bad_request', 'clientMsgId must match ^[A-Za-z0-9_-]{1,64}$');
    }
    const maxBytes = this.session?.limits.maxMessageBytes;
    if (maxBytes !== undefined && typeof body === 'string' && new TextEncoder().encode(body).length > maxBytes) {
      throw new ClientError('payload_too_large', `body is over ${maxBytes} bytes`);
    }
    await this.loadedOrThrow();
    return this.sending.send({
      clientMsgId,
      conversationId,
      ...(typeof body === 'string' ? { body } : { ciphertext: ciphertext as string }),
      ...(options.contentType !== undefined ? { contentType: options.contentType } : {}),
      // Sealed on the device, right before it goes out, if the conversation is e2e.
      ...(this.e2e && typeof body === 'string' ? { e2e: true } : {}),
    });
  }

  /** The sends not yet stored, oldest first, as the storage holds them. */
  async outbox(): Promise<OutboxEntry[]> {
    await this.loadedOrThrow();
    const state = await this.writer.read(() => this.storage.load());
    return state.outbox.map(({ clientMsgId, conversationId, createdAt, attempts }) => ({
      clientMsgId,
      conversationId,
      createdAt,
      attempts,
    }));
  }

  /** Subscribes this socket to the conversation's typing, presence and receipts; kept across reconnects. */
  async join(conversationId: string): Promise<JoinData> {
    const data = await this.request('join', { conversationId });
    this.joined.add(conversationId);
    return data;
  }

  async leave(conversationId: string): Promise<Record<string, never>> {
    this.joined.delete(conversationId);
    return this.request('leave', { conversationId });
  }

  read(conversationId: string, seq: number): Promise<{ readSeq: number }> {
    return this.request('read', { conversationId, seq });
  }

  /** A page of the conversation's stored messages; with `e2e: true` decrypted as for 'message'. */
  async history(
    conversationId: string,
    range: { beforeSeq?: number; afterSeq?: number; limit?: number } = {},
  ): Promise<{ messages: Message[]; hasMore: boolean }> {
    const page = await this.request('history', { conversationId, ...range });
    return { ...page, messages: page.messages.map((message) => this.present(message)) };
  }

  /**
   * This device's e2e key fingerprint (BLAKE2b-256 of the public key, 16 groups of 4 hex
   * digits), for comparing out of band. Makes the key pair if it does not exist yet.
   *
   * @example
   *   showSafetyNumber(await client.deviceKeyFingerprint()); // 'a1b2 c3d4 …'
   */
  async deviceKeyFingerprint(): Promise<string> {
    if (!this.e2e) throw new ClientError('bad_request', 'end-to-end encryption is off (option e2e)');
    await this.e2e.ready();
    return this.e2e.fingerprint()!;
  }

  /** Acks messages by id (for `autoAck: false`); resolves with how many left the queue. */
  async ack(messageIds: string[]): Promise<{ acked: number }> {
    let acked = 0;
    const size = this.session?.limits.maxBatch ?? 100;
    for (let start = 0; start < messageIds.length; start += size) {
      acked += (await this.request('ack', { messageIds: messageIds.slice(start, start + size) })).acked;
    }
    const drain = this.drainAcks;
    if (drain) {
      for (const id of messageIds) {
        drain.acked.add(id);
        drain.waiting?.ids.delete(id);
      }
      if (drain.waiting?.ids.size === 0) drain.waiting.done();
    }
    return { acked };
  }

  async ping(): Promise<{ rttMs: number; serverTime: string }> {
    const started = now();
    const data = await this.request('ping', { t: started });
    this.rttMs = now() - started;
    return { rttMs: this.rttMs, serverTime: data.serverTime };
  }

  /** Fire-and-forget: repeats are coalesced, and a true state is refreshed until set false. */
  typing(conversationId: string, isTyping: boolean): void {
    const refreshing = this.typingTimers.get(conversationId);
    if (isTyping === (refreshing !== undefined)) return;
    if (isTyping) {
      this.typingTimers.set(
        conversationId,
        setInterval(() => this.emitTyping(conversationId, true), TYPING_REFRESH_MS),
      );
    } else {
      clearInterval(refreshing);
      this.typingTimers.delete(conversationId);
    }
    this.emitTyping(conversationId, isTyping);
  }

  metrics(): ClientMetrics {
    return {
      state: this.currentState,
      connects: this.counters.connects,
      reconnects: this.counters.reconnects,
      lastConnectMs: this.counters.lastConnectMs,
      rttMs: this.rttMs,
      sent: this.sending.counters.sent,
      resent: this.sending.counters.resent,
      received: this.inbox.counters.received,
      duplicatesDropped: this.inbox.counters.duplicatesDropped,
      gapsFilled: this.inbox.counters.gapsFilled,
      outboxDepth: this.sending.depth,
    };
  }

  // ---- connection -------------------------------------------------------------------

  private async open(): Promise<void> {
    const generation = ++this.generation;
    this.attemptStartedAt = now();
    let token: string;
    try {
      await this.loadedOrThrow();
      token = await this.currentToken();
    } catch (error) {
      if (generation !== this.generation || this.currentState === 'closed') return;
      const failure = ClientError.from(error, 'token_error');
      if (failure.code === 'storage_error') return this.shutDown(failure);
      this.reportError(failure);
      return this.scheduleRetry();
    }
    if (generation !== this.generation || this.currentState === 'closed') return;
    if (this.e2e) {
      // A device that never sends must still be able to read: its key is published before
      // the first connect resolves.
      try {
        await this.e2e.publish();
      } catch (error) {
        if (this.abandoned(generation)) return;
        const failure = ClientError.from(error, 'unavailable');
        // The token or the device id is refused, as a handshake would refuse them.
        if (failure.code === 'unauthorized' || failure.code === 'token_expired' || failure.code === 'rate_limited') {
          return this.onHandshakeRefused(failure.code, failure.details);
        }
        // No retry helps: the key cannot be kept, or the device is not this user's to key.
        if (KEY_PUBLISH_FINAL.has(failure.code)) return this.shutDown(failure);
        this.reportError(failure);
        return this.scheduleRetry();
      }
      if (this.abandoned(generation)) return;
    }
    const socket: WireSocket = io(`${this.options.url}/v1`, {
      auth: { token, deviceId: this.options.deviceId },
      transports: this.options.transports,
      reconnection: false,
      forceNew: true,
      timeout: this.options.connectTimeoutMs,
    });
    this.socket = socket;
    const current = () => generation === this.generation;
    socket.on('session', (session) => {
      if (current()) this.onSession(session);
    });
    socket.on('connect_error', (error: Error & { data?: { details?: Record<string, unknown> } }) => {
      if (current()) this.onHandshakeRefused(error.message, error.data?.details);
    });
    socket.on('disconnect', (reason) => {
      if (current()) this.drop(new ClientError('unavailable', `disconnected: ${reason}`));
    });
    socket.on('message', (message) => {
      if (current()) void this.inbox.accept([message], 'live');
    });
    socket.on('typing', (payload) => {
      if (current()) void this.listeners.emit('typing', payload);
    });
    socket.on('receipt', (payload) => {
      if (current()) void this.listeners.emit('receipt', payload);
    });
    socket.on('presence', (payload) => {
      if (current()) void this.listeners.emit('presence', payload);
    });
    socket.on('membership', (payload) => {
      if (!current()) return;
      this.e2e?.onMembership(payload);
      void this.listeners.emit('membership', payload);
    });
    socket.on('error', (payload) => {
      if (current()) this.onServerError(payload);
    });
    socket.onAny((name: string, payload: unknown) => {
      if (current() && !KNOWN_SERVER_EVENTS.has(name)) void this.listeners.emit('unknownEvent', name, payload);
    });
  }

  private onSession(session: SessionPayload): void {
    this.session = session;
    this.attempt = 0;
    this.refusedTokens = 0;
    this.counters.connects++;
    if (this.counters.connects > 1) this.counters.reconnects++;
    this.counters.lastConnectMs = now() - this.attemptStartedAt;
    this.setTokenExpiry(Date.parse(session.tokenExpiresAt));
    this.setState({ state: 'connected' });
    void this.listeners.emit('session', session);
    this.firstConnect?.resolve(session);
    for (const waiter of this.connectedWaiters.splice(0)) waiter.resolve();
    const generation = this.generation;
    this.heartbeatTimer = setInterval(() => this.heartbeat(generation), this.options.heartbeatMs);
    this.scheduleTokenRefresh(generation);
    this.sending.pumpAll();
    for (const conversationId of this.typingTimers.keys()) this.emitTyping(conversationId, true);
    void this.rejoin(generation);
    void this.drain(generation);
  }

  private onHandshakeRefused(code: string, details: Record<string, unknown> | undefined): void {
    this.abandonSocket();
    const error = new ClientError(isWireCode(code) ? code : 'unavailable', `handshake refused: ${code}`, details);
    switch (code) {
      case 'bad_request':
        return this.shutDown(error);
      case 'unauthorized':
      case 'token_expired':
        // A string token cannot get better; a provider gets one more chance with a fresh
        // token before the refusal is final.
        if (typeof this.tokenSource === 'string' || ++this.refusedTokens > 1) return this.shutDown(error);
        this.token = undefined;
        return this.scheduleRetry();
      case 'rate_limited':
        return this.scheduleRetry(Number(details?.retryAfterMs ?? 0));
      default:
        return this.scheduleRetry();
    }
  }

  private onServerError(payload: ErrorEventPayload): void {
    const error = new ClientError(payload.code, payload.message, {
      ...payload.details,
      ...(payload.event !== undefined ? { event: payload.event } : {}),
    });
    if (payload.code === 'session_replaced') return this.shutDown(error);
    // The server disconnects right after; the reconnect asks the provider for a new token.
    if (payload.code === 'token_expired') this.token = undefined;
    this.reportError(error);
  }

  /** The socket is gone (or stopped answering): everything in flight goes again on the next one. */
  private drop(reason: ClientError): void {
    if (this.currentState === 'closed') return;
    this.abandonSocket();
    for (const reject of [...this.requests]) reject(reason);
    this.scheduleRetry();
  }

  private abandonSocket(): void {
    this.generation++;
    clearInterval(this.heartbeatTimer);
    clearTimeout(this.tokenTimer);
    this.heartbeatTimer = this.tokenTimer = undefined;
    const socket = this.socket;
    this.socket = undefined;
    if (socket) {
      socket.removeAllListeners();
      socket.offAny();
      socket.disconnect();
    }
    this.sending.disconnected();
    this.inbox.setSynced(false);
    // A drain waiting for the app's acks lets go: the next connection drains again.
    this.drainAcks?.waiting?.done();
  }

  private scheduleRetry(atLeastMs = 0): void {
    if (this.currentState === 'closed') return;
    const delayMs = Math.max(atLeastMs, this.backoff(this.attempt));
    this.setState({ state: 'reconnecting', attempt: this.attempt, delayMs });
    this.attempt++;
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      void this.open();
    }, delayMs);
  }

  /** A browser came back online: the scheduled retry goes now. */
  private retryNow(): void {
    if (this.retryTimer === undefined) return;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    void this.open();
  }

  private shutDown(error: ClientError | undefined): void {
    if (this.currentState === 'closed') return;
    this.abandonSocket();
    clearTimeout(this.retryTimer);
    for (const timer of this.typingTimers.values()) clearInterval(timer);
    this.typingTimers.clear();
    if (typeof window !== 'undefined') window.removeEventListener('online', this.onlineListener);
    const closed = error ?? new ClientError('closed', 'the client is closed');
    for (const reject of [...this.requests]) reject(closed);
    for (const waiter of this.connectedWaiters.splice(0)) waiter.reject(closed);
    this.sending.close();
    this.inbox.close();
    this.setState(error ? { state: 'closed', error } : { state: 'closed' });
    // Without a session yet, connect() learns why; after one, 'state' and 'error' tell.
    if (!this.session) this.firstConnect?.reject(closed);
    if (error) this.reportError(error);
  }

  private heartbeat(generation: number): void {
    const socket = this.connectedSocket();
    if (!socket || generation !== this.generation) return;
    const started = now();
    const timer = setTimeout(() => {
      if (generation === this.generation) this.drop(new ClientError('timeout', 'heartbeat unanswered'));
    }, this.options.heartbeatTimeoutMs);
    socket.emit('ping', { t: started }, () => {
      clearTimeout(timer);
      if (generation === this.generation) this.rttMs = now() - started;
    });
  }

  // ---- tokens -----------------------------------------------------------------------

  private async currentToken(): Promise<string> {
    if (typeof this.tokenSource === 'string') return this.tokenSource;
    const expiresAt = this.tokenExpiresAtMs;
    if (this.token && (expiresAt === undefined || expiresAt - Date.now() > this.tokenMarginMs)) return this.token;
    return this.freshToken();
  }

  private async freshToken(): Promise<string> {
    const provider = this.tokenSource as () => string | Promise<string>;
    let token: unknown;
    try {
      token = await provider();
    } catch (error) {
      throw ClientError.from(error, 'token_error');
    }
    if (typeof token !== 'string' || token.length === 0) {
      throw new ClientError('token_error', 'the token provider returned no token');
    }
    this.token = token;
    this.setTokenExpiry(jwtExpiryMs(token));
    return token;
  }

  private setTokenExpiry(expiresAtMs: number | undefined): void {
    this.tokenExpiresAtMs = expiresAtMs !== undefined && Number.isFinite(expiresAtMs) ? expiresAtMs : undefined;
    if (this.tokenExpiresAtMs !== undefined) {
      this.tokenMarginMs = Math.min(60_000, Math.max(250, (this.tokenExpiresAtMs - Date.now()) / 4));
    }
  }

  /** With a provider, a fresh token goes over `auth` before the current one expires. */
  private scheduleTokenRefresh(generation: number): void {
    if (typeof this.tokenSource === 'string' || this.tokenExpiresAtMs === undefined) return;
    const wait = Math.max(0, this.tokenExpiresAtMs - this.tokenMarginMs - Date.now());
    clearTimeout(this.tokenTimer);
    this.tokenTimer = setTimeout(() => void this.refreshToken(generation), wait);
  }

  private async refreshToken(generation: number): Promise<void> {
    try {
      const token = await this.freshToken();
      const data = await this.request('auth', { token }, { waitForConnection: false });
      if (generation !== this.generation) return;
      this.setTokenExpiry(Date.parse(data.tokenExpiresAt));
      this.scheduleTokenRefresh(generation);
    } catch (error) {
      if (generation !== this.generation) return;
      const failure = ClientError.from(error, 'token_error');
      this.reportError(failure);
      if (failure.code === 'unauthorized' || failure.code === 'forbidden' || failure.code === 'token_expired') {
        // The server will not take it over this socket: a new handshake asks again.
        this.token = undefined;
        this.drop(failure);
      } else {
        this.tokenTimer = setTimeout(() => void this.refreshToken(generation), this.backoff(0) + 1_000);
      }
    }
  }

  // ---- catching up ------------------------------------------------------------------

  /**
   * Drains the offline queue after a (re)connect: pages of `get-unacked` until `hasMore`
   * is false, each acked before the next is asked for (the queue has no cursor), then
   * 'synced'. A failed page drops the connection: the next one drains again.
   */
  private async drain(generation: number): Promise<void> {
    const started = now();
    if (!this.options.autoAck) this.drainAcks = { acked: new Set() };
    let delivered = 0;
    let previousFirst: string | undefined;
    let repeats = 0;
    try {
      for (;;) {
        const page = await this.request('get-unacked', { limit: this.session?.limits.maxBatch ?? 100 });
        if (generation !== this.generation) return;
        const first = page.messages[0]?.id;
        repeats = first !== undefined && first === previousFirst ? repeats + 1 : 0;
        if (repeats >= 3) throw new ClientError('internal', 'the offline queue does not move: acks are not taking');
        previousFirst = first;
        const emitted = await this.inbox.accept(page.messages, 'drain');
        delivered += emitted.length;
        if (!page.hasMore) break;
        if (this.options.autoAck) await this.acks.settled();
        else await this.waitForAppAcks(emitted);
        if (generation !== this.generation) return;
      }
    } catch (error) {
      if (generation !== this.generation) return;
      const failure = ClientError.from(error, 'internal');
      this.reportError(failure);
      return this.drop(failure);
    }
    this.drainAcks = undefined;
    this.inbox.setSynced(true);
    void this.listeners.emit('synced', { delivered, durationMs: now() - started });
  }

  /** autoAck off: the queue moves only when the app acks, so the next page waits for it. */
  private async waitForAppAcks(emitted: string[]): Promise<void> {
    const drain = this.drainAcks;
    if (!drain) return;
    const ids = new Set(emitted.filter((id) => !drain.acked.has(id)));
    if (ids.size > 0) await new Promise<void>((done) => (drain.waiting = { ids, done }));
    drain.waiting = undefined;
    drain.acked.clear();
  }

  private async rejoin(generation: number): Promise<void> {
    for (const conversationId of [...this.joined]) {
      if (generation !== this.generation) return;
      try {
        await this.request('join', { conversationId }, { waitForConnection: false });
      } catch (error) {
        const failure = ClientError.from(error, 'internal');
        if (failure.code === 'forbidden' || failure.code === 'not_found') this.joined.delete(conversationId);
        if (generation === this.generation) this.reportError(failure, { conversationId });
      }
    }
  }

  // ---- requests ---------------------------------------------------------------------

  /** One request and its reply; waits for a connection first unless told not to. */
  private async request<E extends keyof ClientToServerEvents>(
    event: E,
    payload: RequestOf<E>,
    options: { waitForConnection?: boolean } = {},
  ): Promise<ReplyDataOf<E>> {
    const deadline = now() + this.options.requestTimeoutMs;
    let socket = this.connectedSocket();
    if (!socket) {
      if (options.waitForConnection === false) throw new ClientError('unavailable', 'not connected');
      await this.whenConnected(this.options.requestTimeoutMs);
      socket = this.connectedSocket();
      if (!socket) throw new ClientError('unavailable', 'not connected');
    }
    const wire = socket as unknown as Socket;
    return new Promise<ReplyDataOf<E>>((resolve, reject) => {
      const fail = (error: ClientError) => {
        clearTimeout(timer);
        this.requests.delete(fail);
        reject(error);
      };
      const timer = setTimeout(
        () => fail(new ClientError('timeout', `${event}: no reply within ${this.options.requestTimeoutMs} ms`)),
        Math.max(0, deadline - now()),
      );
      this.requests.add(fail);
      wire.emit(event, payload, (reply: Reply<ReplyDataOf<E>>) => {
        if (!this.requests.has(fail)) return;
        clearTimeout(timer);
        this.requests.delete(fail);
        if (reply.ok) resolve(reply.data);
        else reject(new ClientError(reply.error.code, reply.error.message, reply.error.details));
      });
    });
  }

  private whenConnected(timeoutMs: number): Promise<void> {
    if (this.connectedSocket()) return Promise.resolve();
    if (this.currentState === 'closed') return Promise.reject(new ClientError('closed', 'the client is closed'));
    return new Promise<void>((resolve, reject) => {
      const waiter = {
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (error: ClientError) => {
          clearTimeout(timer);
          reject(error);
        },
      };
      const timer = setTimeout(() => {
        this.connectedWaiters = this.connectedWaiters.filter((w) => w !== waiter);
        reject(new ClientError('timeout', `not connected within ${timeoutMs} ms`));
      }, timeoutMs);
      this.connectedWaiters.push(waiter);
    });
  }

  private connectedSocket(): WireSocket | undefined {
    return this.currentState === 'connected' ? this.socket : undefined;
  }

  private emitTyping(conversationId: string, isTyping: boolean): void {
    const socket = this.connectedSocket();
    // Ephemeral: while disconnected there is nothing to tell; a true state is re-sent on connect.
    if (!socket) return;
    socket.emit('typing', { conversationId, isTyping }, (reply) => {
      if (!reply.ok && reply.error.code !== 'rate_limited') {
        this.reportError(
          new ClientError(reply.error.code, reply.error.message, { ...reply.error.details, conversationId }),
        );
      }
    });
  }

  // ---- plumbing ---------------------------------------------------------------------

  /** Whether the connection attempt `generation` was given up while it awaited something. */
  private abandoned(generation: number): boolean {
    return generation !== this.generation || this.currentState === 'closed';
  }

  /** A message as the app gets it: decrypted when it is e2e and the client is too. */
  private present(message: WireMessage): Message {
    return this.e2e ? this.e2e.open(message) : message;
  }

  /** One REST call on the service with the current token; resolves with the reply's `data`. */
  private async rest<T>(method: 'GET' | 'PUT', path: string, body?: unknown): Promise<T> {
    const token = await this.currentToken();
    let response: Response;
    try {
      response = await fetch(`${this.options.url}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${token}`,
          ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
        signal: AbortSignal.timeout(this.options.requestTimeoutMs),
      });
    } catch (error) {
      throw ClientError.from(error, 'unavailable');
    }
    const json = (await response.json().catch(() => undefined)) as { data?: T; error?: WireError } | undefined;
    if (response.ok && json && 'data' in json) return json.data as T;
    const wire = json?.error;
    const code = wire && isWireCode(wire.code) ? wire.code : (STATUS_CODES[response.status] ?? 'unavailable');
    throw new ClientError(code, wire?.message ?? `${method} ${path}: HTTP ${response.status}`, {
      ...wire?.details,
      status: response.status,
    });
  }

  private async loadedOrThrow(): Promise<void> {
    try {
      await this.loaded;
    } catch (error) {
      throw ClientError.from(error, 'storage_error');
    }
  }

  private backoff(attempt: number): number {
    return backoffDelay(attempt, this.options.reconnect);
  }

  private setState(change: StateChange): void {
    this.currentState = change.state;
    void this.listeners.emit('state', change);
  }

  private reportError(error: ClientError, context?: Record<string, unknown>): void {
    const reported = context ? new ClientError(error.code, error.message, { ...error.details, ...context }) : error;
    void this.listeners.emit('error', reported);
  }
}

function storageFailure(error: unknown): never {
  throw ClientError.from(error, 'storage_error');
}

function now(): number {
  return globalThis.performance.now();
}

function randomId(): string {
  return globalThis.crypto.randomUUID();
}

const WIRE_CODES: ReadonlySet<string> = new Set(ERROR_CODES);
function isWireCode(code: string): code is ErrorCode {
  return WIRE_CODES.has(code);
}

/** A JWT's `exp` in ms, read without verifying (only to know when to ask for a new one). */
function jwtExpiryMs(token: string): number | undefined {
  try {
    const payload = token.split('.')[1];
    if (!payload) return undefined;
    const json = JSON.parse(atob(payload.replace(/-/g, '+').replace(/_/g, '/'))) as { exp?: unknown };
    return typeof json.exp === 'number' ? json.exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}
