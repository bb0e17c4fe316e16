// Bundles the demo chat (web/demo) into dist/web/demo, which the service serves at /demo
// (src/demo). esbuild: already a dependency of the toolchain, one call, ~100 ms, and it
// resolves the SDK's `browser` export condition; the page needs no more than that.
// Runs after the client SDK build (`npm run build`), whose dist/ it bundles.
import { copyFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';

import { build } from 'esbuild';

import { root } from './dev-env.mjs';

const source = join(root, 'web', 'demo');
const out = join(root, 'dist', 'web', 'demo');

await mkdir(out, { recursive: true });
// The page, and its service worker (Web Push notifications), each a bundle of its own.
await build({
  entryPoints: [join(source, 'main.ts'), join(source, 'sw.ts')],
  outdir: out,
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2022',
  minify: true,
  sourcemap: true,
  logLevel: 'warning',
});
await Promise.all(['index.html', 'style.css'].map((file) => copyFile(join(source, file), join(out, file))));
