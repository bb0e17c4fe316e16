// `npm start`. In production it only runs the built service. In development it fills
// what is missing, and says so: a local PostgreSQL and Redis (scripts/local-services.mjs),
// generated dev secrets (.local/dev/secrets.json); then builds and serves. The service
// applies pending migrations itself at boot (MIGRATE_ON_START, default true).
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

import { devSecrets, log, root } from './dev-env.mjs';
import { startLocalServices } from './local-services.mjs';
import { SERVICE_NODE_FLAGS } from './node-flags.mjs';

const env = { ...process.env };
const production = env.NODE_ENV === 'production';

// Production runs the active LTS line (Dockerfile, package.json engines); a machine whose
// system Node is older still serves for development, and is told so.
if (Number(process.versions.node.split('.')[0]) < 24) {
  log(
    `Node ${process.versions.node} is past its end of life; production runs Node 24 ` +
      '(`bash scripts/node24.sh install && PATH="$(bash scripts/node24.sh bin):$PATH" npm start` uses it here)',
  );
}

function run(command, args, options = {}) {
  const result = spawnSync(command, args, {
    cwd: root,
    env,
    stdio: ['ignore', 'pipe', 'inherit'],
    encoding: 'utf8',
    ...options,
  });
  if (result.status !== 0) {
    log(`${command} ${args.join(' ')} failed (exit ${result.status ?? result.signal})`);
    process.exit(1);
  }
  return result.stdout ?? '';
}

if (!production) {
  if (!env.DATABASE_URL || !env.REDIS_URL) {
    log('DATABASE_URL/REDIS_URL not set: starting the local PostgreSQL and Redis (scripts/local-services.mjs)');
    let services;
    try {
      // REDIS_MODE=cluster: a local Redis Cluster (three masters, one replica each) instead.
      services = await startLocalServices({ redisMode: env.REDIS_MODE === 'cluster' ? 'cluster' : 'single' });
    } catch (error) {
      log(`the local PostgreSQL and Redis did not start: ${error instanceof Error ? error.message : String(error)}`);
      process.exit(1);
    }
    for (const [name, value] of [
      ['DATABASE_URL', services.databaseUrl],
      ['REDIS_URL', services.redisUrl],
    ]) {
      if (env[name]) continue;
      env[name] = value;
      log(`using local ${name}=${value}`);
    }
  }
  const fromSecrets = [];
  if (!env.JWT_SECRET && !env.JWT_PUBLIC_KEY && !env.JWT_JWKS_URL) fromSecrets.push('JWT_SECRET');
  if (!env.ENCRYPTION_KEYS) fromSecrets.push('ENCRYPTION_KEYS');
  if (fromSecrets.length > 0) {
    const { values, created } = devSecrets();
    for (const name of fromSecrets) env[name] = values[name];
    log(
      `${created ? 'generated' : 'using'} dev ${fromSecrets.join(' and ')} from .local/dev/secrets.json (development only)`,
    );
  }
  log(
    'building (tsc): the client SDK, whose wire types the service compiles against, then the service (and its Lua scripts), then the demo page (esbuild)',
  );
  for (const project of [join('client', 'tsconfig.build.json'), 'tsconfig.build.json']) {
    run(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', project], {
      stdio: 'inherit',
    });
  }
  run(process.execPath, [join(root, 'scripts', 'copy-lua.mjs')], { stdio: 'inherit' });
  run(process.execPath, [join(root, 'scripts', 'build-demo.mjs')], { stdio: 'inherit' });
  log(
    `the demo chat: http://localhost:${env.PORT || 3000}/demo (unless DEMO_ENABLED=false); ` +
      'tokens: npm run token -- <userId> [--service]',
  );
}

if (production && !existsSync(join(root, 'dist', 'main.js'))) {
  // A production start from a fresh install: build once (a deployment image ships dist/).
  log('dist/main.js is missing: building (tsc)');
  run(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.build.json'], {
    stdio: 'inherit',
  });
  run(process.execPath, [join(root, 'scripts', 'copy-lua.mjs')], { stdio: 'inherit' });
}

const child = spawn(process.execPath, [...SERVICE_NODE_FLAGS, join(root, 'dist', 'main.js')], {
  cwd: root,
  env,
  stdio: 'inherit',
});
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => child.kill(signal));
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
