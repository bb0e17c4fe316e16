import { spawn } from 'node:child_process';
import { once } from 'node:events';
import * as fs from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import ts from 'typescript';
import { afterAll, describe, expect, it, vi } from 'vitest';

import { fileStorage } from './file.js';
import type { StoredSend } from './storage.js';
import { storageConformance, storedSend } from './storage-conformance.js';

// Passed through, so that a test can count the directory fsyncs.
vi.mock('node:fs/promises', async (importOriginal) => {
  const actual = await importOriginal<typeof fs>();
  return { ...actual, open: vi.fn(actual.open) };
});

const root = await fs.mkdtemp(join(tmpdir(), 'file-storage-'));
let dirs = 0;
const freshDir = () => join(root, `store-${++dirs}`);

afterAll(() => fs.rm(root, { recursive: true, force: true }));

function isComplete(value: unknown): value is StoredSend {
  const entry = value as Partial<StoredSend> | null;
  return (
    typeof entry?.clientMsgId === 'string' &&
    typeof entry.conversationId === 'string' &&
    typeof entry.createdAt === 'string' &&
    typeof entry.attempts === 'number' &&
    typeof entry.order === 'number' &&
    typeof entry.body === 'string'
  );
}

describe('fileStorage', () => {
  storageConformance(
    () => {
      const dir = freshDir();
      return { storage: fileStorage(dir), reopen: () => fileStorage(dir) };
    },
    { durable: true },
  );

  it('creates its directory with any missing parents', async () => {
    const dir = join(freshDir(), 'a', 'b');
    await fileStorage(dir).putOutbox([storedSend(1)]);

    expect((await fileStorage(dir).load()).outbox).toEqual([storedSend(1)]);
  });

  it('fsyncs the outbox directory once for a batch of entries', async () => {
    const dir = freshDir();
    const storage = fileStorage(dir);
    await storage.load();
    const opens = vi.mocked(fs.open);
    opens.mockClear();

    await storage.putOutbox(Array.from({ length: 20 }, (_, i) => storedSend(i)));

    const files = opens.mock.calls.map(([path]) => String(path));
    expect(files.filter((path) => path === join(dir, 'outbox'))).toHaveLength(1);
    expect(files.filter((path) => path.endsWith('.json.tmp'))).toHaveLength(20);
  });

  it('skips and removes leftover tmp files and unreadable entries', async () => {
    const dir = freshDir();
    await fileStorage(dir).putOutbox([storedSend(1), storedSend(2)]);
    await fileStorage(dir).setHighWater({ a: 3 });
    const outbox = join(dir, 'outbox');
    const torn = JSON.stringify(storedSend(3)).slice(0, 40);
    await fs.writeFile(join(outbox, 'interrupted.json.tmp'), torn);
    await fs.writeFile(join(outbox, 'torn.json'), torn);
    await fs.writeFile(join(outbox, 'incomplete.json'), JSON.stringify({ clientMsgId: 'msg-4' }));
    await fs.writeFile(join(dir, 'high-water.json.tmp'), '{"a":');

    expect(await fileStorage(dir).load()).toEqual({ outbox: [storedSend(1), storedSend(2)], highWater: { a: 3 } });
    expect((await fs.readdir(outbox)).sort()).toHaveLength(2);
    expect(await fs.readdir(dir)).not.toContain('high-water.json.tmp');
  });

  it('starts from no marks when the marks file is unreadable', async () => {
    const dir = freshDir();
    await fs.mkdir(dir);
    await fs.writeFile(join(dir, 'high-water.json'), 'not json');
    const storage = fileStorage(dir);

    expect((await storage.load()).highWater).toEqual({});
    await storage.setHighWater({ a: 1 });
    expect((await fileStorage(dir).load()).highWater).toEqual({ a: 1 });
  });

  // SIGKILL at random moments of a writing loop, then check what the next run finds.
  it('never leaves a torn or lost entry or a lowered mark when the process is killed', async () => {
    const dir = freshDir();
    const child = await writeCrashChild();
    const put = new Set<string>();
    let markWritten = 0;
    let markLoaded = 0;

    for (let run = 1; run <= 5; run++) {
      const lines = await runAndKill(child, dir, run, 20 + Math.random() * 280);
      for (const [verb, ...args] of lines.map((line) => line.split(' '))) {
        if (verb === 'put') args.forEach((id) => put.add(id));
        if (verb === 'deleting') args.forEach((id) => put.delete(id));
        if (verb === 'mark') markWritten = Number(args[0]);
      }

      // No file under its final name is ever torn: each was complete before its rename.
      const outbox = join(dir, 'outbox');
      for (const name of await fs.readdir(outbox)) {
        if (name.endsWith('.json'))
          expect(isComplete(JSON.parse(await fs.readFile(join(outbox, name), 'utf8')))).toBe(true);
      }

      const { outbox: entries, highWater } = await fileStorage(dir).load();
      expect(entries.every(isComplete)).toBe(true);
      expect(entries.every((entry) => entry.body!.length === 64 * 1024)).toBe(true);
      const loaded = new Set(entries.map((entry) => entry.clientMsgId));
      expect([...put].filter((id) => !loaded.has(id))).toEqual([]);
      expect(highWater.c).toBeGreaterThanOrEqual(Math.max(markWritten, markLoaded));
      markLoaded = highWater.c ?? 0;
      expect((await fs.readdir(outbox)).filter((name) => name.endsWith('.tmp'))).toEqual([]);
    }
    expect(put.size).toBeGreaterThan(0);
  }, 30_000);
});

/**
 * The adapter as plain JavaScript next to a script that writes with it in a loop, and
 * prints each step once it resolved ("deleting" before it starts). file.ts imports only
 * types from the package, so transpiling it alone gives a module that runs as it is.
 */
async function writeCrashChild(): Promise<string> {
  const source = await fs.readFile(new URL('./file.ts', import.meta.url), 'utf8');
  const { outputText } = ts.transpileModule(source, {
    compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
  });
  const dir = await fs.mkdtemp(join(root, 'child-'));
  await fs.writeFile(join(dir, 'file.mjs'), outputText);
  const script = `
    import { fileStorage } from './file.mjs';
    const [dir, run] = process.argv.slice(2);
    const storage = fileStorage(dir);
    let mark = (await storage.load()).highWater.c ?? 0;
    const body = 'x'.repeat(64 * 1024);
    process.stdout.write('ready\\n');
    for (let i = 0; ; i++) {
      const batch = Array.from({ length: 8 }, (_, j) => ({
        clientMsgId: \`r\${run}-\${i}-\${j}\`, conversationId: 'c', createdAt: new Date().toISOString(),
        attempts: 0, order: Number(run) * 1e9 + i * 10 + j, body,
      }));
      await storage.putOutbox(batch);
      process.stdout.write(\`put \${batch.map((entry) => entry.clientMsgId).join(' ')}\\n\`);
      const gone = batch.slice(0, 6).map((entry) => entry.clientMsgId);
      process.stdout.write(\`deleting \${gone.join(' ')}\\n\`);
      await storage.deleteOutbox(gone);
      mark += 1;
      await storage.setHighWater({ c: mark, [\`d\${i % 3}\`]: i });
      process.stdout.write(\`mark \${mark}\\n\`);
    }
  `;
  await fs.writeFile(join(dir, 'child.mjs'), script);
  return join(dir, 'child.mjs');
}

/** Runs the child until it is ready plus `delayMs`, SIGKILLs it, and returns what it printed. */
async function runAndKill(script: string, dir: string, run: number, delayMs: number): Promise<string[]> {
  const child = spawn(process.execPath, [script, dir, String(run)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const ready = new Promise<void>((resolve) => {
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
      if (stdout.startsWith('ready\n')) resolve();
    });
  });
  const closed = once(child, 'close');
  await Promise.race([ready, closed]);
  await new Promise((resolve) => setTimeout(resolve, delayMs));
  child.kill('SIGKILL');
  const [code, signal] = (await closed) as [number | null, NodeJS.Signals | null];
  if (signal !== 'SIGKILL') throw new Error(`the writer exited by itself (${code}): ${stderr}`);
  // Writes to a pipe are synchronous on Linux, so every line printed before the kill is here.
  return stdout.split('\n').filter((line) => line !== '' && line !== 'ready');
}
