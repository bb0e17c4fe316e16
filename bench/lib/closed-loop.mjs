// The bench's one closed-loop driver: the throughput, drain and fan-out scenarios and every
// bounded-concurrency loop of the load workers run on it.

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Closed loop: each lane keeps at most `window` operations in flight, and every operation
 * that ends starts the next one on its lane, until the clock passes `stopAt` or `limit`
 * operations were started over all lanes.
 *
 * `start(lane, release, seq)` begins one operation (`seq`: 0, 1, … over all lanes) and
 * must call `release()` once it ended, in success or failure (later calls are ignored).
 * Resolves once sending stopped and nothing is in flight, or `drainMs` after sending
 * stopped, whichever comes first; with `stopAt` it never resolves before then (so that a
 * worker without lanes still covers the measured stretch).
 *
 * @template Lane
 * @param {{
 *   lanes: Lane[],
 *   window: number,
 *   start: (lane: Lane, release: () => void, seq: number) => void,
 *   stopAt?: number,
 *   limit?: number,
 *   drainMs?: number,
 *   now?: () => number,
 * }} options  `stopAt` on the `now` clock (default: performance.timeOrigin-based ms, as clock() in stats.mjs)
 * @returns {Promise<{ started: number, stuck: number }>} stuck: operations still in flight at the end
 */
export async function closedLoop({
  lanes,
  window,
  start,
  stopAt = Infinity,
  limit = Infinity,
  drainMs = Infinity,
  now = () => performance.timeOrigin + performance.now(),
}) {
  let started = 0;
  let inFlight = 0;
  let resolveIdle = () => undefined;
  const idle = new Promise((resolve) => (resolveIdle = resolve));
  const sending = () => started < limit && now() < stopAt;

  const pump = (lane) => {
    while (lane.inFlight < window && sending()) {
      const seq = started;
      started += 1;
      lane.inFlight += 1;
      inFlight += 1;
      let released = false;
      start(
        lane.value,
        () => {
          if (released) return;
          released = true;
          lane.inFlight -= 1;
          inFlight -= 1;
          pump(lane);
          if (inFlight === 0 && !sending()) resolveIdle();
        },
        seq,
      );
    }
  };

  for (const lane of lanes.map((value) => ({ value, inFlight: 0 }))) pump(lane);
  // Sending stops at stopAt: pump checks the clock on every completion; a lane whose window
  // is stuck is freed by its operations' own timeouts.
  if (Number.isFinite(stopAt)) await sleep(Math.max(0, stopAt - now()));
  if (inFlight > 0) {
    await (Number.isFinite(drainMs) ? Promise.race([idle, sleep(drainMs)]) : idle);
  }
  return { started, stuck: inFlight };
}

/**
 * Runs `task` over `items` with at most `concurrency` at a time (a closed loop of one lane);
 * resolves their results in order. A task that throws rejects the whole, as Promise.all.
 *
 * @template T, R
 * @param {T[]} items
 * @param {number} concurrency
 * @param {(item: T, index: number) => Promise<R>} task
 * @returns {Promise<R[]>}
 */
export async function pool(items, concurrency, task) {
  const results = new Array(items.length);
  let failure;
  await closedLoop({
    lanes: [null],
    window: Math.max(1, concurrency),
    limit: items.length,
    start: (_, release, index) => {
      if (failure !== undefined) {
        queueMicrotask(release); // not synchronously: the next start would nest one level deeper
        return;
      }
      task(items[index], index).then(
        (result) => {
          results[index] = result;
          release();
        },
        (error) => {
          failure ??= { error };
          release();
        },
      );
    },
  });
  if (failure !== undefined) throw failure.error;
  return results;
}
