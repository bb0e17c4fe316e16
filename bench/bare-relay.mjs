// The ceiling: a bare Socket.IO relay on the same Node and transport as the service, with
// no auth, no storage and no queue. It speaks just enough of the /v1 contract for the same
// load generator to drive it:
//   handshake auth { userId, deviceId, rooms: [conversationId…] } joins those rooms;
//   `session` right after connect; `send` relays a Message to the conversation's room
//   (the sender's socket excluded) and replies { ok, data: { message, duplicate } };
//   `ack` and `get-unacked` reply at once (nothing is ever queued).
// Started by bench/run.mjs with child_process.fork; reports { port } over IPC once listening.
import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';

import { Server } from 'socket.io';

const LIMITS = { maxMessageBytes: 65_536, maxBatch: 100 };

const http = createServer((request, response) => {
  response.writeHead(request.url === '/health/ready' ? 200 : 404).end();
});
const io = new Server(http, { pingInterval: 25_000, pingTimeout: 20_000, connectTimeout: 10_000 });
const seqs = new Map();

io.of('/v1').on('connection', (socket) => {
  const auth = socket.handshake.auth ?? {};
  const userId = String(auth.userId ?? 'anonymous');
  const deviceId = String(auth.deviceId ?? 'device');
  const rooms = Array.isArray(auth.rooms) ? auth.rooms.map(String) : [];
  if (rooms.length > 0) void socket.join(rooms);
  socket.emit('session', {
    userId,
    deviceId,
    sessionId: randomUUID(),
    serverTime: new Date().toISOString(),
    tokenExpiresAt: new Date(Date.now() + 3_600_000).toISOString(),
    unacked: 0,
    limits: LIMITS,
  });

  socket.on('send', (payload, ack) => {
    const conversationId = String(payload?.conversationId);
    const seq = (seqs.get(conversationId) ?? 0) + 1;
    seqs.set(conversationId, seq);
    const message = {
      id: randomUUID(),
      conversationId,
      seq,
      senderId: userId,
      senderDeviceId: deviceId,
      clientMsgId: payload?.clientMsgId,
      contentType: payload?.contentType ?? 'text/plain',
      body: payload?.body,
      createdAt: new Date().toISOString(),
    };
    socket.to(conversationId).emit('message', message);
    if (typeof ack === 'function') ack({ ok: true, data: { message, duplicate: false } });
  });
  socket.on('ack', (payload, ack) => {
    const acked = Array.isArray(payload?.messageIds) ? payload.messageIds.length : 0;
    if (typeof ack === 'function') ack({ ok: true, data: { acked } });
  });
  socket.on('get-unacked', (_payload, ack) => {
    if (typeof ack === 'function') ack({ ok: true, data: { messages: [], hasMore: false } });
  });
});

http.listen(Number(process.env.BARE_RELAY_PORT ?? 0), '127.0.0.1', () => {
  process.send?.({ type: 'listening', port: http.address().port });
});

const stop = () => {
  void io.close();
  http.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2_000).unref();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.on('disconnect', stop); // the orchestrator is gone
