// Development defaults shared by `npm start` and `npm run token`: the generated dev
// secrets kept in the project's local data folder (.local/dev, git-ignored).
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = join(dirname(fileURLToPath(import.meta.url)), '..');
export const devDir = join(root, '.local', 'dev');
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
