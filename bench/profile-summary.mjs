// Summarizes a V8 .cpuprofile: where the service's CPU time goes, as
//  - self time by where the code lives (a package under node_modules, a folder of the
//    service's dist/, Node internals, native code, GC);
//  - time by owner: native and Node-internal frames (socket writes, Buffer, timers)
//    charged to the nearest JavaScript frame above them that belongs to a package or to
//    the service, e.g. a writev under pg's query counts for pg;
//  - the hottest functions by self time.
// Used by `npm run bench -- --cpu-prof`; also a CLI:  node bench/profile-summary.mjs <file>
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

function categoryOf(callFrame) {
  const { url, functionName } = callFrame;
  if (!url) {
    if (functionName === '(garbage collector)') return 'GC';
    if (functionName === '(idle)') return 'idle';
    if (functionName === '(program)') return 'V8/native (unattributed)';
    if (functionName === '(root)') return 'root';
    return 'native';
  }
  const modules = url.lastIndexOf('/node_modules/');
  if (modules >= 0) {
    const parts = url.slice(modules + '/node_modules/'.length).split('/');
    return parts[0].startsWith('@') ? `${parts[0]}/${parts[1]}` : parts[0];
  }
  if (url.startsWith('node:')) return 'node internals';
  const dist = url.lastIndexOf('/dist/');
  if (dist >= 0) {
    const rest = url.slice(dist + '/dist/'.length).split('/');
    return `service: ${rest.length > 1 ? rest[0] : rest[0].replace(/\.js$/, '')}`;
  }
  return url;
}

const UNOWNED = new Set(['native', 'node internals', 'V8/native (unattributed)']);

/**
 * The components of the README's CPU breakdown, from owners (see summarizeProfile). JSON
 * has no owner of its own: JSON.parse and stringify are native and charged to their
 * callers (socket.io-parser's encode, ioredis replies, our envelopes).
 */
const COMPONENTS = [
  [
    'socket.io / engine.io framing and socket writes',
    /^(socket\.io|socket\.io-parser|socket\.io-adapter|@socket\.io\/.*|engine\.io|engine\.io-parser|ws|service: platform)$/,
  ],
  ['PostgreSQL driver (pg)', /^(pg|pg-protocol|pg-pool|pg-types|postgres-.*|@prisma\/.*)$/],
  ['Redis driver (ioredis)', /^(ioredis|redis-parser|@ioredis\/.*|denque|cluster-key-slot|standard-as-callback)$/],
  ['crypto (libsodium, JWT)', /^(libsodium|libsodium-wrappers|jose|service: crypto|service: auth)$/],
  ['validation (zod)', /^zod$/],
  ['logging and async context', /^(pino|pino-.*|nestjs-pino|@pinojs\/.*|sonic-boom|thread-stream)$/],
  ['metrics (prom-client)', /^(prom-client|tdigest|bintrees|service: metrics)$/],
  ['GC', /^GC$/],
  ["the service's own code", /^service: /],
];

/** Owners summed into COMPONENTS; what fits none is "other" (Nest, Node internals, …). */
export function componentsOf(summary) {
  const totals = new Map(COMPONENTS.map(([name]) => [name, 0]));
  let other = 0;
  for (const { name, ms } of summary.owners) {
    const component = COMPONENTS.find(([, pattern]) => pattern.test(name));
    if (component) totals.set(component[0], totals.get(component[0]) + ms);
    else other += ms;
  }
  const share = (ms) => Math.round((ms / summary.busyMs) * 1000) / 10;
  return [...totals, ['other (Nest, rxjs, Node internals, …)', other]].map(([name, ms]) => ({
    name,
    ms,
    share: share(ms),
  }));
}

/** { busyMs, categories, owners: [{ name, ms, share }], functions: [{ name, where, ms, share }] } */
export function summarizeProfile(pathOrProfile, top = 15) {
  const profile = typeof pathOrProfile === 'string' ? JSON.parse(readFileSync(pathOrProfile, 'utf8')) : pathOrProfile;
  const nodes = new Map(profile.nodes.map((node) => [node.id, node]));
  const parents = new Map();
  for (const node of profile.nodes) for (const child of node.children ?? []) parents.set(child, node.id);
  const ownerCache = new Map();
  const ownerOf = (id) => {
    if (ownerCache.has(id)) return ownerCache.get(id);
    let owner = categoryOf(nodes.get(id).callFrame);
    for (let current = parents.get(id); UNOWNED.has(owner) && current !== undefined; current = parents.get(current)) {
      const category = categoryOf(nodes.get(current).callFrame);
      if (category !== 'root' && !UNOWNED.has(category)) owner = category;
    }
    ownerCache.set(id, owner);
    return owner;
  };
  const selfMs = new Map();
  const { samples, timeDeltas } = profile;
  for (let i = 0; i < samples.length; i += 1) {
    const delta = (timeDeltas[i + 1] ?? timeDeltas[i] ?? 0) / 1000;
    selfMs.set(samples[i], (selfMs.get(samples[i]) ?? 0) + delta);
  }
  const categories = new Map();
  const owners = new Map();
  const functions = new Map();
  let busyMs = 0;
  for (const [id, ms] of selfMs) {
    const node = nodes.get(id);
    if (!node) continue;
    const category = categoryOf(node.callFrame);
    if (category === 'idle' || category === 'root') continue;
    busyMs += ms;
    categories.set(category, (categories.get(category) ?? 0) + ms);
    const owner = ownerOf(id);
    owners.set(owner, (owners.get(owner) ?? 0) + ms);
    const { functionName, url, lineNumber } = node.callFrame;
    const key = `${functionName || '(anonymous)'}\u0000${url}:${lineNumber + 1}`;
    functions.set(key, (functions.get(key) ?? 0) + ms);
  }
  const share = (ms) => Math.round((ms / busyMs) * 1000) / 10;
  const ranked = (map) =>
    [...map].sort((a, b) => b[1] - a[1]).map(([name, ms]) => ({ name, ms: Math.round(ms), share: share(ms) }));
  return {
    busyMs: Math.round(busyMs),
    categories: ranked(categories),
    owners: ranked(owners),
    functions: [...functions]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([key, ms]) => {
        const [name, where] = key.split('\u0000');
        return {
          name,
          where: where.replace(/^file:\/\/.*?\/(node_modules|dist)\//, '$1/'),
          ms: Math.round(ms),
          share: share(ms),
        };
      }),
  };
}

export function formatProfile(summary, title = 'CPU profile of the service', limit = 12) {
  const lines = [`${title}: ${summary.busyMs.toLocaleString('en-US')} ms busy (idle excluded)`];
  const percent = (share) => `${share.toFixed(1).padStart(5)}%`;
  lines.push('  by owner (native and Node-internal time charged to the package or service code that called it):');
  for (const { name, share } of summary.owners.slice(0, limit)) lines.push(`    ${percent(share)}  ${name}`);
  lines.push("  by component (the README's breakdown):");
  for (const { name, share } of componentsOf(summary)) lines.push(`    ${percent(share)}  ${name}`);
  lines.push('  self time by where the code lives:');
  for (const { name, share } of summary.categories.slice(0, limit)) lines.push(`    ${percent(share)}  ${name}`);
  lines.push('  hottest functions (self time):');
  for (const { name, where, share } of summary.functions) lines.push(`    ${percent(share)}  ${name}  ${where}`);
  return lines.join('\n');
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const file = process.argv[2];
  if (!file) {
    process.stderr.write('usage: node bench/profile-summary.mjs <file.cpuprofile>\n');
    process.exit(2);
  }
  process.stdout.write(`${formatProfile(summarizeProfile(file))}\n`);
}
