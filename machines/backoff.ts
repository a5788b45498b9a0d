/**
 * The one exponential-backoff rule of the relay. Every reconnect and retry delay (the connection
 * machine, the batch flusher, the flag tiers' Redis and LISTEN connections, the /ws shadow) is
 * computed here; the batch retry Schedule (src/delivery/retryPolicy.ts) follows the same rule.
 */

export interface BackoffSettings {
  /** The ceiling at attempt 0. */
  baseMs: number
  /** No ceiling is higher than this. */
  capMs: number
  /** Growth of the ceiling per attempt; default 2. */
  factor?: number
}

/**
 * The ceiling of the delay before retry `attempt` (counted from 0): min(cap, base · factor^attempt).
 * A huge attempt is safe: the power overflows to Infinity and the cap wins.
 */
export function backoffCeilingMs({ baseMs, capMs, factor = 2 }: BackoffSettings, attempt: number): number {
  return Math.min(capMs, baseMs * factor ** attempt)
}

/**
 * A delay drawn uniformly from [ceiling · (1 − spread), ceiling) for `random` in [0, 1), where
 * ceiling is {@link backoffCeilingMs}. `spread` 1 (default) is full jitter, [0, ceiling); 0.5 is
 * "equal jitter", [ceiling / 2, ceiling), which never retries sooner than half the ceiling; 0 is
 * no jitter. Not rounded: a caller that wants whole milliseconds floors it.
 */
export function jitteredBackoffMs(settings: BackoffSettings, attempt: number, random: () => number, spread = 1): number {
  const ceiling = backoffCeilingMs(settings, attempt)
  const floor = ceiling * (1 - spread)
  return floor + random() * (ceiling - floor)
}
