/**
 * Polls `list()` until it holds at least `count` entries; fails after `timeoutMs` saying
 * `what` got how many. The push stand-ins wait for their requests with it.
 */
export async function waitForCount<T>(list: () => T[], count: number, timeoutMs: number, what: string): Promise<T[]> {
  const deadline = Date.now() + timeoutMs;
  while (list().length < count) {
    if (Date.now() > deadline)
      throw new Error(`${what} got ${list().length} of ${count} requests within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return list();
}
