import { Clock, Effect, Exit, Fiber, Random } from 'effect'
import { TestClock } from 'effect/testing'
import { describe, expect, it } from 'vitest'
import {
  BatchRetryAborted,
  batchRetrySchedule,
  defaultBatchRetrySettings,
  isRetryableBatchError,
  retryBatch,
  retryBatchEffect,
  type BatchRetrySettings,
} from '../../src/delivery/retryPolicy.js'

class FakeStoreError extends Error {
  constructor(readonly code: 'unavailable' | 'rejected' | 'timeout') {
    super(`store ${code}`)
  }
}

/**
 * Runs an always-failing attempt under the schedule on effect's TestClock and returns the
 * (virtual) times at which attempts started, and how the retry ended.
 */
async function attemptTimes(settings: Partial<BatchRetrySettings>, options: { seed?: string; attemptMs?: number } = {}) {
  const program = Effect.gen(function* () {
    const times: number[] = []
    const attempt = Effect.gen(function* () {
      times.push(yield* Clock.currentTimeMillis)
      if (options.attemptMs) yield* Effect.sleep(options.attemptMs)
      return yield* Effect.fail(new FakeStoreError('unavailable'))
    })
    const fiber = yield* Effect.forkChild(Effect.retry(attempt, batchRetrySchedule(settings)))
    yield* TestClock.adjust('1 hour')
    const exit = yield* Effect.exit(Fiber.join(fiber))
    return { times, exit }
  })
  return Effect.runPromise(program.pipe(Random.withSeed(options.seed ?? 'relay'), Effect.provide(TestClock.layer())))
}

const gaps = (times: number[]) => times.slice(1).map((t, i) => t - times[i]!)

describe('batchRetrySchedule', () => {
  it('delays grow exponentially, are jittered downward and capped, and the retries are bounded', async () => {
    const s = defaultBatchRetrySettings
    const { times, exit } = await attemptTimes({})
    const delays = gaps(times)
    expect(times.length).toBeGreaterThan(2)
    expect(times.length).toBeLessThanOrEqual(s.maxRetries + 1)
    expect(times.at(-1)!).toBeLessThanOrEqual(s.maxElapsedMs)
    delays.forEach((delay, n) => {
      const ceiling = Math.min(s.capMs, s.baseMs * s.factor ** n)
      expect(delay, `delay ${n}`).toBeLessThanOrEqual(ceiling)
      expect(delay, `delay ${n}`).toBeGreaterThanOrEqual(Math.floor(ceiling * (1 - s.jitter)))
      expect(delay).toBeLessThanOrEqual(s.capMs)
    })
    // Until the cap, every delay is longer than the one before.
    const growing = delays.slice(0, delays.findIndex((d) => d > s.capMs / s.factor) + 1)
    expect(growing.length).toBeGreaterThanOrEqual(5)
    growing.slice(1).forEach((d, i) => expect(d).toBeGreaterThan(growing[i]!))
    expect(Exit.isFailure(exit)).toBe(true)
  })

  it('is jittered: different random sequences give different delays', async () => {
    const a = gaps((await attemptTimes({}, { seed: 'a' })).times)
    const b = gaps((await attemptTimes({}, { seed: 'b' })).times)
    expect(a).not.toEqual(b)
    expect(a.some((d, n) => d !== Math.min(5_000, 100 * 2 ** n))).toBe(true)
  })

  it('stops at maxRetries', async () => {
    const { times } = await attemptTimes({ maxRetries: 3 })
    expect(times).toHaveLength(4)
  })

  it('stops retrying before the elapsed bound, however many retries are left', async () => {
    const s = { baseMs: 100, capMs: 1_000, maxElapsedMs: 10_000, maxRetries: 1_000 }
    const { times } = await attemptTimes(s)
    expect(times.at(-1)!).toBeLessThanOrEqual(s.maxElapsedMs)
    // Had another retry fitted (its delay is at most the cap), the schedule would have taken it.
    expect(times.at(-1)! + s.capMs).toBeGreaterThan(s.maxElapsedMs)
    expect(times.length).toBeLessThan(1_001)
  })

  it('counts the time attempts take against the elapsed bound', async () => {
    const s = { baseMs: 100, capMs: 1_000, maxElapsedMs: 10_000, maxRetries: 1_000 }
    const { times } = await attemptTimes(s, { attemptMs: 2_000 })
    // Elapsed counts from the first failure, which came after the first attempt's 2 s.
    expect(times.at(-1)!).toBeLessThanOrEqual(2_000 + s.maxElapsedMs)
    expect(times.length).toBeLessThanOrEqual(6)
  })
})

describe('retryBatchEffect', () => {
  it('fails at once with a non-retryable error', async () => {
    let calls = 0
    const exit = await Effect.runPromiseExit(
      retryBatchEffect(async () => {
        calls++
        throw new FakeStoreError('rejected')
      }),
    )
    expect(calls).toBe(1)
    expect(exit).toEqual(Exit.fail(new FakeStoreError('rejected')))
  })
})

describe('retryBatch', () => {
  const fast: Partial<BatchRetrySettings> = { baseMs: 1, capMs: 4, maxElapsedMs: 1_000, maxRetries: 5 }

  it('resolves with the first success after transient failures', async () => {
    let calls = 0
    const value = await retryBatch(
      async () => {
        if (++calls < 3) throw new FakeStoreError('unavailable')
        return 'stored'
      },
      { settings: fast },
    )
    expect(value).toBe('stored')
    expect(calls).toBe(3)
  })

  it('rejects with the last error once the schedule gives up', async () => {
    let calls = 0
    const failing = async () => {
      throw new Error(`attempt ${++calls}`)
    }
    await expect(retryBatch(failing, { settings: fast })).rejects.toThrow('attempt 6')
    expect(calls).toBe(6)
  })

  it('gives up on the elapsed bound with retries left', async () => {
    let calls = 0
    const started = Date.now()
    const failing = async () => {
      calls++
      throw new FakeStoreError('timeout')
    }
    await expect(retryBatch(failing, { settings: { baseMs: 1, capMs: 5, maxElapsedMs: 40, maxRetries: 10_000 } })).rejects.toBeInstanceOf(FakeStoreError)
    expect(calls).toBeGreaterThan(2)
    expect(calls).toBeLessThan(100)
    expect(Date.now() - started).toBeLessThan(1_000)
  })

  it('a non-retryable error (StoreError code rejected) fails at once', async () => {
    let calls = 0
    const rejected = new FakeStoreError('rejected')
    await expect(
      retryBatch(async () => {
        calls++
        throw rejected
      }),
    ).rejects.toBe(rejected)
    expect(calls).toBe(1)
  })

  it('takes a custom isRetryable', async () => {
    let calls = 0
    const fatal = new Error('schema mismatch')
    const failing = async () => {
      calls++
      throw calls < 2 ? new Error('flaky') : fatal
    }
    await expect(retryBatch(failing, { settings: fast, isRetryable: (e) => e !== fatal })).rejects.toBe(fatal)
    expect(calls).toBe(2)
  })

  it('an abort stops the retries and the attempt in flight, carrying the last error', async () => {
    const controller = new AbortController()
    const signals: AbortSignal[] = []
    let calls = 0
    const attempt = (signal: AbortSignal) => {
      signals.push(signal)
      if (++calls === 1) return Promise.reject(new FakeStoreError('unavailable'))
      controller.abort()
      return new Promise<never>(() => {})
    }
    const result = retryBatch(attempt, { settings: fast, signal: controller.signal })
    await expect(result).rejects.toBeInstanceOf(BatchRetryAborted)
    await expect(result).rejects.toMatchObject({ _tag: 'BatchRetryAborted', lastError: new FakeStoreError('unavailable') })
    expect(calls).toBe(2)
    expect(signals[1]!.aborted).toBe(true)
  })

  it('an already aborted signal makes no attempt', async () => {
    let calls = 0
    await expect(retryBatch(async () => ++calls, { signal: AbortSignal.abort() })).rejects.toMatchObject({ _tag: 'BatchRetryAborted', lastError: undefined })
    expect(calls).toBe(0)
  })

  it('classifies errors: only code rejected is final', () => {
    expect(isRetryableBatchError(new FakeStoreError('rejected'))).toBe(false)
    expect(isRetryableBatchError(new FakeStoreError('unavailable'))).toBe(true)
    expect(isRetryableBatchError(new FakeStoreError('timeout'))).toBe(true)
    expect(isRetryableBatchError(new Error('ECONNRESET'))).toBe(true)
    expect(isRetryableBatchError(undefined)).toBe(true)
  })
})
