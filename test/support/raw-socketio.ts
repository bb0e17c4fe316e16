import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';

/**
 * Socket.IO clients spoken by hand, for tests that need what socket.io-client never
 * does: stop reading a websocket, or stop polling, while staying connected.
 */

/** Engine.IO v4 packet types, and Socket.IO's inside a `message` packet (`4`). */
const OPEN = '0';
const SOCKET_IO_CONNECT = '40';
const SOCKET_IO_CONNECT_ERROR = '44';
/** The record separator between packets of one polling payload. */
const PACKET_SEPARATOR = '\x1e';

const NAMESPACE = '/v1';

export interface HandshakeAuth {
  token: string;
  deviceId: string;
}

/** A websocket client that has its `session` and has stopped reading its TCP socket. */
export interface StalledWebSocket {
  socket: Socket;
  /**
   * Reads again and resolves once the server's end arrives (EOF, or a reset), with the
   * bytes that came after the stall; rejects after `timeoutMs`.
   */
  readToEnd(timeoutMs: number): Promise<number>;
}

/**
 * Opens a websocket to /socket.io/ over a bare TCP socket (HTTP upgrade, Engine.IO
 * `open`, Socket.IO CONNECT to /v1 with `auth`), waits for `session`, then pauses the
 * socket: Node stops reading from the kernel once its small buffer is full, and the
 * kernel's receive window closes behind it.
 */
export async function stalledWebSocket(port: number, auth: HandshakeAuth): Promise<StalledWebSocket> {
  const socket = connect(port, '127.0.0.1');
  socket.on('error', () => undefined);
  await once(socket, 'connect');
  socket.write(
    [
      'GET /socket.io/?EIO=4&transport=websocket HTTP/1.1',
      `Host: 127.0.0.1:${port}`,
      'Upgrade: websocket',
      'Connection: Upgrade',
      `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}`,
      'Sec-WebSocket-Version: 13',
      '',
      '',
    ].join('\r\n'),
  );
  await new Promise<void>((resolve, reject) => {
    let pending = Buffer.alloc(0);
    let upgraded = false;
    const finish = (error?: Error): void => {
      socket.off('data', onData);
      socket.off('close', onClose);
      if (error) reject(error);
      else resolve();
    };
    const onClose = (): void => finish(new Error('closed during the handshake'));
    const onData = (chunk: Buffer): void => {
      pending = Buffer.concat([pending, chunk]);
      if (!upgraded) {
        const headEnd = pending.indexOf('\r\n\r\n');
        if (headEnd < 0) return;
        const head = pending.subarray(0, headEnd).toString();
        if (!head.startsWith('HTTP/1.1 101')) return finish(new Error(`upgrade refused: ${head}`));
        upgraded = true;
        pending = pending.subarray(headEnd + 4);
      }
      for (let frame = readFrame(pending); frame; frame = readFrame(pending)) {
        pending = pending.subarray(frame.length);
        const text = frame.payload.toString();
        if (text.startsWith(OPEN))
          socket.write(maskedTextFrame(`${SOCKET_IO_CONNECT}${NAMESPACE},${JSON.stringify(auth)}`));
        else if (text.startsWith(`${SOCKET_IO_CONNECT_ERROR}${NAMESPACE},`)) return finish(new Error(text));
        else if (text.startsWith(`42${NAMESPACE},["session"`)) return finish();
      }
    };
    socket.on('data', onData);
    socket.on('close', onClose);
  });
  socket.pause();
  return {
    socket,
    readToEnd: (timeoutMs) =>
      new Promise<number>((resolve, reject) => {
        let bytes = 0;
        const timer = setTimeout(
          () =>
            reject(new Error(`the server did not end the stalled socket within ${timeoutMs} ms (${bytes} bytes read)`)),
          timeoutMs,
        );
        const done = (): void => {
          clearTimeout(timer);
          resolve(bytes);
        };
        socket.on('data', (chunk: Buffer) => (bytes += chunk.length));
        socket.once('end', done);
        socket.once('close', done);
        socket.resume();
      }),
  };
}

/** One server frame (unmasked), or undefined until `buffer` holds all of it. */
function readFrame(buffer: Buffer): { payload: Buffer; length: number } | undefined {
  if (buffer.length < 2) return undefined;
  let size = buffer[1] & 0x7f;
  let offset = 2;
  if (size === 126) {
    if (buffer.length < 4) return undefined;
    size = buffer.readUInt16BE(2);
    offset = 4;
  } else if (size === 127) {
    if (buffer.length < 10) return undefined;
    size = Number(buffer.readBigUInt64BE(2));
    offset = 10;
  }
  if (buffer.length < offset + size) return undefined;
  return { payload: buffer.subarray(offset, offset + size), length: offset + size };
}

/** A client text frame: clients must mask what they send (RFC 6455 section 5.3). */
function maskedTextFrame(text: string): Buffer {
  const payload = Buffer.from(text);
  const mask = randomBytes(4);
  const header =
    payload.length < 126
      ? Buffer.from([0x81, 0x80 | payload.length])
      : Buffer.from([0x81, 0x80 | 126, payload.length >> 8, payload.length & 0xff]);
  const masked = Buffer.from(payload.map((byte, i) => byte ^ mask[i % 4]));
  return Buffer.concat([header, mask, masked]);
}

/** A polling client that has its `session` and then stops polling. */
export interface StalledPolling {
  sid: string;
  /** One more poll: the HTTP status (400 once the server dropped the session). */
  poll(): Promise<number>;
}

/**
 * Opens an Engine.IO polling session (HTTP GET for `open`, POST of the Socket.IO CONNECT
 * to /v1), polls until `session` arrives, then polls no more: whatever the server sends
 * next waits in its buffer for a poll that does not come.
 */
export async function stalledPolling(baseUrl: string, auth: HandshakeAuth): Promise<StalledPolling> {
  const endpoint = `${baseUrl}/socket.io/?EIO=4&transport=polling`;
  const opened = await (await fetch(endpoint)).text();
  if (!opened.startsWith(OPEN)) throw new Error(`no open packet: ${opened}`);
  const { sid } = JSON.parse(opened.slice(1)) as { sid: string };
  const session = `${endpoint}&sid=${encodeURIComponent(sid)}`;
  const posted = await fetch(session, {
    method: 'POST',
    headers: { 'content-type': 'text/plain;charset=UTF-8' },
    body: `${SOCKET_IO_CONNECT}${NAMESPACE},${JSON.stringify(auth)}`,
  });
  if (posted.status !== 200) throw new Error(`CONNECT refused: HTTP ${posted.status}`);
  const deadline = Date.now() + 10_000;
  for (;;) {
    const response = await fetch(session, { signal: AbortSignal.timeout(10_000) });
    const body = await response.text();
    if (response.status !== 200) throw new Error(`poll failed: HTTP ${response.status} ${body}`);
    const packets = body.split(PACKET_SEPARATOR);
    const refused = packets.find((packet) => packet.startsWith(`${SOCKET_IO_CONNECT_ERROR}${NAMESPACE},`));
    if (refused) throw new Error(refused);
    if (packets.some((packet) => packet.startsWith(`42${NAMESPACE},["session"`))) break;
    if (Date.now() > deadline) throw new Error('no session within 10 s of polling');
  }
  return {
    sid,
    poll: async () => {
      const response = await fetch(session, { signal: AbortSignal.timeout(10_000) });
      await response.arrayBuffer();
      return response.status;
    },
  };
}
