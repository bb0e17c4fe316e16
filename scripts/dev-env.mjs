// Development defaults shared by `npm start` and `npm run token`: the generated dev
// secrets kept in the local services' data folder (.local/dev, git-ignored; where
// scripts/local-services.mjs keeps the development PostgreSQL and Redis).
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { DEFAULTS, ROOT } from './local-services.mjs';

export const root = ROOT;
const devDir = DEFAULTS.localDir;
const secretsFile = join(devDir, 'secrets.json');

/** Reads the dev secrets, generating them on first use. Returns { values, created }. */
export function devSecrets() {
  if (existsSync(secretsFile)) {
    return { values: JSON.parse(readFileSync(secretsFile, 'utf8')), created: false };
  }
  const values = {
    JWT_SECRET: randomBytes(48).toString('base64url'),
    ENCRYPTION_KEYS: `1:${randomBytes(32).toString('base64')}`,
  };
  mkdirSync(devDir, { recursive: true });
  writeFileSync(secretsFile, `${JSON.stringify(values, null, 2)}\n`, { mode: 0o600 });
  return { values, created: true };
}

export function log(message) {
  process.stderr.write(`[start] ${message}\n`);
}
