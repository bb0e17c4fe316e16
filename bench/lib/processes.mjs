// Child processes of the bench: every one is tracked from the moment it starts, so the
// orchestrator can stop them all at the end, on an error or on Ctrl-C.
import { fork } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const tracked = new Set();

function running(child) {
  return child.exitCode === null && child.signalCode === null;
}

/** Remembers `child` until it exits; stopAllChildren() stops whatever is left. */
export function track(name, child) {
  const entry = { name, child };
  tracked.add(entry);
  child.once('exit', () => tracked.delete(entry));
  return child;
}

/** Resolves once `child` exited: SIGTERM (or `signal`) first, SIGKILL after `graceMs`. */
export async function stopChild(child, { signal = 'SIGTERM', graceMs = 10_000 } = {}) {
  if (!child || !running(child)) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill(signal);
  const inTime = await Promise.race([exited.then(() => true), sleep(graceMs).then(() => false)]);
  if (!inTime && running(child)) {
    child.kill('SIGKILL');
    await Promise.race([exited, sleep(2_000)]);
  }
}

export async function stopAllChildren() {
  await Promise.allSettled([...tracked].map(({ child }) => stopChild(child, { graceMs: 10_000 })));
}

export function trackedNames() {
  return [...tracked].map(({ name, child }) => `${name} (pid ${child.pid})`);
}

/**
 * A forked load generator (bench/load-worker.mjs, bench/client-worker.mjs), driven by
 * request/reply messages over IPC. `execArgv`: extra Node flags (--expose-gc).
 */
export class LoadWorker {
  static async start(script, index, { execArgv = [] } = {}) {
    const child = track(
      `load worker ${index}`,
      fork(script, [], {
        execArgv: [...process.execArgv, ...execArgv],
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
        serialization: 'advanced',
      }),
    );
    const worker = new LoadWorker(child, index);
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`load worker ${index} did not start`)), 15_000);
      child.once('exit', (code) => reject(new Error(`load worker ${index} exited (${code}) while starting`)));
      child.on('message', (message) => {
        if (message?.type === 'ready') {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    return worker;
  }

  constructor(child, index) {
    this.child = child;
    this.index = index;
    this.pid = child.pid;
    this.nextId = 1;
    this.pending = new Map();
    child.on('message', (message) => {
      const waiter = this.pending.get(message?.id);
      if (!waiter) return;
      this.pending.delete(message.id);
      clearTimeout(waiter.timer);
      if (message.ok) waiter.resolve(message.result);
      else waiter.reject(new Error(`load worker ${index}, ${waiter.op}: ${message.error}`));
    });
    child.on('exit', (code, signal) => {
      for (const waiter of this.pending.values()) {
        clearTimeout(waiter.timer);
        waiter.reject(new Error(`load worker ${index} exited (${code ?? signal}) during ${waiter.op}`));
      }
      this.pending.clear();
    });
  }

  /** Runs one op in the worker; rejects after `timeoutMs` (a scenario's hard bound). */
  call(op, args, timeoutMs) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`load worker ${this.index}: ${op} took over ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer, op });
      this.child.send({ id, op, args });
    });
  }

  stop() {
    return stopChild(this.child, { graceMs: 3_000 });
  }
}

// ------------------------------------------------------------------ /proc measurements

const CLOCK_TICKS = 100; // USER_HZ: 100 on Linux on every common architecture

/** CPU seconds (user + system) a process has used, or 0 when it is gone. */
export function cpuSeconds(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
  } catch {
    return 0;
  }
}

/** The pids whose parent is `pid` (PostgreSQL's backends under its postmaster). */
export function childPids(pid) {
  const children = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(join('/proc', entry, 'stat'), 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[1]) === pid) children.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return children;
}

/** Resident set size of a process in KiB (VmRSS), or null. */
export function rssKiB(pid) {
  try {
    const match = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? Number(match[1]) : null;
  } catch {
    return null;
  }
}

/**
 * CPU use by group of processes between two snapshots. `groups()` returns
 * { name: [pid, …] }, read afresh at each snapshot (backends come and go).
 */
export class CpuMeter {
  constructor(groups) {
    this.groups = groups;
  }

  snapshot() {
    const seconds = {};
    for (const [name, pids] of Object.entries(this.groups())) {
      seconds[name] = new Map(pids.filter(Boolean).map((pid) => [pid, cpuSeconds(pid)]));
    }
    return { at: performance.now(), seconds };
  }

  /** Cores used by each group since `start` (1.0 = one core busy the whole time). */
  since(start) {
    const end = this.snapshot();
    const wall = (end.at - start.at) / 1000;
    const cores = {};
    for (const [name, pids] of Object.entries(end.seconds)) {
      let used = 0;
      for (const [pid, seconds] of pids) used += seconds - (start.seconds[name]?.get(pid) ?? 0);
      cores[name] = Math.round((used / wall) * 100) / 100;
    }
    return { wallSeconds: Math.round(wall * 100) / 100, cores };
  }
}
