// Vitest globalSetup of the `browser` project: Debian's chromium (installed with apt when
// missing, by the same script CI runs) and a fresh bundle of the demo page, so that
// `vitest run --project browser` works without a prior `npm run build`.
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';

import type { TestProject } from 'vitest/node';

declare module 'vitest' {
  export interface ProvidedContext {
    /** The chromium executable playwright-core launches. */
    CHROMIUM_PATH: string;
  }
}

const ROOT = join(import.meta.dirname, '..', '..');

export default function setup(project: TestProject): void {
  const script = join(ROOT, 'scripts', 'browser.sh');
  execFileSync('bash', [script, 'install'], { stdio: ['ignore', 'inherit', 'inherit'] });
  const path = execFileSync('bash', [script, 'path'], { encoding: 'utf8' }).trim();
  execFileSync(process.execPath, [join(ROOT, 'scripts', 'build-demo.mjs')], { stdio: 'inherit' });
  project.provide('CHROMIUM_PATH', path);
}
