import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';

/** The kernel's range for outgoing connections' local ports (Linux), if readable. */
function ephemeralRange(): { low: number; high: number } | undefined {
  try {
    const [low, high] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    if (low !== undefined && high !== undefined && Number.isInteger(low) && Number.isInteger(high))
      return { low, high };
  } catch {
    // not Linux: let the kernel pick
  }
  return undefined;
}

/** Binds 127.0.0.1:`port` (0: any) exclusively, then frees it; resolves with the port, or undefined if taken. */
function probe(port: number): Promise<number | undefined> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', (error: NodeJS.ErrnoException) => {
      if (port !== 0 && (error.code === 'EADDRINUSE' || error.code === 'EACCES')) resolve(undefined);
      else reject(error);
    });
    server.listen({ port, host: '127.0.0.1', exclusive: true }, () => {
      const address = server.address();
      server.close(() => {
        if (address === null || typeof address === 'string') reject(new Error(`unexpected address ${String(address)}`));
        else resolve(address.port);
      });
    });
  });
}

/**
 * A TCP port free on 127.0.0.1 right now, for a server started shortly after.
 *
 * Prefers a random port below the kernel's ephemeral range, so that outgoing connections
 * (which take their local ports from that range) cannot grab it before the server binds;
 * falls back to a port picked by the kernel.
 */
export async function freePort(): Promise<number> {
  const range = ephemeralRange();
  const low = 20_000;
  const high = range !== undefined ? Math.min(range.low - 1, 65_535) : 0;
  if (high - low >= 1_000) {
    for (let attempt = 0; attempt < 20; attempt += 1) {
      const port = await probe(low + Math.floor(Math.random() * (high - low + 1)));
      if (port !== undefined) return port;
    }
  }
  const port = await probe(0);
  if (port === undefined) throw new Error('no free TCP port on 127.0.0.1');
  return port;
}
