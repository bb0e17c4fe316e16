import type { Socket } from 'socket.io';

/** The Engine.IO connection under a Socket.IO socket (`socket.conn`). */
export type EngineConnection = Socket['conn'];

/** What of engine.io's websocket transport this relies on: its `ws` socket (a private field). */
interface WebSocketTransport {
  readonly name: string;
  readonly socket?: { readonly bufferedAmount: number; terminate(): void };
}

/**
 * Bounds what the service holds unsent for one connection (SOCKET_SEND_BUFFER_BYTES):
 * once more than `limitBytes` waits for a peer that stopped reading, `onOverflow` is told
 * how much and the connection is cut.
 *
 * Unsent data sits in two places outside the kernel. While the transport is busy (a
 * websocket whose last write has not reached the kernel, a polling client that has not
 * polled) engine.io keeps packets in its write buffer; each one is announced by
 * `packetCreate` and the buffer is emptied by `flush`, so a running sum costs one
 * addition per packet instead of a walk over the buffer. Once flushed to a websocket,
 * the bytes sit in `ws` and the TCP socket, which `bufferedAmount` reports in O(1).
 * String packets count their length (their size in memory for one-byte strings), not
 * their UTF-8 length, which would mean a scan.
 *
 * Crossing the line only schedules a second look, after the writes of this turn of the
 * event loop were handed to the kernel (setImmediate: after the corked writes are
 * flushed, see write-coalescing.ts, and after the flushes their completions trigger). A
 * burst to a client that reads goes to the kernel; what a client that stopped reading
 * was sent stays, and is counted again. Cutting later rather than inside the write also
 * keeps Socket.IO's and the gateway's disconnect handlers out of the middle of a
 * broadcast loop.
 *
 * The engine socket is closed discarding its buffer, and the websocket is terminated
 * rather than closed: a close handshake would wait behind the unread data for ws's
 * 30 s timeout, holding it all. A polling client's next poll finds no session.
 */
export function capSendBuffer(
  conn: EngineConnection,
  limitBytes: number,
  onOverflow: (heldBytes: number) => void,
): void {
  let buffered = 0;
  let checking = false;
  const held = (): number => buffered + (websocketOf(conn)?.bufferedAmount ?? 0);
  const check = (): void => {
    checking = false;
    const bytes = held();
    if (bytes <= limitBytes || conn.readyState === 'closed') return;
    onOverflow(bytes);
    const ws = websocketOf(conn);
    conn.close(true);
    ws?.terminate();
  };
  conn.on('packetCreate', (packet: { data?: unknown }) => {
    buffered += sizeOf(packet.data);
    if (checking || held() <= limitBytes) return;
    checking = true;
    setImmediate(check);
  });
  conn.on('flush', () => {
    buffered = 0;
  });
}

function websocketOf(conn: EngineConnection): WebSocketTransport['socket'] {
  const transport = conn.transport as unknown as WebSocketTransport;
  return transport.name === 'websocket' ? transport.socket : undefined;
}

function sizeOf(data: unknown): number {
  if (typeof data === 'string') return data.length;
  if (ArrayBuffer.isView(data) || data instanceof ArrayBuffer) return data.byteLength;
  return 0;
}
