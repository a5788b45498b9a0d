import { Cause, Data, Duration, Effect, Exit, Random, Schedule } from 'effect'
import { isCodedError } from '../../machines/connection.js'

/** The retry was stopped by its AbortSignal; carries the error of the last failed attempt, if any. */
export class BatchRetryAborted extends Data.TaggedError('BatchRetryAborted')<{ readonly lastError: unknown }> {}

export interface BatchRetrySettings {
  /** Ceiling of the first retry delay. */
  baseMs: number
  /** Growth of the ceiling per retry. */
  factor: number
  /** No single delay is longer than this. */
  capMs: number
  /** Each delay is drawn from [ceiling · (1 − jitter), ceiling]. */
  jitter: number
  /** No retry starts later than this after the first failure. */
  maxElapsedMs: number
  /** Retries after the first attempt, at most. */
  maxRetries: number
}

/**
 * 100 ms → 5 s, for a batch that failed against the store or a transport.
 *
 * A failed batch is not lost when retries stop: it goes to the durable DLQ and is replayed once the
 * breaker closes, so retries only have to ride out blips — a dropped connection, a failover, a
 * Postgres restart (seconds to tens of seconds). 30 s covers those; longer would only hold batches
 * in memory while the breaker already knows the store is down. The cap keeps the last retries
 * close together near the end of an outage, and 10 retries bound the work one batch can cause.
 * Jitter keeps many flushers (and several relays) from retrying in lock-step.
 */
export const defaultBatchRetrySettings: BatchRetrySettings = {
  baseMs: 100,
  factor: 2,
  capMs: 5_000,
  jitter: 0.2,
  maxElapsedMs: 30_000,
  maxRetries: 10,
}

/**
 * The one retry policy for failed batches: the relay's one backoff rule (machines/backoff.ts), as
 * an effect Schedule. Retry n waits backoffCeilingMs({ baseMs, capMs, factor }, n) — min(capMs,
 * base · factor^n) — jittered downward into [ceiling · (1 − jitter), ceiling], the range of
 * jitteredBackoffMs with spread = jitter (Schedule.jittered's 0.8–1.2 would push a capped delay
 * over the cap). Stops after maxRetries or when the next retry would start more than maxElapsedMs
 * after the first failure. Outputs the un-jittered exponential delay.
 */
export function batchRetrySchedule(settings: Partial<BatchRetrySettings> = {}): Schedule.Schedule<Duration.Duration> {
  const s = { ...defaultBatchRetrySettings, ...settings }
  return Schedule.exponential(Duration.millis(s.baseMs), s.factor).pipe(
    Schedule.modifyDelay(({ duration }) =>
      Effect.map(Random.next, (r) => Duration.millis(Math.round(Math.min(s.capMs, Duration.toMillis(duration)) * (1 - s.jitter * r)))),
    ),
    Schedule.while(({ elapsed, duration }) => elapsed + Duration.toMillis(duration) <= s.maxElapsedMs),
    Schedule.upTo({ times: s.maxRetries }),
  )
}

/** Errors a retry cannot fix: the sink refused the batch for what it contains (StoreError code 'rejected'). */
export function isRetryableBatchError(error: unknown): boolean {
  return !(isCodedError(error) && error.code === 'rejected')
}

export interface RetryBatchOptions {
  /** Whether a failure is worth retrying; default {@link isRetryableBatchError}. Others fail at once. */
  isRetryable?: (error: unknown) => boolean
  settings?: Partial<BatchRetrySettings>
  /** Stops the retries (and aborts the attempt in flight): rejects with {@link BatchRetryAborted}. */
  signal?: AbortSignal
}

/** {@link retryBatch} as an Effect, failing with the last attempt's error. */
export function retryBatchEffect<A>(
  attempt: (signal: AbortSignal) => PromiseLike<A>,
  options: Omit<RetryBatchOptions, 'signal'> = {},
): Effect.Effect<A, unknown> {
  return Effect.tryPromise({ try: attempt, catch: (error) => error }).pipe(
    Effect.retry({ schedule: batchRetrySchedule(options.settings), while: options.isRetryable ?? isRetryableBatchError }),
  )
}

/**
 * Runs `attempt` under {@link batchRetrySchedule}. Resolves with the first success; rejects with the
 * last error once the schedule gives up, or at once for a non-retryable error.
 */
export async function retryBatch<A>(attempt: (signal: AbortSignal) => PromiseLike<A>, options: RetryBatchOptions = {}): Promise<A> {
  if (options.signal?.aborted) throw new BatchRetryAborted({ lastError: undefined })
  let lastError: unknown
  const recorded = (signal: AbortSignal) =>
    Promise.resolve(attempt(signal)).catch((error: unknown) => {
      lastError = error
      throw error
    })
  const exit = await Effect.runPromiseExit(retryBatchEffect(recorded, options), { signal: options.signal })
  if (Exit.isSuccess(exit)) return exit.value
  if (Cause.hasFails(exit.cause)) throw Cause.squash(exit.cause)
  if (Cause.hasInterruptsOnly(exit.cause)) throw new BatchRetryAborted({ lastError })
  throw Cause.squash(exit.cause)
}
