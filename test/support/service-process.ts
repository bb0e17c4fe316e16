import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

import type { TestApp } from './app.js';
import { freePort } from './free-port.js';

export const PROJECT_ROOT = join(import.meta.dirname, '..', '..');
const MAIN = join(PROJECT_ROOT, 'dist', 'main.js');

export interface ServiceProcess {
  child: ChildProcess;
  /** stdout and stderr, interleaved as they arrived. */
  output(): string;
  /** stdout alone: where the service's logs go. */
  stdout(): string;
  /** Resolves with the exit code (or the signal's name) within `timeoutMs`, else rejects. */
  exited(timeoutMs: number): Promise<number | string>;
}

/** Runs the built service (dist/main.js, as in production) with exactly `env` plus PATH. */
export function spawnService(env: Record<string, string>): ServiceProcess {
  if (!existsSync(MAIN)) throw new Error(`${MAIN} is missing: run "npm run build" first (npm test does)`);
  const child = spawn(process.execPath, [MAIN], {
    cwd: PROJECT_ROOT,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  let stdout = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    output += chunk.toString();
    stdout += chunk.toString();
  });
  child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exit = new Promise<number | string>((resolve) => {
    child.once('exit', (code, signal) => resolve(code ?? signal ?? 'unknown'));
  });
  return {
    child,
    output: () => output,
    stdout: () => stdout,
    exited: (timeoutMs) =>
      Promise.race([
        exit,
        new Promise<never>((_, reject) => {
          setTimeout(
            () => reject(new Error(`service did not exit within ${timeoutMs} ms:\n${output}`)),
            timeoutMs,
          ).unref();
        }),
      ]),
  };
}

/** Polls `url` until `accept(status)` or the bound runs out; returns the last status. */
export async function pollStatus(
  url: string,
  accept: (status: number) => boolean,
  timeoutMs = 15_000,
): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let status = 0;
  while (Date.now() < deadline) {
    try {
      status = (await fetch(url, { signal: AbortSignal.timeout(2_000) })).status;
      if (accept(status)) return status;
    } catch {
      status = 0;
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return status;
}

/**
 * Another instance of the service, as a production process, on the PostgreSQL and Redis
 * of an in-process test app (same secrets and Redis mode), on a free loopback port;
 * resolves once it reports ready. `env` adds or overrides settings (timings).
 */
export async function spawnBeside(
  app: TestApp,
  env: Record<string, string> = {},
): Promise<{ service: ServiceProcess; url: string; port: number }> {
  const { config } = app;
  const port = await freePort();
  const service = spawnService({
    NODE_ENV: 'production',
    PORT: String(port),
    HOST: '127.0.0.1',
    DATABASE_URL: app.databaseUrl,
    REDIS_URL: app.redisUrl,
    REDIS_MODE: config.redisMode,
    JWT_SECRET: config.jwt.key.kind === 'secret' ? new TextDecoder().decode(config.jwt.key.secret) : '',
    ENCRYPTION_KEYS: config.encryption.keys
      .map((k) => `${k.version}:${Buffer.from(k.key).toString('base64')}`)
      .join(','),
    MIGRATE_ON_START: 'false',
    LOG_LEVEL: 'error',
    ...env,
  });
  const url = `http://127.0.0.1:${port}`;
  const status = await pollStatus(`${url}/health/ready`, (s) => s === 200, 30_000);
  if (status !== 200) {
    service.child.kill('SIGKILL');
    throw new Error(`instance on ${port} not ready (${status}):\n${service.output()}`);
  }
  return { service, url, port };
}
