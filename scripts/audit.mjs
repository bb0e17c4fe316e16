#!/usr/bin/env node
// Fails (exit 1) on a known high or critical advisory in the production dependencies.
//
// The first source is the registry: `npm audit --omit=dev --audit-level=high`. Where the
// registry does not serve its audit endpoints (the one reachable from this project's
// machines answers 405 to the bulk and the quick audit alike), the check falls back to
// security/advisories.json, a hand-kept list, matched against the lockfile's production
// packages. The fallback catches a dependency resolving back into a known-bad range; it
// cannot know advisories published after the list was last updated. The output names
// the source it used, and why.
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

import semver from 'semver';

const ROOT = join(import.meta.dirname, '..');
const BLOCKING = new Set(['high', 'critical']);

/**
 * Every package a production install holds, from a v2/v3 lockfile: one entry per install
 * path, so a package nested in several places at several versions appears once for each.
 */
export function productionPackages(lock) {
  const packages = [];
  for (const [path, entry] of Object.entries(lock.packages ?? {})) {
    const at = path.lastIndexOf('node_modules/');
    // The root and workspace folders have no node_modules/ in their path; a link entry
    // points at a workspace whose own dependencies are listed under their own paths.
    if (at === -1 || entry.link === true || entry.dev === true || !entry.version) continue;
    packages.push({ name: path.slice(at + 'node_modules/'.length), version: entry.version, path });
  }
  return packages;
}

/** The installed packages that lie inside the range of a high or critical advisory. */
export function findVulnerable(packages, advisories) {
  const found = [];
  for (const advisory of advisories) {
    if (!BLOCKING.has(advisory.severity)) continue;
    for (const pkg of packages) {
      // includePrerelease: some affected releases are prereleases (multer's 1.4.4-lts.1),
      // which a plain range test would never count as inside the range.
      if (
        pkg.name === advisory.package &&
        semver.satisfies(pkg.version, advisory.vulnerable, { includePrerelease: true })
      ) {
        found.push({ ...pkg, advisory });
      }
    }
  }
  return found.sort((a, b) => a.path.localeCompare(b.path) || a.advisory.id.localeCompare(b.advisory.id));
}

/**
 * Reads what `npm audit --json` printed. Returns the report's blocking findings, or
 * `{ unavailable: reason }` when the registry gave no report: an HTTP error from the
 * audit endpoint (405, 404, 5xx) or a request that never reached it. Anything else (no
 * JSON, a lockfile error) throws: the check cannot vouch for the tree then.
 */
export function readAuditOutput(stdout) {
  let report;
  try {
    report = JSON.parse(stdout);
  } catch {
    throw new Error(`npm audit printed no JSON: ${String(stdout).slice(0, 200)}`);
  }
  if (report.auditReportVersion === 2 && report.vulnerabilities && report.metadata) {
    const blocking = Object.values(report.vulnerabilities)
      .filter((v) => BLOCKING.has(v.severity))
      .map((v) => ({
        name: v.name,
        severity: v.severity,
        // `via` holds advisory objects for a vulnerable package and package names for
        // one that is flagged only because it depends on a vulnerable package.
        advisories: v.via.filter((via) => typeof via === 'object').map((via) => `${via.url} ${via.title}`),
        through: v.via.filter((via) => typeof via === 'string'),
        nodes: v.nodes,
      }));
    return { counts: report.metadata.vulnerabilities, blocking };
  }
  const message = String(report.message ?? report.error?.summary ?? '');
  const httpError = typeof report.statusCode === 'number' && report.statusCode >= 400;
  const unreachable = /\/-\/npm\/v1\/security\/\S+ failed, reason:/.test(message);
  if (httpError || unreachable) return { unavailable: message };
  throw new Error(`npm audit failed: ${message || stdout.slice(0, 200)}`);
}

/** Runs the registry's audit; resolves with what it printed (it exits 1 on findings and on errors alike). */
function npmAudit() {
  return new Promise((resolve) => {
    execFile(
      'npm',
      ['audit', '--omit=dev', '--audit-level=high', '--json'],
      { cwd: ROOT, timeout: 60_000, maxBuffer: 64 * 1024 * 1024 },
      (error, stdout) => {
        if (error?.killed) resolve(JSON.stringify({ message: 'npm audit timed out after 60 s', statusCode: 504 }));
        else resolve(stdout);
      },
    );
  });
}

function readJson(path) {
  return JSON.parse(readFileSync(join(ROOT, path), 'utf8'));
}

async function main() {
  const live = readAuditOutput(await npmAudit());
  if (!live.unavailable) {
    const { high, critical, total } = live.counts;
    console.log(`audit: source npm audit --omit=dev (registry): ${high} high, ${critical} critical, ${total} in all`);
    for (const v of live.blocking) {
      const through = v.through.length > 0 ? `, through ${v.through.join(', ')}` : '';
      console.log(`  ${v.name} (${v.severity}) at ${v.nodes.join(', ')}${through}`);
      for (const line of v.advisories) console.log(`    ${line}`);
    }
    return live.blocking.length > 0 ? 1 : 0;
  }

  const list = readJson('security/advisories.json');
  const packages = productionPackages(readJson('package-lock.json'));
  const found = findVulnerable(packages, list.advisories);
  console.log(`audit: the registry's audit endpoint gave no report (${live.unavailable})`);
  console.log(
    `audit: source security/advisories.json (offline list of ${list.updated}, ${list.advisories.length} advisories) ` +
      `against package-lock.json (${packages.length} production packages): ${found.length} high or critical`,
  );
  for (const hit of found) {
    const { id, severity, patched, title } = hit.advisory;
    console.log(`  ${hit.name}@${hit.version} at ${hit.path}: ${severity} ${id} ${title} (patched in ${patched})`);
  }
  return found.length > 0 ? 1 : 0;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  try {
    process.exitCode = await main();
  } catch (error) {
    console.error(`audit: ${error instanceof Error ? error.message : String(error)}`);
    process.exitCode = 2;
  }
}
