// Every way the service is launched in production runs it with the same Node flags
// (scripts/node-flags.mjs): `npm start`, `npm run start:prod`, the Dockerfile and the bench.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

// @ts-expect-error: a plain .mjs module without type declarations
import { SERVICE_NODE_FLAGS } from '../../scripts/node-flags.mjs';

const ROOT = join(import.meta.dirname, '..', '..');
const flags = SERVICE_NODE_FLAGS as string[];

describe('the service’s Node flags', () => {
  it('are the same in start:prod, the Dockerfile, npm start and the bench', () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
    expect(pkg.scripts['start:prod']).toBe(`node ${flags.join(' ')} dist/main.js`);

    const cmd = /^CMD (\[.*\])$/m.exec(readFileSync(join(ROOT, 'Dockerfile'), 'utf8'));
    expect(cmd, 'the Dockerfile has an exec-form CMD').not.toBeNull();
    expect(JSON.parse(cmd![1])).toEqual(['node', ...flags, 'dist/main.js']);

    for (const file of ['scripts/start.mjs', 'bench/run.mjs']) {
      expect(readFileSync(join(ROOT, file), 'utf8'), file).toMatch(/\.\.\.SERVICE_NODE_FLAGS,/);
    }
  });
});
