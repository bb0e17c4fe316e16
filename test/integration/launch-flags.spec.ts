// Every way the service is launched in production runs it with the same Node flags
// (scripts/node-flags.mjs): `npm start`, `npm run start:prod`, the Dockerfile and the bench.
import { execFileSync } from 'node:child_process';
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

  it('are accepted by this Node and give the larger young generation', () => {
    const output = execFileSync(
      process.execPath,
      [
        ...flags,
        '-e',
        // Allocate enough short-lived garbage for the young generation to grow to its cap.
        'let k=[];for(let i=0;i<3e6;i++){const o={a:i,b:[i]};if(i%10===0)k.push(o);if(k.length>5e4)k=[]}' +
          "console.log(require('v8').getHeapSpaceStatistics().find((s)=>s.space_name==='new_space').space_size)",
      ],
      { encoding: 'utf8' },
    );
    // Two semi-spaces of 32 MB once grown (Node 20's default tops out at 2 × 16 MB).
    expect(Number(output.trim())).toBeGreaterThan(32 * 1024 * 1024);
  });
});
