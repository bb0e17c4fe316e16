// A Socket.IO server on loopback with a given adapter and one connected client in 'room':
// the specs of src/platform/'s adapter patches drive it. Its Redis clients come from the
// caller (test/support/redis-doubles.ts' unreachableRedis, usually), wrapped here so the
// channels the adapter publishes to are recorded.
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

import type { createAdapter } from '@socket.io/redis-adapter';
import type { Redis } from 'ioredis';
import { Server } from 'socket.io';
import { io as connectClient, type Socket as ClientSocket } from 'socket.io-client';

type AdapterFactory = ReturnType<typeof createAdapter>;

/** The client, recording the channel of every `publish` before passing it on. */
export function recordingPublisher(client: Redis): { client: Redis; channels: string[] } {
  const channels: string[] = [];
  const recording = new Proxy(client, {
    get(target, property) {
      if (property === 'publish') {
        return (channel: string, message: Buffer | string) => {
          channels.push(channel);
          return target.publish(channel, message);
        };
      }
      const value = Reflect.get(target, property) as unknown;
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
  return { client: recording, channels };
}

export interface AdapterHarness {
  server: Server;
  client: ClientSocket;
  close(): void;
}

/** Serves with `adapter`; resolves once the client's socket is connected (and joined 'room'). */
export async function serveWithAdapter(adapter: AdapterFactory): Promise<AdapterHarness> {
  const http = createServer();
  const server = new Server(http, { transports: ['websocket'] });
  server.adapter(adapter);
  server.on('connection', (socket) => void socket.join('room'));
  http.listen(0, '127.0.0.1');
  await once(http, 'listening');
  const { port } = http.address() as AddressInfo;
  const client = connectClient(`http://127.0.0.1:${port}`, { transports: ['websocket'], forceNew: true });
  await once(server, 'connection');
  return {
    server,
    client,
    close: () => {
      client.disconnect();
      // Not server.close(): the adapter's close would unsubscribe through an unreachable client.
      http.close();
    },
  };
}
