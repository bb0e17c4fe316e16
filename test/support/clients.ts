import { SignJWT } from 'jose';
import { io, type Socket } from 'socket.io-client';

import type {
  ClientToServerEvents,
  Reply,
  ServerToClientEvents,
  SessionPayload,
  WireMessage,
} from '@messaging-service/client/protocol';
import { TEST_JWT_SECRET } from './app.js';

export type ClientSocket = Socket<ServerToClientEvents, ClientToServerEvents>;

/** An HS256 token the test service accepts (override claims or the secret to break it). */
export async function mintToken(
  userId: string | undefined,
  options: { ttlSec?: number; claims?: Record<string, unknown>; secret?: string } = {},
): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  let jwt = new SignJWT({ exp: now + (options.ttlSec ?? 3600), ...options.claims }).setProtectedHeader({
    alg: 'HS256',
  });
  if (userId !== undefined) jwt = jwt.setSubject(userId);
  return jwt.sign(new TextEncoder().encode(options.secret ?? TEST_JWT_SECRET));
}

/** A connected client with everything the server sent it collected. */
export interface TestClient {
  socket: ClientSocket;
  session: SessionPayload;
  messages: WireMessage[];
  events: { event: string; payload: unknown }[];
  /** Sends a request and resolves with its reply (fails after 10 s without one). */
  request<T = unknown>(event: string, payload?: unknown): Promise<Reply<T>>;
  /** Resolves once `count` messages have arrived (fails after `timeoutMs`). */
  waitForMessages(count: number, timeoutMs?: number): Promise<WireMessage[]>;
  waitForEvent<T = unknown>(event: string, predicate?: (payload: T) => boolean, timeoutMs?: number): Promise<T>;
  close(): void;
}

export interface ConnectOptions {
  token?: string;
  deviceId?: string;
  transports?: ('websocket' | 'polling')[];
  auth?: Record<string, unknown>;
}

/** Connects to `/v1` and waits for `session`; rejects with the connect_error otherwise. */
export async function connect(baseUrl: string, userId: string, options: ConnectOptions = {}): Promise<TestClient> {
  const token = options.token ?? (await mintToken(userId));
  const socket: ClientSocket = io(`${baseUrl}/v1`, {
    auth: options.auth ?? { token, deviceId: options.deviceId ?? 'device-1' },
    transports: options.transports ?? ['websocket'],
    reconnection: false,
    forceNew: true,
    timeout: 10_000,
  });
  const messages: WireMessage[] = [];
  const events: { event: string; payload: unknown }[] = [];
  socket.on('message', (message) => messages.push(message));
  socket.onAny((event: string, payload: unknown) => events.push({ event, payload }));

  const waitForEvent = <T>(event: string, predicate: (payload: T) => boolean = () => true, timeoutMs = 10_000) =>
    new Promise<T>((resolve, reject) => {
      const seen = events.find((e) => e.event === event && predicate(e.payload as T));
      if (seen) return resolve(seen.payload as T);
      const timer = setTimeout(() => {
        socket.offAny(listener);
        reject(new Error(`no "${event}" within ${timeoutMs} ms`));
      }, timeoutMs);
      const listener = (name: string, payload: unknown) => {
        if (name === event && predicate(payload as T)) {
          clearTimeout(timer);
          socket.offAny(listener);
          resolve(payload as T);
        }
      };
      socket.onAny(listener);
    });

  const session = await new Promise<SessionPayload>((resolve, reject) => {
    socket.once('session', resolve);
    socket.once('connect_error', reject);
    socket.once('error', (error) => reject(new Error(`error before session: ${JSON.stringify(error)}`)));
    socket.once('disconnect', (reason) => reject(new Error(`disconnected before session: ${reason}`)));
  });

  return {
    socket,
    session,
    messages,
    events,
    request: <T>(event: string, payload?: unknown) =>
      (payload === undefined
        ? (socket.timeout(10_000) as unknown as Socket).emitWithAck(event)
        : (socket.timeout(10_000) as unknown as Socket).emitWithAck(event, payload)) as Promise<Reply<T>>,
    waitForMessages: async (count, timeoutMs = 10_000) => {
      const deadline = Date.now() + timeoutMs;
      while (messages.length < count) {
        if (Date.now() > deadline)
          throw new Error(`got ${messages.length} of ${count} messages within ${timeoutMs} ms`);
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      return messages;
    },
    waitForEvent,
    close: () => socket.disconnect(),
  };
}

/** Connects expecting a refusal; resolves with connect_error's message and data. */
export async function connectRefused(
  baseUrl: string,
  auth: Record<string, unknown>,
  extraHeaders?: Record<string, string>,
): Promise<{ message: string; data: unknown }> {
  const socket: ClientSocket = io(`${baseUrl}/v1`, {
    auth,
    transports: ['websocket'],
    reconnection: false,
    forceNew: true,
    extraHeaders,
  });
  try {
    return await new Promise((resolve, reject) => {
      socket.once('connect_error', (error: Error & { data?: unknown }) =>
        resolve({ message: error.message, data: error.data }),
      );
      socket.once('session', () => reject(new Error('connected, but a refusal was expected')));
      setTimeout(() => reject(new Error('neither connect nor connect_error within 10 s')), 10_000).unref();
    });
  } finally {
    socket.disconnect();
  }
}

/** Unwraps a successful reply, failing with the error otherwise. */
export function dataOf<T>(reply: Reply<T>): T {
  if (!reply.ok) throw new Error(`request failed: ${JSON.stringify(reply.error)}`);
  return reply.data;
}
