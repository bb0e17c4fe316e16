// Copies the Redis scripts (src/**/*.lua) into dist/ at the same paths, beside the compiled
// modules that read them (`new URL('./lua/<name>.lua', import.meta.url)`). Part of
// `npm run build`, after tsc; the production image copies dist/ whole.
import { copyFileSync, mkdirSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';

import { root } from './dev-env.mjs';

const source = join(root, 'src');
const out = join(root, 'dist');

const scripts = readdirSync(source, { recursive: true, encoding: 'utf8' }).filter((file) => file.endsWith('.lua'));
for (const file of scripts) {
  mkdirSync(dirname(join(out, file)), { recursive: true });
  copyFileSync(join(source, file), join(out, file));
}
