/** Reconnect delays (SDK.md "Lifecycle and state"). */
export interface BackoffOptions {
  minDelayMs: number;
  maxDelayMs: number;
}

/**
 * Full jitter: a delay drawn uniformly from [0, min(maxDelayMs, minDelayMs · 2^attempt)),
 * so that thousands of clients dropped at once do not come back in step.
 */
export function backoffDelay(attempt: number, options: BackoffOptions, random: () => number = Math.random): number {
  const ceiling = Math.min(options.maxDelayMs, options.minDelayMs * 2 ** Math.max(0, attempt));
  return Math.floor(random() * ceiling);
}
