// The supply-chain checks CI runs: the advisory check of scripts/audit.mjs, and floors
// for the Socket.IO stack, the code every client's bytes go through first.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, sep } from 'node:path';

import semver from 'semver';
import { describe, expect, it } from 'vitest';

// @ts-expect-error: a plain .mjs module without type declarations
import { productionPackages, vulnerable } from '../../scripts/audit.mjs';

const ROOT = join(import.meta.dirname, '..', '..');
const readJson = (path: string) => JSON.parse(readFileSync(join(ROOT, path), 'utf8')) as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any -- package.json and lockfile shapes

interface Pkg {
  name: string;
  version: string;
  path: string;
}
const production = productionPackages as (lock: unknown) => Pkg[];
const check = vulnerable as (packages: Pkg[], advisories: unknown[]) => (Pkg & { advisory: { id: string } })[];

/**
 * The lowest version of each package of the Socket.IO stack the service accepts, and
 * why: each excludes the advisories named (security/advisories.json) or, where none
 * applies, is the release the stack was tested with.
 */
const FLOORS: Record<string, { floor: string; why: string }> = {
  ws: { floor: '8.17.1', why: 'GHSA-3h5v-q93c-6h6q: many-headers denial of service' },
  'socket.io': { floor: '4.6.2', why: "GHSA-25hc-qcg6-38wj: unhandled 'error' event crash" },
  'socket.io-parser': {
    floor: '4.2.3',
    why: 'GHSA-cqmj-92xf-r6r9 and GHSA-qm95-pgcg-qqfq: malformed packets crash the process',
  },
  'engine.io': { floor: '6.4.2', why: 'GHSA-273r-mgr4-v34f and the 6.4.2 fix for a crafted-request crash' },
  'engine.io-parser': { floor: '5.2.1', why: 'the parser engine.io 6.4+ is tested with' },
  'socket.io-adapter': { floor: '2.5.2', why: 'the adapter socket.io 4.6+ is tested with' },
  '@socket.io/redis-adapter': { floor: '8.3.0', why: 'sharded pub/sub and the tested broadcast path' },
  'socket.io-client': { floor: '4.6.2', why: 'the client SDK and tests speak to socket.io 4.6+' },
  'engine.io-client': { floor: '6.4.0', why: 'the client transport socket.io-client 4.6+ is tested with' },
};

/**
 * The version `require` would load: read from the package's own directory, since not
 * every package exports its package.json.
 */
function loadedVersion(require: NodeJS.Require, name: string): { version: string; dir: string } {
  let dir = dirname(require.resolve(name));
  while (!dir.endsWith(`${sep}node_modules${sep}${name.split('/').join(sep)}`)) {
    if (dirname(dir) === dir) throw new Error(`no package directory for ${name}`);
    dir = dirname(dir);
  }
  return { version: (JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { version: string }).version, dir };
}

describe('advisory check (scripts/audit.mjs)', () => {
  const advisories = readJson('security/advisories.json').advisories as {
    id: string;
    package: string;
    severity: string;
    vulnerable: string;
  }[];

  it('flags an installed version inside a blocking range, nested copies included, and passes a patched one', () => {
    const lock = {
      packages: {
        '': { name: 'app' },
        'node_modules/ws': { version: '8.17.1' },
        'node_modules/engine.io/node_modules/ws': { version: '8.17.0' },
        'node_modules/socket.io-parser': { version: '4.2.2' },
        'node_modules/body-parser': { version: '1.20.2', dev: true },
        'node_modules/linked': { resolved: 'client', link: true },
      },
    };
    const found = check(production(lock), advisories);
    expect(found.map((hit) => `${hit.path}@${hit.version} ${hit.advisory.id}`).sort()).toEqual([
      'node_modules/engine.io/node_modules/ws@8.17.0 GHSA-3h5v-q93c-6h6q',
      'node_modules/socket.io-parser@4.2.2 GHSA-cqmj-92xf-r6r9',
    ]);
    expect(
      check(
        production({
          packages: { 'node_modules/ws': { version: '8.17.1' }, 'node_modules/qs': { version: '6.10.3' } },
        }),
        advisories,
      ),
    ).toEqual([]);
  });

  it('keeps a list whose every entry names a package, a valid range and a blocking severity', () => {
    expect(advisories.length).toBeGreaterThan(0);
    for (const advisory of advisories) {
      expect(advisory.id).toMatch(/^GHSA(-[0-9a-z]{4}){3}$/);
      expect(semver.validRange(advisory.vulnerable), advisory.id).not.toBeNull();
      expect(['high', 'critical']).toContain(advisory.severity);
    }
  });

  it('finds nothing in the lockfile’s production packages', () => {
    expect(check(production(readJson('package-lock.json')), advisories)).toEqual([]);
  });
});

describe('Socket.IO stack floors', () => {
  it('every copy of each stack package in the lockfile is at or above its floor', () => {
    const { packages } = readJson('package-lock.json') as { packages: Record<string, { version?: string }> };
    const seen = new Set<string>();
    for (const [path, entry] of Object.entries(packages)) {
      const name = path.slice(path.lastIndexOf('node_modules/') + 'node_modules/'.length);
      const floor = FLOORS[name];
      if (!path.includes('node_modules/') || !floor || !entry.version) continue;
      seen.add(name);
      expect(semver.gte(entry.version, floor.floor), `${path}@${entry.version} < ${floor.floor}: ${floor.why}`).toBe(
        true,
      );
    }
    expect([...seen].sort()).toEqual(Object.keys(FLOORS).sort());
  });

  it('the copies the service and the SDK load at run time are at or above their floors', () => {
    const fromService = createRequire(join(ROOT, 'src', 'main.ts'));
    const fromSocketIo = createRequire(join(loadedVersion(fromService, 'socket.io').dir, 'package.json'));
    const fromEngine = createRequire(join(loadedVersion(fromSocketIo, 'engine.io').dir, 'package.json'));
    const fromClient = createRequire(join(ROOT, 'client', 'src', 'client.ts'));
    const fromSocketIoClient = createRequire(join(loadedVersion(fromClient, 'socket.io-client').dir, 'package.json'));
    const loaded: [string, NodeJS.Require][] = [
      ['socket.io', fromService],
      ['@socket.io/redis-adapter', fromService],
      ['engine.io', fromSocketIo],
      ['socket.io-parser', fromSocketIo],
      ['socket.io-adapter', fromSocketIo],
      ['ws', fromEngine],
      ['engine.io-parser', fromEngine],
      ['socket.io-client', fromClient],
      ['engine.io-client', fromSocketIoClient],
    ];
    for (const [name, require] of loaded) {
      const { version } = loadedVersion(require, name);
      expect(semver.gte(version, FLOORS[name].floor), `${name}@${version}: ${FLOORS[name].why}`).toBe(true);
    }
  });

  it('no declared range of ours can resolve below a floor', () => {
    for (const manifest of ['package.json', 'client/package.json']) {
      const pkg = readJson(manifest) as Record<string, Record<string, string> | undefined>;
      for (const deps of [pkg.dependencies, pkg.devDependencies]) {
        for (const [name, range] of Object.entries(deps ?? {})) {
          if (!FLOORS[name]) continue;
          const lowest = semver.minVersion(range);
          expect(lowest && semver.gte(lowest, FLOORS[name].floor), `${manifest}: ${name} ${range}`).toBe(true);
        }
      }
    }
  });
});
