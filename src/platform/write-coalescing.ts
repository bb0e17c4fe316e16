import type { Socket } from 'node:net';

const coalesced = new WeakSet<Socket>();

/**
 * Write coalescing for a busy TCP socket: the first write corks the socket and it is
 * uncorked once the current callback and its promise continuations are done
 * (process.nextTick), so every frame written in between (a group commit's replies and
 * deliveries, the Redis commands of one fan-out) leaves in one `writev` instead of one
 * system call each. Nothing waits past the current tick; write order, return values and
 * callbacks are unchanged (callbacks fire once the data is handed to the kernel).
 * Measured with `npm run bench -- --scenario throughput`: 0.29-0.30 → 0.19-0.23 ms of
 * server CPU per message (deferring to setImmediate instead coalesced less well).
 */
export function coalesceWrites(socket: Socket): void {
  if (coalesced.has(socket)) return;
  coalesced.add(socket);
  let corked = false;
  const uncork = (): void => {
    corked = false;
    socket.uncork();
  };
  const write = socket.write.bind(socket) as (...args: Parameters<Socket['write']>) => boolean;
  socket.write = function coalescingWrite(...args: Parameters<Socket['write']>): boolean {
    if (!corked && !socket.destroyed && !socket.writableEnded) {
      corked = true;
      socket.cork();
      process.nextTick(uncork);
    }
    return write(...args);
  } as Socket['write'];
}
