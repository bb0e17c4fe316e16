// Types for scripts/audit.mjs, which runs as plain JavaScript (before any build step) and
// is imported by its spec in test/supply-chain.

export interface LockfilePackage {
  name: string;
  version: string;
  /** Install path in the lockfile, e.g. `node_modules/engine.io/node_modules/ws`. */
  path: string;
}

export interface Advisory {
  id: string;
  cve?: string;
  package: string;
  severity: 'low' | 'moderate' | 'high' | 'critical';
  /** A semver range, as `semver.satisfies` reads it. */
  vulnerable: string;
  patched: string;
  title: string;
}

export interface Lockfile {
  packages?: Record<string, { version?: string; dev?: boolean; link?: boolean }>;
}

export type AuditOutcome =
  | {
      counts: Record<'info' | 'low' | 'moderate' | 'high' | 'critical' | 'total', number>;
      blocking: { name: string; severity: string; advisories: string[]; through: string[]; nodes: string[] }[];
      unavailable?: undefined;
    }
  | { unavailable: string };

export function productionPackages(lock: Lockfile): LockfilePackage[];
export function findVulnerable(
  packages: LockfilePackage[],
  advisories: Advisory[],
): (LockfilePackage & { advisory: Advisory })[];
export function readAuditOutput(stdout: string): AuditOutcome;
