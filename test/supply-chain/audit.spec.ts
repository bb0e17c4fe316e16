// The advisory check CI runs (`npm run audit:prod`, scripts/audit.mjs): its matching
// against a lockfile, its reading of `npm audit`, and the choice between the registry
// and the offline list, driven end to end against a registry stand-in on loopback.
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';

import semver from 'semver';
import { afterEach, describe, expect, it } from 'vitest';

import {
  findVulnerable,
  productionPackages,
  readAuditOutput,
  type Advisory,
  type Lockfile,
} from '../../scripts/audit.mjs';

const ROOT = join(import.meta.dirname, '..', '..');
const readJson = <T>(path: string): T => JSON.parse(readFileSync(join(ROOT, path), 'utf8')) as T;
const advisories = readJson<{ advisories: Advisory[] }>('security/advisories.json').advisories;

/** A lockfile holding the given install paths, production unless marked. */
function lockfile(packages: Record<string, string | { version: string; dev: true }>): Lockfile {
  const entries: NonNullable<Lockfile['packages']> = {
    '': {},
    client: { version: '0.1.0' },
    'node_modules/@messaging-service/client': { link: true },
  };
  for (const [path, entry] of Object.entries(packages)) {
    entries[path] = typeof entry === 'string' ? { version: entry } : entry;
  }
  return { packages: entries };
}

const hits = (lock: Lockfile) =>
  findVulnerable(productionPackages(lock), advisories).map((hit) => `${hit.path}@${hit.version} ${hit.advisory.id}`);

describe('offline check against security/advisories.json', () => {
  it('flags a vulnerable version wherever it is installed, nested copies included', () => {
    const lock = lockfile({
      'node_modules/ws': '8.17.1',
      'node_modules/engine.io': '6.6.12',
      'node_modules/engine.io/node_modules/ws': '8.17.0',
      'node_modules/socket.io-parser': '4.2.2',
      'client/node_modules/socket.io-parser': '4.2.0',
    });
    expect(hits(lock)).toEqual([
      'client/node_modules/socket.io-parser@4.2.0 GHSA-cqmj-92xf-r6r9',
      'client/node_modules/socket.io-parser@4.2.0 GHSA-qm95-pgcg-qqfq',
      'node_modules/engine.io/node_modules/ws@8.17.0 GHSA-3h5v-q93c-6h6q',
      'node_modules/socket.io-parser@4.2.2 GHSA-cqmj-92xf-r6r9',
    ]);
  });

  it('passes the same tree at the patched versions', () => {
    const lock = lockfile({
      'node_modules/ws': '8.17.1',
      'node_modules/engine.io': '6.6.12',
      'node_modules/engine.io/node_modules/ws': '8.17.1',
      'node_modules/socket.io-parser': '4.2.3',
      'client/node_modules/socket.io-parser': '4.2.4',
    });
    expect(hits(lock)).toEqual([]);
  });

  it('leaves out dev-only packages, as npm audit --omit=dev does', () => {
    expect(hits(lockfile({ 'node_modules/body-parser': { version: '1.20.2', dev: true } }))).toEqual([]);
    expect(hits(lockfile({ 'node_modules/body-parser': '1.20.2' }))).toEqual([
      'node_modules/body-parser@1.20.2 GHSA-qwcr-r2fm-qrc7',
    ]);
  });

  it('does not fail on moderate or low advisories, as --audit-level=high does not', () => {
    // engine.io 6.4.1: GHSA-q9mw-68c2-j6m5 (moderate); cookie 0.6.0: GHSA-pxg6-pf52-xh8x (low).
    expect(hits(lockfile({ 'node_modules/engine.io': '6.4.1', 'node_modules/cookie': '0.6.0' }))).toEqual([]);
  });

  it('counts a prerelease inside an advisory range', () => {
    expect(hits(lockfile({ 'node_modules/multer': '1.4.5-lts.2' }))).toEqual([
      'node_modules/multer@1.4.5-lts.2 GHSA-44fp-w29j-9vj5',
      'node_modules/multer@1.4.5-lts.2 GHSA-4pg4-qvpc-4q3h',
      'node_modules/multer@1.4.5-lts.2 GHSA-fjgf-rc76-4x9p',
      'node_modules/multer@1.4.5-lts.2 GHSA-g5hg-p3ph-g8qg',
    ]);
  });

  it('keeps a list whose entries parse and whose patched versions lie outside their ranges', () => {
    expect(advisories.length).toBeGreaterThan(0);
    expect(new Set(advisories.map((a) => `${a.id} ${a.package}`)).size).toBe(advisories.length);
    for (const advisory of advisories) {
      expect(advisory.id).toMatch(/^GHSA(-[23456789cfghjmpqrvwx]{4}){3}$/);
      expect(['low', 'moderate', 'high', 'critical']).toContain(advisory.severity);
      expect(semver.validRange(advisory.vulnerable), advisory.id).not.toBeNull();
      for (const patched of advisory.patched.split(', ')) {
        expect(semver.valid(patched), `${advisory.id} ${patched}`).not.toBeNull();
        expect(semver.satisfies(patched, advisory.vulnerable, { includePrerelease: true }), advisory.id).toBe(false);
      }
    }
  });

  it('finds no high or critical advisory in the production packages of our lockfile', () => {
    expect(hits(readJson<Lockfile>('package-lock.json'))).toEqual([]);
  });
});

describe('reading npm audit --json', () => {
  it('takes the registry refusing the audit endpoint as no report', () => {
    // What npm 11 printed against the registry reachable here (December 2026).
    const refused = {
      message: '405 Method Not Allowed - POST https://registry.npmjs.org/-/npm/v1/security/advisories/bulk',
      method: 'POST',
      uri: 'https://registry.npmjs.org/-/npm/v1/security/advisories/bulk',
      statusCode: 405,
      body: '',
      error: { summary: '', detail: '' },
    };
    expect(readAuditOutput(JSON.stringify(refused))).toEqual({ unavailable: refused.message });
  });

  it('takes an unreachable registry as no report', () => {
    const message =
      'request to http://127.0.0.1:9/-/npm/v1/security/advisories/bulk failed, reason: connect ECONNREFUSED 127.0.0.1:9';
    expect(readAuditOutput(JSON.stringify({ message, error: { summary: '', detail: '' } }))).toEqual({
      unavailable: message,
    });
  });

  it('refuses output that is neither a report nor an endpoint failure', () => {
    expect(() => readAuditOutput('npm error code ENOLOCK')).toThrow(/no JSON/);
    expect(() => readAuditOutput(JSON.stringify({ message: 'audit requires an existing lockfile' }))).toThrow(
      /lockfile/,
    );
  });
});

describe('npm run audit:prod, end to end', () => {
  let registry: Server | undefined;
  afterEach(() => registry?.close());

  /** A registry on loopback: the audit endpoint answers `bulk`, or 405 when there is none. */
  async function startRegistry(bulk?: object): Promise<string> {
    registry = createServer((request, response) => {
      request.resume();
      request.on('end', () => {
        if (bulk && request.method === 'POST' && request.url?.startsWith('/-/npm/v1/security/advisories/bulk')) {
          response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(bulk));
        } else if (!bulk) {
          response.writeHead(405, { allow: 'GET,HEAD' }).end();
        } else {
          // npm asks for packuments to suggest fixes; without them it still reports.
          response.writeHead(404).end();
        }
      });
    });
    await new Promise<void>((resolve) => registry!.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(registry.address() as AddressInfo).port}/`;
  }

  function runAudit(registryUrl: string): Promise<{ code: number; stdout: string }> {
    return new Promise((resolve) => {
      execFile(
        process.execPath,
        [join(ROOT, 'scripts', 'audit.mjs')],
        { cwd: ROOT, env: { ...process.env, npm_config_registry: registryUrl }, timeout: 60_000 },
        (error, stdout) => resolve({ code: typeof error?.code === 'number' ? error.code : 0, stdout }),
      );
    });
  }

  it('uses the registry report when the registry answers, and fails on a high advisory', async () => {
    const url = await startRegistry({
      'socket.io-parser': [
        {
          id: 1,
          url: 'https://github.com/advisories/GHSA-test-only',
          title: 'stand-in advisory',
          severity: 'high',
          vulnerable_versions: '>=0.0.0',
          cwe: [],
          cvss: { score: 7.5, vectorString: null },
        },
      ],
    });
    const { code, stdout } = await runAudit(url);
    expect(stdout).toContain('source npm audit --omit=dev (registry)');
    expect(stdout).toMatch(/socket\.io-parser \(high\) at node_modules\/socket\.io-parser/);
    expect(stdout).toContain('GHSA-test-only stand-in advisory');
    expect(code).toBe(1);
  }, 60_000);

  it('falls back to the offline list when the audit endpoint answers 405', async () => {
    const url = await startRegistry();
    const { code, stdout } = await runAudit(url);
    expect(stdout).toContain('405 Method Not Allowed');
    expect(stdout).toContain('source security/advisories.json');
    expect(code).toBe(0);
  }, 60_000);
});
