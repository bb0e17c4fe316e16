import { once } from 'node:events';
import { createServer as createHttpServer } from 'node:http';
import { createServer, connect, Socket, type Server } from 'node:net';

import { Redis } from 'ioredis';
import { Server as IoServer } from 'socket.io';
import { io as connectClient } from 'socket.io-client';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { coalesceWrites } from './write-coalescing.js';

/** A loopback pair: `client` writes, the server side collects what arrives. */
async function loopbackPair(): Promise<{ client: Socket; received: () => string; server: Server }> {
  let data = '';
  const server = createServer((peer) => peer.on('data', (chunk: Buffer) => (data += chunk.toString())));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  const client = connect(port, '127.0.0.1');
  await once(client, 'connect');
  return { client, received: () => data, server };
}

/** Counts the system-call-level writes the socket issues: one `writev` or one `write` each. */
function countFlushes(socket: Socket): { writev: number[]; single: number } {
  const counts = { writev: [] as number[], single: 0 };
  const internals = socket as unknown as {
    _writev: (chunks: unknown[], cb: () => void) => void;
    _write: (chunk: unknown, encoding: string, cb: () => void) => void;
  };
  const writev = internals._writev.bind(socket);
  const write = internals._write.bind(socket);
  internals._writev = (chunks, cb) => {
    counts.writev.push(chunks.length);
    writev(chunks, cb);
  };
  internals._write = (chunk, encoding, cb) => {
    counts.single += 1;
    write(chunk, encoding, cb);
  };
  return counts;
}

async function until(condition: () => boolean): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** A fresh loopback pair for each test of the enclosing describe, closed after it. */
function useLoopbackPair(): Awaited<ReturnType<typeof loopbackPair>> {
  const current = {} as Awaited<ReturnType<typeof loopbackPair>>;
  beforeEach(async () => {
    Object.assign(current, await loopbackPair());
  });
  afterEach(async () => {
    current.client.destroy();
    await new Promise((resolve) => current.server.close(resolve));
  });
  return current;
}

// What coalesceWrites relies on, pinned so that a Node, ws or ioredis upgrade that changes
// it fails here: cork() holds writes until as many uncork() calls, then sends them in one
// writev; ws and ioredis write through the socket's own `write` property (so the
// replacement is what they call), ws on the socket the HTTP server's `upgrade` hands out,
// ioredis on `stream` by the time it emits `connect`.
describe('the socket surface coalesceWrites relies on', () => {
  const pair = useLoopbackPair();

  it('sends what a corked socket was given in one writev once uncorked', async () => {
    const counts = countFlushes(pair.client);
    pair.client.cork();
    pair.client.write('a');
    pair.client.write('b');
    expect(pair.client.writableCorked).toBe(1);
    await new Promise((resolve) => setImmediate(resolve));
    expect(pair.received()).toBe('');
    pair.client.uncork();
    await until(() => pair.received() === 'ab');
    expect(counts).toEqual({ writev: [2], single: 0 });
  });

  it('keeps a socket corked through a nested cork and uncork (as ws’s sender does per frame)', async () => {
    const counts = countFlushes(pair.client);
    pair.client.cork();
    pair.client.cork();
    pair.client.write('a');
    pair.client.uncork();
    expect(pair.client.writableCorked).toBe(1);
    pair.client.write('b');
    pair.client.uncork();
    await until(() => pair.received() === 'ab');
    expect(counts).toEqual({ writev: [2], single: 0 });
  });

  it('has ws write its frames through the `write` of the socket the upgrade event hands out', async () => {
    const http = createHttpServer();
    const io = new IoServer(http, { transports: ['websocket'] });
    const writes: unknown[] = [];
    http.on('upgrade', (_request: unknown, socket: Socket) => {
      expect(socket).toBeInstanceOf(Socket);
      const write = socket.write.bind(socket) as (...args: Parameters<Socket['write']>) => boolean;
      socket.write = ((...args: Parameters<Socket['write']>) => {
        writes.push(args[0]);
        return write(...args);
      }) as Socket['write'];
    });
    http.listen(0, '127.0.0.1');
    await once(http, 'listening');
    const { port } = http.address() as { port: number };
    try {
      const client = connectClient(`http://127.0.0.1:${port}`, { transports: ['websocket'], forceNew: true });
      const [serverSide] = (await once(io, 'connection')) as [{ emit(event: string, data: string): void }];
      const got = new Promise<unknown>((resolve) => client.once('greeting', resolve));
      const before = writes.length;
      serverSide.emit('greeting', 'hello');
      expect(await got).toBe('hello');
      expect(writes.length).toBeGreaterThan(before);
      client.disconnect();
    } finally {
      await io.close();
    }
  });

  it('has ioredis expose its net socket as `stream` on `connect` and write commands through its `write`', async () => {
    const { port } = pair.server.address() as { port: number };
    const client = new Redis({
      host: '127.0.0.1',
      port,
      protocol: 2,
      enableReadyCheck: false,
      disableClientInfo: true,
      retryStrategy: () => null,
    });
    client.on('error', () => undefined);
    try {
      await once(client, 'connect');
      expect(client.stream).toBeInstanceOf(Socket);
      const written: string[] = [];
      const write = client.stream.write.bind(client.stream) as (...args: Parameters<Socket['write']>) => boolean;
      client.stream.write = ((...args: Parameters<Socket['write']>) => {
        written.push(String(args[0]));
        return write(...args);
      }) as Socket['write'];
      await once(client, 'ready');
      // The loopback peer never answers; only the write matters.
      void client.echo('coalesced').catch(() => undefined);
      expect(written.join('')).toContain('coalesced');
    } finally {
      client.disconnect();
    }
  });
});

describe('coalesceWrites', () => {
  const pair = useLoopbackPair();

  it('sends the writes of one tick, promise continuations included, as one writev, in order', async () => {
    coalesceWrites(pair.client);
    const counts = countFlushes(pair.client);
    const callbacks: number[] = [];
    pair.client.write('a', () => callbacks.push(1));
    pair.client.write('b', () => callbacks.push(2));
    await Promise.resolve();
    pair.client.write('c', () => callbacks.push(3));
    await until(() => pair.received() === 'abc');
    expect(counts).toEqual({ writev: [3], single: 0 });
    await until(() => callbacks.length === 3);
    expect(callbacks).toEqual([1, 2, 3]);
  });

  it('holds nothing past the tick: a later write goes out on its own', async () => {
    coalesceWrites(pair.client);
    const counts = countFlushes(pair.client);
    pair.client.write('x');
    await until(() => pair.received() === 'x');
    await new Promise((resolve) => setImmediate(resolve));
    pair.client.write('y');
    await until(() => pair.received() === 'xy');
    expect(counts.writev.length + counts.single).toBe(2);
  });

  it('without it, each write of the tick is its own system call (what it saves)', async () => {
    const counts = countFlushes(pair.client);
    pair.client.write('a');
    pair.client.write('b');
    pair.client.write('c');
    await until(() => pair.received() === 'abc');
    expect(counts.writev.length + counts.single).toBeGreaterThan(1);
  });

  it('leaves a socket that ends within the tick able to finish', async () => {
    coalesceWrites(pair.client);
    pair.client.write('bye');
    pair.client.end();
    await once(pair.client, 'finish');
    await until(() => pair.received() === 'bye');
  });
});
