// The load workers' side of the orchestrator's request/reply IPC (LoadWorker in processes.mjs).

/**
 * Answers `{ id, op, args }` messages with `ops[op](args)`'s result or error, exits when the
 * orchestrator goes away (error, Ctrl-C: nothing of ours may outlive it), and says ready.
 */
export function serveOps(ops) {
  process.on('message', (message) => {
    const { id, op, args } = message ?? {};
    const handler = ops[op];
    if (!handler) {
      process.send?.({ id, ok: false, error: `unknown op ${op}` });
      return;
    }
    Promise.resolve()
      .then(() => handler(args ?? {}))
      .then(
        (result) => process.send?.({ id, ok: true, result }),
        (error) => process.send?.({ id, ok: false, error: error?.stack ?? String(error) }),
      );
  });
  process.on('disconnect', () => process.exit(0));
  process.send?.({ type: 'ready', pid: process.pid });
}
