// nginx as a test process: the load balancer of deploy/nginx.conf in front of service
// instances on loopback ports (test/e2e/load-balancer.spec.ts). Installed with apt when
// missing, by the project's one installer (scripts/apt-install.sh).
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { PROJECT_ROOT } from './service-process.js';

/** The committed load balancer config: an http-level snippet (the nginx image's conf.d). */
export const LB_CONFIG = join(PROJECT_ROOT, 'deploy', 'nginx.conf');

const CANDIDATES = ['/usr/sbin/nginx', '/usr/local/sbin/nginx', '/usr/local/nginx/sbin/nginx'];

const findNginx = () => CANDIDATES.find((path) => existsSync(path));

/** The nginx executable, installed with apt first when missing (a few seconds). */
export function installNginx(): string {
  const found = findNginx();
  if (found) return found;
  execFileSync('bash', [join(PROJECT_ROOT, 'scripts', 'apt-install.sh'), 'nginx'], {
    stdio: ['ignore', 'inherit', 'inherit'],
    timeout: 300_000,
  });
  const installed = findNginx();
  if (!installed) throw new Error(`nginx still missing after apt-get install (looked in ${CANDIDATES.join(', ')})`);
  return installed;
}

/** Replaces each `from` exactly `times` times, so that a drifted config fails loudly here. */
function replaceExactly(text: string, from: string, to: string, times: number): string {
  const found = text.split(from).length - 1;
  if (found !== times) throw new Error(`${LB_CONFIG}: expected "${from}" ${times} times, found ${found}`);
  return text.split(from).join(to);
}

/**
 * deploy/nginx.conf with the compose addresses replaced: `app:3000` and `app-2:3000` by
 * the two instances' loopback ports, `listen 80` by `listenPort`. `edit` changes the
 * result further (a variant the test compares against).
 */
export function renderLbConfig(
  upstreamPorts: [number, number],
  listenPort: number,
  edit: (config: string) => string = (config) => config,
): string {
  let config = readFileSync(LB_CONFIG, 'utf8');
  // app-2 first: "app:3000" is not a substring of "app-2:3000", but keep the order obvious.
  config = replaceExactly(config, 'server app-2:3000;', `server 127.0.0.1:${upstreamPorts[1]};`, 2);
  config = replaceExactly(config, 'server app:3000;', `server 127.0.0.1:${upstreamPorts[0]};`, 2);
  config = replaceExactly(config, 'listen 80;', `listen 127.0.0.1:${listenPort};`, 1);
  return edit(config);
}

export interface NginxProcess {
  url: string;
  /** Access log lines: `<request uri> <upstream address> <status>`. */
  accessLog(): string[];
  stop(): Promise<void>;
}

/**
 * Runs nginx in the foreground with `httpConfig` inside `http {}`, everything it writes
 * (pid, logs, temp files) in a fresh temp folder; resolves once it answers on `port`.
 */
export async function startNginx(binary: string, httpConfig: string, port: number): Promise<NginxProcess> {
  const dir = mkdtempSync(join(tmpdir(), 'lb-nginx-'));
  // Workers run as nobody when the master is root: they must reach the temp folders.
  chmodSync(dir, 0o755);
  writeFileSync(join(dir, 'lb.conf'), httpConfig);
  const temp = ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']
    .map((kind) => `  ${kind}_temp_path ${join(dir, kind)};`)
    .join('\n');
  writeFileSync(
    join(dir, 'nginx.conf'),
    [
      'worker_processes 1;',
      `pid ${join(dir, 'nginx.pid')};`,
      `error_log ${join(dir, 'error.log')} warn;`,
      'events { worker_connections 1024; }',
      'http {',
      "  log_format lb '$request_uri $upstream_addr $status';",
      `  access_log ${join(dir, 'access.log')} lb;`,
      temp,
      `  include ${join(dir, 'lb.conf')};`,
      '}',
      '',
    ].join('\n'),
  );
  const child: ChildProcess = spawn(
    binary,
    ['-p', dir, '-e', join(dir, 'error.log'), '-c', join(dir, 'nginx.conf'), '-g', 'daemon off;'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const errorLog = () => (existsSync(join(dir, 'error.log')) ? readFileSync(join(dir, 'error.log'), 'utf8') : '');

  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) {
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`nginx exited with ${child.exitCode}:\n${output}${errorLog()}`);
    }
    try {
      // Any answer from nginx will do (the instances behind it may still be starting).
      await fetch(`${url}/nginx-started`, { signal: AbortSignal.timeout(1_000) });
      break;
    } catch {
      if (Date.now() > deadline) {
        child.kill('SIGKILL');
        throw new Error(`nginx did not listen on ${port} within 10 s:\n${output}${errorLog()}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  return {
    url,
    accessLog: () => {
      const file = join(dir, 'access.log');
      return existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean) : [];
    },
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        // SIGTERM: fast shutdown, the master stops its workers and exits.
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
        await exited;
        clearTimeout(timer);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
