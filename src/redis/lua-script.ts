import { readFileSync } from 'node:fs';

/**
 * A Redis script kept in a `.lua` file beside the module that runs it (`npm run build`
 * copies them into dist/), read once when that module loads: a missing file fails the
 * start, not the first command. `moduleUrl` is the caller's `import.meta.url`.
 */
export function luaScript(moduleUrl: string, file: string): string {
  return readFileSync(new URL(`./lua/${file}`, moduleUrl), 'utf8');
}
