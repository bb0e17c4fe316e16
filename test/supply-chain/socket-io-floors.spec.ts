// Floors for the Socket.IO stack, the code every client's bytes reach first: each copy
// installed, each copy the service and the client SDK load, and each range we declare
// must be at or above a version that excludes the stack's known advisories.
import { existsSync, readdirSync, readFileSync, realpathSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, sep } from 'node:path';

import semver from 'semver';
import { describe, expect, it } from 'vitest';

import type { Advisory, Lockfile } from '../../scripts/audit.mjs';

const ROOT = join(import.meta.dirname, '..', '..');
const readJson = <T>(path: string): T => JSON.parse(readFileSync(path, 'utf8')) as T;

/**
 * The lowest version accepted for each package, and why. Where a package has no advisory
 * of its own, the floor is the first release whose own dependency ranges exclude the
 * advisories of what it pulls in.
 */
const FLOORS: Record<string, { floor: string; why: string }> = {
  'socket.io': { floor: '4.6.2', why: "GHSA-25hc-qcg6-38wj: a crafted packet's unhandled 'error' kills the process" },
  'socket.io-parser': {
    floor: '4.2.3',
    why: 'GHSA-cqmj-92xf-r6r9, GHSA-qm95-pgcg-qqfq (critical), GHSA-xfhh-g9f5-x4m4: crafted packets',
  },
  'socket.io-adapter': { floor: '2.5.5', why: 'the first whose ws range (~8.17.1) excludes GHSA-3h5v-q93c-6h6q' },
  'engine.io': {
    floor: '6.5.5',
    why: 'past GHSA-273r-mgr4-v34f, GHSA-r7qp-cfhv-p84w, GHSA-q9mw-68c2-j6m5 (6.4.2); the first with ws ~8.17.1',
  },
  'engine.io-parser': { floor: '5.2.1', why: 'no advisory known; the line engine.io and engine.io-client declare' },
  ws: { floor: '8.17.1', why: 'GHSA-3h5v-q93c-6h6q: a request with many headers crashes the server' },
  cookie: { floor: '0.7.0', why: "GHSA-pxg6-pf52-xh8x (low): engine.io's sid cookie is written with it" },
  '@socket.io/redis-adapter': {
    floor: '8.3.0',
    why: 'no advisory known; the release line src/gateway/io.adapter.ts is written against',
  },
  'socket.io-client': {
    floor: '4.7.0',
    why: 'the first whose socket.io-parser range (~4.2.4) excludes GHSA-cqmj-92xf-r6r9',
  },
  'engine.io-client': { floor: '6.5.4', why: 'the first whose ws range (~8.17.1) excludes GHSA-3h5v-q93c-6h6q' },
};

const belowFloor = (name: string, version: string) => !semver.gte(version, FLOORS[name].floor);

/**
 * The copy of `name` that a module in `fromDir` loads: Node's lookup for a bare
 * specifier, the nearest node_modules/<name> walking up. Read from the package folder,
 * since not every package exports its package.json.
 */
function loadedFrom(fromDir: string, name: string): { dir: string; version: string } {
  for (let dir = fromDir; ; dir = dirname(dir)) {
    const manifest = join(dir, 'node_modules', name, 'package.json');
    if (existsSync(manifest)) {
      const found = realpathSync(dirname(manifest));
      // Node's own resolver must land in the same folder, or this lookup is wrong.
      expect(realpathSync(createRequire(join(fromDir, 'noop.js')).resolve(name))).toContain(found + sep);
      return { dir: found, version: readJson<{ version: string }>(manifest).version };
    }
    if (dirname(dir) === dir) throw new Error(`${name} cannot be loaded from ${fromDir}`);
  }
}

/** Every package folder under a node_modules folder, nested ones included. */
function* installed(nodeModules: string): Generator<{ name: string; dir: string }> {
  if (!existsSync(nodeModules)) return;
  for (const entry of readdirSync(nodeModules, { withFileTypes: true })) {
    // Symbolic links are the workspace packages, walked from their own folders.
    if (!entry.isDirectory() || entry.name.startsWith('.')) continue;
    const dir = join(nodeModules, entry.name);
    const packages = entry.name.startsWith('@')
      ? readdirSync(dir, { withFileTypes: true })
          .filter((scoped) => scoped.isDirectory())
          .map((scoped) => ({ name: `${entry.name}/${scoped.name}`, dir: join(dir, scoped.name) }))
      : [{ name: entry.name, dir }];
    for (const pkg of packages) {
      yield pkg;
      yield* installed(join(pkg.dir, 'node_modules'));
    }
  }
}

describe('Socket.IO stack floors', () => {
  it('each floor is past every advisory listed for its package', () => {
    const { advisories } = readJson<{ advisories: Advisory[] }>(join(ROOT, 'security', 'advisories.json'));
    for (const advisory of advisories.filter((a) => FLOORS[a.package])) {
      const { floor } = FLOORS[advisory.package];
      expect(
        semver.intersects(`>=${floor}`, advisory.vulnerable, { includePrerelease: true }),
        `${advisory.package} >=${floor} meets ${advisory.id} (${advisory.vulnerable})`,
      ).toBe(false);
    }
  });

  it('the copies the service and the client SDK load are at or above their floors', () => {
    // The service's Socket.IO server is built by Nest's IoAdapter, so socket.io is the
    // copy @nestjs/platform-socket.io loads; the Redis adapter is loaded by src/gateway.
    const nest = loadedFrom(join(ROOT, 'src', 'gateway'), '@nestjs/platform-socket.io');
    const socketIo = loadedFrom(nest.dir, 'socket.io');
    const redisAdapter = loadedFrom(join(ROOT, 'src', 'gateway'), '@socket.io/redis-adapter');
    const adapter = loadedFrom(socketIo.dir, 'socket.io-adapter');
    const engineIo = loadedFrom(socketIo.dir, 'engine.io');
    const sdkSocketIo = loadedFrom(join(ROOT, 'client', 'src'), 'socket.io-client');
    const sdkEngineIo = loadedFrom(sdkSocketIo.dir, 'engine.io-client');
    const loaded: [string, { dir: string; version: string }][] = [
      ['socket.io', socketIo],
      ['socket.io', loadedFrom(join(ROOT, 'src', 'gateway'), 'socket.io')],
      ['@socket.io/redis-adapter', redisAdapter],
      ['socket.io-adapter', adapter],
      // A peer dependency: the adapter class the Redis adapter extends.
      ['socket.io-adapter', loadedFrom(redisAdapter.dir, 'socket.io-adapter')],
      ['ws', loadedFrom(adapter.dir, 'ws')],
      ['socket.io-parser', loadedFrom(socketIo.dir, 'socket.io-parser')],
      ['engine.io', engineIo],
      ['engine.io-parser', loadedFrom(engineIo.dir, 'engine.io-parser')],
      ['ws', loadedFrom(engineIo.dir, 'ws')],
      ['cookie', loadedFrom(engineIo.dir, 'cookie')],
      ['socket.io-client', sdkSocketIo],
      ['socket.io-parser', loadedFrom(sdkSocketIo.dir, 'socket.io-parser')],
      ['engine.io-client', sdkEngineIo],
      ['engine.io-parser', loadedFrom(sdkEngineIo.dir, 'engine.io-parser')],
      ['ws', loadedFrom(sdkEngineIo.dir, 'ws')],
    ];
    const below = loaded.filter(([name, { version }]) => belowFloor(name, version));
    expect(below.map(([name, { dir, version }]) => `${dir}@${version}: ${FLOORS[name].why}`)).toEqual([]);
    expect(new Set(loaded.map(([name]) => name))).toEqual(new Set(Object.keys(FLOORS)));
  });

  it('every copy in node_modules, nested ones included, is at or above its floor', () => {
    const copies = [...installed(join(ROOT, 'node_modules')), ...installed(join(ROOT, 'client', 'node_modules'))]
      .filter(({ name }) => FLOORS[name])
      .map(({ name, dir }) => ({
        name,
        dir,
        version: readJson<{ version: string }>(join(dir, 'package.json')).version,
      }));
    const below = copies.filter(({ name, version }) => belowFloor(name, version));
    expect(below.map(({ name, dir, version }) => `${dir}@${version}: ${FLOORS[name].why}`)).toEqual([]);
    expect(new Set(copies.map(({ name }) => name))).toEqual(new Set(Object.keys(FLOORS)));
  });

  it('every copy the lockfile installs is at or above its floor', () => {
    // What a clean `npm install` (CI) lays down, whatever this machine's node_modules hold.
    const { packages = {} } = readJson<Lockfile>(join(ROOT, 'package-lock.json'));
    const below = Object.entries(packages).filter(([path, { version }]) => {
      const name = path.slice(path.lastIndexOf('node_modules/') + 'node_modules/'.length);
      return path.includes('node_modules/') && FLOORS[name] && version && belowFloor(name, version);
    });
    expect(below.map(([path, { version }]) => `${path}@${version}`)).toEqual([]);
  });

  it('no range we declare can resolve below a floor', () => {
    const sections = ['dependencies', 'devDependencies', 'optionalDependencies', 'peerDependencies', 'overrides'];
    const declared: string[] = [];
    for (const manifest of ['package.json', join('client', 'package.json')]) {
      const pkg = readJson<Record<string, Record<string, unknown> | undefined>>(join(ROOT, manifest));
      for (const section of sections) {
        for (const [name, range] of Object.entries(pkg[section] ?? {})) {
          if (!FLOORS[name] || typeof range !== 'string') continue;
          const lowest = semver.minVersion(range);
          declared.push(`${manifest} ${section} ${name} ${range}`);
          expect(lowest && semver.gte(lowest, FLOORS[name].floor), `${manifest}: ${name} ${range}`).toBe(true);
        }
      }
    }
    // The ranges that matter are there to be checked at all.
    expect(declared).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^package\.json dependencies socket\.io /),
        expect.stringMatching(/^package\.json dependencies @socket\.io\/redis-adapter /),
        expect.stringMatching(/^client\/package\.json dependencies socket\.io-client /),
      ]),
    );
  });
});
