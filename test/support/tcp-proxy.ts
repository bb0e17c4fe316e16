import { createServer, connect, type AddressInfo, type Socket } from 'node:net';

/** One client connection and its upstream twin. */
interface Pair {
  client: Socket;
  upstream: Socket;
  targetPort: number;
}

interface RandomCuts {
  /** Resolves with the number of cuts made once all are done (or `stop()` was called). */
  done: Promise<number>;
  stop(): void;
}

/**
 * A TCP proxy on 127.0.0.1 in front of a service, for tests that break the network under a
 * client: `cutAll()` resets every open connection at once (both directions, as a network
 * change on a phone would), `retarget()` sends new connections to another port, or round
 * robin over several (a load balancer failing over to the healthy instances), and
 * `cutRandomly()` cuts at random moments, a bounded number of times. New connections are
 * accepted again right after a cut.
 */
export interface TcpProxy {
  /** http://127.0.0.1:<port> */
  url: string;
  port: number;
  /** The port the next new connection is forwarded to. */
  readonly targetPort: number;
  /** Connections accepted so far, by the target port they were forwarded to. */
  readonly accepted: ReadonlyMap<number, number>;
  /** Connections open right now, by target port. */
  openByTarget(): Map<number, number>;
  /** How many times cutAll() ran (directly or through cutRandomly). */
  readonly cuts: number;
  /** Forwards new connections to `port`, or to each of `ports` in turn; open ones stay. */
  retarget(port: number | readonly number[]): void;
  /**
   * Stops relaying the service's bytes to the clients on the connections open now (what the
   * clients send still reaches the service): requests are served, their replies held.
   * A cutAll() afterwards loses those replies, as a network dropping mid-reply would.
   */
  holdReplies(): void;
  /** Resets every open connection; returns how many pairs it cut. */
  cutAll(): number;
  /** `count` cuts, each after a random wait in [minGapMs, maxGapMs]. */
  cutRandomly(options: { count: number; minGapMs: number; maxGapMs: number }): RandomCuts;
  close(): Promise<void>;
}

/** Destroys a socket abruptly (RST where the platform allows), ignoring late errors. */
function reset(socket: Socket): void {
  socket.on('error', () => undefined);
  if (socket.destroyed) return;
  if (typeof socket.resetAndDestroy === 'function' && socket.readyState !== 'opening') socket.resetAndDestroy();
  else socket.destroy();
}

/** Starts a proxy on a free 127.0.0.1 port forwarding to 127.0.0.1:`targetPort`. */
export async function startTcpProxy(targetPort: number): Promise<TcpProxy> {
  const pairs = new Set<Pair>();
  const accepted = new Map<number, number>();
  let targets: readonly number[] = [targetPort];
  let turn = 0;
  const nextTarget = () => targets[turn++ % targets.length];
  let cuts = 0;
  const timers = new Set<NodeJS.Timeout>();

  const server = createServer((client) => {
    const target = nextTarget();
    const upstream = connect({ host: '127.0.0.1', port: target });
    const pair: Pair = { client, upstream, targetPort: target };
    pairs.add(pair);
    accepted.set(target, (accepted.get(target) ?? 0) + 1);
    const end = () => {
      if (!pairs.delete(pair)) return;
      reset(client);
      reset(upstream);
    };
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    client.pipe(upstream);
    upstream.pipe(client);
    client.on('error', end);
    upstream.on('error', end);
    client.on('close', end);
    upstream.on('close', end);
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;

  const cutAll = (): number => {
    cuts += 1;
    const open = [...pairs];
    pairs.clear();
    for (const pair of open) {
      reset(pair.client);
      reset(pair.upstream);
    }
    return open.length;
  };

  return {
    url: `http://127.0.0.1:${port}`,
    port,
    get targetPort() {
      return targets[turn % targets.length];
    },
    get accepted() {
      return accepted;
    },
    get cuts() {
      return cuts;
    },
    openByTarget: () => {
      const open = new Map<number, number>();
      for (const pair of pairs) open.set(pair.targetPort, (open.get(pair.targetPort) ?? 0) + 1);
      return open;
    },
    retarget: (next) => {
      const ports = typeof next === 'number' ? [next] : [...next];
      if (ports.length === 0) throw new Error('retarget needs at least one port');
      targets = ports;
      turn = 0;
    },
    holdReplies: () => {
      for (const { client, upstream } of pairs) {
        upstream.unpipe(client);
        upstream.pause();
      }
    },
    cutAll,
    cutRandomly: ({ count, minGapMs, maxGapMs }) => {
      let made = 0;
      let stopped = false;
      let finish!: (made: number) => void;
      const done = new Promise<number>((resolve) => (finish = resolve));
      const next = () => {
        if (stopped || made >= count) return finish(made);
        const timer = setTimeout(
          () => {
            timers.delete(timer);
            if (stopped) return finish(made);
            cutAll();
            made += 1;
            next();
          },
          minGapMs + Math.random() * (maxGapMs - minGapMs),
        );
        timers.add(timer);
      };
      next();
      return {
        done,
        stop: () => {
          stopped = true;
          for (const timer of timers) clearTimeout(timer);
          timers.clear();
          finish(made);
        },
      };
    },
    close: async () => {
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const pair of [...pairs]) {
        reset(pair.client);
        reset(pair.upstream);
      }
      pairs.clear();
      await closed;
    },
  };
}
