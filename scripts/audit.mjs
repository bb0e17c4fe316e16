#!/usr/bin/env node
// Fails on a known high or critical advisory in the production dependencies.
//
// First choice: `npm audit --omit=dev --audit-level=high`, the registry's live advisory
// feed. Where the registry does not serve its audit endpoint (this build machine's mirror
// answers 405 to both the bulk and the quick audit), the fallback checks the lockfile's
// production packages against security/advisories.json, a hand-kept list: it catches a
// dependency resolving back into a known-bad range, not advisories published since the
// list was last updated. The output says which source was used.
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

import semver from 'semver';

const ROOT = join(import.meta.dirname, '..');
const BLOCKING = new Set(['high', 'critical']);

/**
 * The packages the production install holds, from a v2/v3 lockfile: every installed
 * package not marked dev-only, with its install path (a package may be there in
 * several versions).
 */
export function productionPackages(lock) {
  const packages = [];
  for (const [path, entry] of Object.entries(lock.packages ?? {})) {
    const at = path.lastIndexOf('node_modules/');
    if (at === -1 || entry.dev === true || entry.link === true || !entry.version) continue;
    packages.push({ name: path.slice(at + 'node_modules/'.length), version: entry.version, path });
  }
  return packages;
}

/** The (package, advisory) pairs where an installed version lies in a blocking advisory's range. */
export function vulnerable(packages, advisories) {
  const found = [];
  for (const advisory of advisories) {
    if (!BLOCKING.has(advisory.severity)) continue;
    for (const pkg of packages) {
      if (pkg.name === advisory.package && semver.satisfies(pkg.version, advisory.vulnerable)) {
        found.push({ ...pkg, advisory });
      }
    }
  }
  return found;
}

/** Runs `npm audit`; null when the registry could not answer it (unreachable, 4xx/5xx). */
async function liveAudit() {
  const stdout = await new Promise((resolve) => {
    execFile(
      'npm',
      ['audit', '--omit=dev', '--audit-level=high', '--json'],
      { cwd: ROOT, timeout: 60_000, maxBuffer: 64 * 1024 * 1024 },
      (_error, out) => resolve(out),
    );
  });
  let report;
  try {
    report = JSON.parse(stdout);
  } catch {
    return null;
  }
  if (report.error || !report.metadata?.vulnerabilities) return null;
  const counts = report.metadata.vulnerabilities;
  const blocking = Object.entries(report.vulnerabilities ?? {})
    .filter(([, v]) => BLOCKING.has(v.severity))
    .map(([name, v]) => `${name} (${v.severity}): ${v.range}`);
  return { counts, blocking };
}

async function main() {
  const live = await liveAudit();
  if (live) {
    console.log(`audit (registry, npm audit --omit=dev): ${JSON.stringify(live.counts)}`);
    for (const line of live.blocking) console.log(`  ${line}`);
    process.exit(live.blocking.length > 0 ? 1 : 0);
  }
  const lock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8'));
  const list = JSON.parse(readFileSync(join(ROOT, 'security', 'advisories.json'), 'utf8'));
  const packages = productionPackages(lock);
  const found = vulnerable(packages, list.advisories);
  console.log(
    `audit (offline list security/advisories.json of ${list.updated}, ${list.advisories.length} advisories; ` +
      `the registry's audit endpoint did not answer): ${packages.length} production packages checked`,
  );
  for (const hit of found) {
    console.log(
      `  ${hit.name}@${hit.version} (${hit.path}): ${hit.advisory.severity} ${hit.advisory.id} ${hit.advisory.title}`,
    );
  }
  process.exit(found.length > 0 ? 1 : 0);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) await main();
