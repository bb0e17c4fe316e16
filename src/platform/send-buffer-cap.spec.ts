import { once } from 'node:events';
import { createServer, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';

import { Server, type Socket } from 'socket.io';
import { io as connectClient } from 'socket.io-client';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { stalledWebSocket } from '../../test/support/raw-socketio.js';
import { capSendBuffer, type EngineConnection } from './send-buffer-cap.js';

const LIMIT = 64 * 1024;
const CHUNK = 'x'.repeat(16 * 1024);

async function until(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

// The engine.io and ws surface capSendBuffer relies on, pinned so that an upgrade that
// changes it fails here: packetCreate and flush on the engine socket, the websocket
// transport's `socket` (ws: bufferedAmount, terminate), and close(true) closing at once.
describe('capSendBuffer', () => {
  let http: HttpServer;
  let server: Server;
  let port: number;
  let connections: Socket[];

  beforeEach(async () => {
    http = createServer();
    server = new Server(http, { transports: ['websocket'] });
    connections = [];
    // The raw test client waits for `session`, as from the service's /v1.
    server.of('/v1').on('connection', (socket) => {
      connections.push(socket);
      socket.emit('session', {});
    });
    http.listen(0, '127.0.0.1');
    await once(http, 'listening');
    port = (http.address() as AddressInfo).port;
  });

  afterEach(async () => {
    await server.close();
  });

  it('sees every packet engine.io creates and each flush of its buffer to the transport', async () => {
    const client = connectClient(`http://127.0.0.1:${port}/v1`, { transports: ['websocket'], forceNew: true });
    await until(() => connections.length === 1, 'the connection');
    const conn: EngineConnection = connections[0].conn;
    const created: unknown[] = [];
    const flushed: unknown[][] = [];
    conn.on('packetCreate', (packet: { data?: unknown }) => created.push(packet.data));
    conn.on('flush', (buffer: unknown[]) => flushed.push([...buffer]));

    connections[0].emit('chunk', CHUNK);
    expect(created).toEqual([`2/v1,["chunk","${CHUNK}"]`]);
    expect(flushed).toHaveLength(1);
    client.disconnect();
  });

  it('reads what a websocket holds unsent from the transport’s ws socket', async () => {
    const client = connectClient(`http://127.0.0.1:${port}/v1`, { transports: ['websocket'], forceNew: true });
    await until(() => connections.length === 1, 'the connection');
    const transport = connections[0].conn.transport as unknown as {
      name: string;
      socket: { bufferedAmount: unknown; terminate: unknown };
    };
    expect(transport.name).toBe('websocket');
    expect(typeof transport.socket.bufferedAmount).toBe('number');
    expect(typeof transport.socket.terminate).toBe('function');
    client.disconnect();
  });

  it('leaves a client that reads alone, however much flows to it over time', async () => {
    const client = connectClient(`http://127.0.0.1:${port}/v1`, { transports: ['websocket'], forceNew: true });
    let received = 0;
    client.on('chunk', () => received++);
    await until(() => connections.length === 1, 'the connection');
    const overflows: number[] = [];
    capSendBuffer(connections[0].conn, LIMIT, (held) => overflows.push(held));
    for (let i = 0; i < 64; i++) {
      connections[0].emit('chunk', CHUNK);
      await until(() => received > i, 'the client to read');
    }
    expect(overflows).toEqual([]);
    expect(client.connected).toBe(true);
    client.disconnect();
  });

  it('cuts a websocket client that stopped reading once it holds more than the limit, and at once', async () => {
    const stalled = await stalledWebSocket(port, { token: 't', deviceId: 'd' });
    await until(() => connections.length === 1, 'the connection');
    const socket = connections[0];
    const ws = (socket.conn.transport as unknown as { socket: { readyState: number } }).socket;
    const overflows: number[] = [];
    capSendBuffer(socket.conn, LIMIT, (held) => overflows.push(held));

    // Past what the kernel takes for a peer that does not read, the rest waits in the process.
    for (let i = 0; i < 2_000 && overflows.length === 0; i++) {
      socket.emit('chunk', CHUNK);
      await new Promise((resolve) => setImmediate(resolve));
    }
    expect(overflows).toHaveLength(1);
    expect(overflows[0]).toBeGreaterThan(LIMIT);
    expect(socket.conn.readyState).toBe('closed');
    expect(ws.readyState).toBeGreaterThanOrEqual(2); // CLOSING, its TCP socket destroyed
    expect(socket.connected).toBe(false);
    // The client gets what the kernel held, then the end: no close handshake to wait for.
    expect(await stalled.readToEnd(5_000)).toBeGreaterThan(0);
  });
});
