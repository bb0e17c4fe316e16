import { once } from 'node:events';
import { createServer, connect, type Server, type Socket } from 'node:net';

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

describe('coalesceWrites', () => {
  let pair: Awaited<ReturnType<typeof loopbackPair>>;

  beforeEach(async () => {
    pair = await loopbackPair();
  });

  afterEach(async () => {
    pair.client.destroy();
    await new Promise((resolve) => pair.server.close(resolve));
  });

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
