import { once } from 'node:events';
import { createServer, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';

import { IoAdapter } from '@nestjs/platform-socket.io';
import { WebSocketsController } from '@nestjs/websockets/web-sockets-controller.js';
import { from, type Observable } from 'rxjs';
import { Server, type Socket } from 'socket.io';
import { io as connectClient, type Socket as ClientSocket } from 'socket.io-client';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { IoAdapterWithoutIdleBindings } from './nest-io-bind-handlers.js';

type Handlers = Parameters<IoAdapter['bindMessageHandlers']>[1];
/** As Nest's: a handler's result, awaited, is what goes back. */
const transform = (result: unknown): Observable<unknown> => from(Promise.resolve(result));

/** What the stock adapter keeps per socket (a private field). */
function disconnectStreams(adapter: IoAdapter): WeakMap<Socket, unknown> {
  return (adapter as unknown as { disconnectMap: WeakMap<Socket, unknown> }).disconnectMap;
}

// What IoAdapterWithoutIdleBindings relies on, pinned so that a Nest upgrade that changes
// it fails here: Nest binds a gateway's messages per connection with
// bindMessageHandlers(socket, handlers, transform), handlers being the gateway's
// @SubscribeMessage list (empty for ours), and the stock binding keeps a disconnect stream
// per socket even when that list is empty.
describe('IoAdapterWithoutIdleBindings', () => {
  let http: HttpServer;
  let server: Server;
  let client: ClientSocket;
  let socket: Socket;

  beforeEach(async () => {
    http = createServer();
    server = new Server(http, { transports: ['websocket'] });
    http.listen(0, '127.0.0.1');
    await once(http, 'listening');
    const { port } = http.address() as AddressInfo;
    client = connectClient(`http://127.0.0.1:${port}`, { transports: ['websocket'], forceNew: true });
    [socket] = (await once(server, 'connection')) as [Socket];
  });

  afterEach(async () => {
    client.disconnect();
    await server.close();
  });

  it('overrides Nest’s per-connection binding, which gets the gateway’s handler list second', () => {
    expect(Object.getOwnPropertyDescriptor(IoAdapter.prototype, 'bindMessageHandlers')?.value).toHaveLength(3);
    const calls: unknown[][] = [];
    const controller = {
      config: { getIoAdapter: () => ({ bindMessageHandlers: (...args: unknown[]) => calls.push(args) }) },
    };
    const subscribeMessages = Object.getOwnPropertyDescriptor(WebSocketsController.prototype, 'subscribeMessages')
      ?.value as (this: unknown, subscribers: unknown[], client: unknown, instance: unknown) => void;
    subscribeMessages.call(controller, [], socket, {});
    expect(calls).toHaveLength(1);
    expect(calls[0][0]).toBe(socket);
    expect(calls[0][1]).toEqual([]);
    expect(typeof calls[0][2]).toBe('function');
  });

  it('is needed: Nest’s binding keeps a disconnect stream per socket even with no handlers', () => {
    const adapter = new IoAdapter();
    adapter.bindMessageHandlers(socket, [], transform);
    expect(disconnectStreams(adapter).has(socket)).toBe(true);
  });

  it('binds nothing and keeps nothing for a socket when the gateway has no message handlers', () => {
    const adapter = new IoAdapterWithoutIdleBindings();
    const listeners = socket.eventNames().map((name) => socket.listenerCount(name));
    adapter.bindMessageHandlers(socket, [], transform);
    expect(disconnectStreams(adapter).has(socket)).toBe(false);
    expect(socket.eventNames().map((name) => socket.listenerCount(name))).toEqual(listeners);
  });

  it('leaves a gateway’s message handlers to Nest, which binds and answers them', async () => {
    const adapter = new IoAdapterWithoutIdleBindings();
    const handlers: Handlers = [
      {
        message: 'ping',
        methodName: 'ping',
        isAckHandledManually: false,
        callback: (data: unknown) => Promise.resolve(`pong ${String(data)}`),
      },
    ];
    adapter.bindMessageHandlers(socket, handlers, transform);
    expect(disconnectStreams(adapter).has(socket)).toBe(true);
    expect(await client.emitWithAck('ping', 'a')).toBe('pong a');
  });
});
