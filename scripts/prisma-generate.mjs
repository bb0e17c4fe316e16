// Generates the Prisma client (src/generated/prisma) from prisma/schema.prisma.
// The Prisma CLI downloads a native schema engine on first use, which an offline
// machine cannot do; `generate` does not need that engine, so when none is configured
// we point PRISMA_SCHEMA_ENGINE_BINARY at a placeholder file to skip the download.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const env = { ...process.env };
if (!env.PRISMA_SCHEMA_ENGINE_BINARY) {
  const placeholder = join(root, '.local', 'prisma-schema-engine-placeholder');
  if (!existsSync(placeholder)) {
    mkdirSync(dirname(placeholder), { recursive: true });
    writeFileSync(placeholder, '');
  }
  env.PRISMA_SCHEMA_ENGINE_BINARY = placeholder;
}
const cli = join(root, 'node_modules', 'prisma', 'build', 'index.js');
const result = spawnSync(process.execPath, [cli, 'generate'], { cwd: root, env, stdio: 'inherit' });
process.exit(result.status ?? 1);
