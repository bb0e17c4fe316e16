import { readFileSync } from 'node:fs';

import { build } from 'esbuild';
import { describe, expect, it } from 'vitest';

// The browser build must carry no Node built-ins (SDK.md "Package"): bundling the browser
// entry for the browser platform fails on any `node:` import that sneaks in.
describe('the browser entry', () => {
  it('bundles for browsers without Node built-ins, and without fileStorage', async () => {
    const result = await build({
      entryPoints: [new URL('./index.browser.ts', import.meta.url).pathname],
      bundle: true,
      platform: 'browser',
      format: 'esm',
      write: false,
      metafile: true,
      logLevel: 'silent',
    });
    const inputs = Object.keys(result.metafile.inputs);
    expect(inputs.some((path) => path.includes('storage/file'))).toBe(false);
    expect(inputs.some((path) => path.includes('storage/indexeddb'))).toBe(true);
    // socket.io-client's browser build, not its Node one (which pulls in `ws`).
    expect(inputs.some((path) => path.includes('node_modules/ws/'))).toBe(false);
    // libsodium (e2e) bundles too, with its Node-only crypto fallback left out.
    expect(inputs.some((path) => path.includes('node_modules/libsodium-wrappers/'))).toBe(true);
  });

  it('is what the package exports under the browser condition', () => {
    const manifest = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
      exports: Record<string, Record<string, unknown>>;
    };
    expect(manifest.exports['.']?.browser).toEqual({
      types: './dist/index.browser.d.ts',
      default: './dist/index.browser.js',
    });
    expect(manifest.exports['.']?.default).toBe('./dist/index.node.js');
  });
});
