// A CPU profiler driven over the service's inspector (node --inspect on loopback), so the
// bench profiles exactly the measured part of each scenario, not the boot.
import { once } from 'node:events';

export async function attachProfiler(port, { samplingIntervalUs = 500 } = {}) {
  let WebSocket;
  try {
    ({ default: WebSocket } = await import('ws')); // socket.io's own WebSocket library
  } catch {
    throw new Error('--cpu-prof needs the "ws" package (installed with socket.io)');
  }
  const targets = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
  const socket = new WebSocket(targets[0].webSocketDebuggerUrl, { perMessageDeflate: false, maxPayload: 2 ** 30 });
  await once(socket, 'open');
  let nextId = 1;
  const pending = new Map();
  socket.on('message', (data) => {
    const message = JSON.parse((Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data)).toString('utf8'));
    const waiter = pending.get(message.id);
    if (!waiter) return;
    pending.delete(message.id);
    if (message.error) waiter.reject(new Error(`inspector: ${message.error.message}`));
    else waiter.resolve(message.result);
  });
  socket.on('close', () => {
    for (const waiter of pending.values()) waiter.reject(new Error('inspector connection closed'));
    pending.clear();
  });
  const send = (method, params = {}) =>
    new Promise((resolve, reject) => {
      const id = nextId++;
      pending.set(id, { resolve, reject });
      socket.send(JSON.stringify({ id, method, params }));
    });
  if (process.env.BENCH_HEAP_PROF) {
    // Diagnostics: allocation sampling (objects the GC already collected included) instead of CPU.
    await send('HeapProfiler.enable');
    return {
      start: () =>
        send('HeapProfiler.startSampling', {
          samplingInterval: 4096,
          // BENCH_HEAP_PROF=retained: only what is still alive when sampling stops.
          includeObjectsCollectedByMajorGC: process.env.BENCH_HEAP_PROF !== 'retained',
          includeObjectsCollectedByMinorGC: process.env.BENCH_HEAP_PROF !== 'retained',
        }),
      stop: async () => {
        await send('HeapProfiler.collectGarbage');
        return (await send('HeapProfiler.stopSampling')).profile;
      },
      collectGarbage: () => send('HeapProfiler.collectGarbage'),
      close: () => socket.close(),
    };
  }
  await send('Profiler.enable');
  await send('Profiler.setSamplingInterval', { interval: samplingIntervalUs });
  return {
    /** A full garbage collection in the service (to tell retained memory from garbage). */
    collectGarbage: () => send('HeapProfiler.collectGarbage'),
    start: () => send('Profiler.start'),
    /** Stops sampling and returns the profile (.cpuprofile JSON). */
    stop: async () => (await send('Profiler.stop')).profile,
    close: () => socket.close(),
  };
}
