import fc from 'fast-check'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { TokenBucket } from '../../src/realtime/tokenBucket.js'

// A simulated clock: fake timers move Date.now(), and the bucket reads it.
const now = (): number => Date.now()

beforeEach(() => {
  vi.useFakeTimers({ now: 1_000_000 })
})

afterEach(() => {
  vi.useRealTimers()
})

/**
 * `workers` loops that take() back to back until `untilMs`; run() advances the simulated clock
 * until every loop is done and returns the clock at every take before `untilMs`.
 */
async function greedy(bucket: TokenBucket, workers: number, untilMs: number): Promise<number[]> {
  const stamps: number[] = []
  let running = workers
  const loop = async (): Promise<void> => {
    while (now() < untilMs) {
      await bucket.take()
      if (now() < untilMs) stamps.push(now())
    }
    running--
  }
  for (let i = 0; i < workers; i++) void loop()
  while (running > 0) await vi.advanceTimersByTimeAsync(500)
  return stamps
}

/** Most stamps in any half-open window (t − windowMs, t], as the Realtime peer counts. */
function maxInWindow(stamps: number[], windowMs: number): number {
  const sorted = [...stamps].sort((a, b) => a - b)
  let max = 0
  let head = 0
  for (let i = 0; i < sorted.length; i++) {
    while ((sorted[head] as number) <= (sorted[i] as number) - windowMs) head++
    max = Math.max(max, i - head + 1)
  }
  return max
}

describe('TokenBucket', () => {
  it('starts full at burst and refills continuously, capped at burst', () => {
    const bucket = new TokenBucket(10, 3, now)
    expect(bucket.available).toBe(3)
    expect([bucket.tryTake(), bucket.tryTake(), bucket.tryTake(), bucket.tryTake()]).toEqual([true, true, true, false])
    vi.advanceTimersByTime(99)
    expect(bucket.tryTake()).toBe(false)
    vi.advanceTimersByTime(1)
    expect(bucket.tryTake()).toBe(true)
    vi.advanceTimersByTime(60_000)
    expect(bucket.available).toBe(3)
  })

  it('burst defaults to the rate, and to 1 below one token a second', () => {
    expect(new TokenBucket(5, undefined, now).available).toBe(5)
    const slow = new TokenBucket(0.5, undefined, now)
    expect(slow.available).toBe(1)
    expect(() => new TokenBucket(0)).toThrow(RangeError)
    expect(() => new TokenBucket(10, 0.5)).toThrow(RangeError)
  })

  it('over a simulated 10 s lets at most rate × 10 + burst takes through, and not many fewer', async () => {
    for (const [rate, burst] of [[100, 1], [100, 100], [37, 5], [2500, 25]] as const) {
      const start = now()
      const bucket = new TokenBucket(rate, burst, now)
      const stamps = await greedy(bucket, 8, start + 10_000)
      expect(stamps.length, `rate ${rate} burst ${burst}`).toBeLessThanOrEqual(rate * 10 + burst)
      // Millisecond timers cost a little throughput, never more than 2 %.
      expect(stamps.length, `rate ${rate} burst ${burst}`).toBeGreaterThanOrEqual(Math.floor((rate * 10 + burst) * 0.98))
    }
  })

  it('serves waiting takes first come, first served and reports how long each waited', async () => {
    const bucket = new TokenBucket(10, 1, now)
    expect(bucket.tryTake()).toBe(true)
    const order: number[] = []
    const waits = Array.from({ length: 5 }, (_, i) => bucket.take().then((ms) => (order.push(i), ms)))
    // A tryTake() must not jump the queue, even once a token is there.
    await vi.advanceTimersByTimeAsync(100)
    expect(bucket.tryTake()).toBe(false)
    expect(bucket.available).toBe(0)
    await vi.advanceTimersByTimeAsync(400)
    expect(order).toEqual([0, 1, 2, 3, 4])
    expect(await Promise.all(waits)).toEqual([100, 200, 300, 400, 500])
    expect(bucket.tryTake()).toBe(false)
    await vi.advanceTimersByTimeAsync(100)
    expect(bucket.tryTake()).toBe(true)
  })

  it('is fair between many waiters: each waits its turn, in call order', async () => {
    const bucket = new TokenBucket(50, 1, now)
    bucket.tryTake()
    const resolvedAt: number[] = []
    const all = Array.from({ length: 40 }, (_, i) => bucket.take().then(() => (resolvedAt[i] = now())))
    await vi.advanceTimersByTimeAsync(1_000)
    await Promise.all(all)
    for (let i = 1; i < 40; i++) expect(resolvedAt[i]! - resolvedAt[i - 1]!).toBe(20)
  })

  it('an aborted take rejects with the reason, frees its place, and the queue moves on', async () => {
    const bucket = new TokenBucket(10, 1, now)
    bucket.tryTake()
    const controller = new AbortController()
    const first = bucket.take(controller.signal)
    const second = bucket.take()
    const firstOutcome = first.then(() => 'taken', (err: Error) => err.message)
    controller.abort(new Error('shutting down'))
    expect(await firstOutcome).toBe('shutting down')
    await vi.advanceTimersByTimeAsync(100)
    expect(await second).toBe(100)
    await expect(bucket.take(AbortSignal.abort(new Error('already')))).rejects.toThrow('already')
  })

  it('an abandoned queue leaves no timer behind', async () => {
    const bucket = new TokenBucket(1, 1, now)
    bucket.tryTake()
    const controller = new AbortController()
    const waiting = bucket.take(controller.signal).catch(() => 'aborted')
    expect(vi.getTimerCount()).toBe(1)
    controller.abort()
    expect(await waiting).toBe('aborted')
    expect(vi.getTimerCount()).toBe(0)
  })
})

describe('TokenBucket.forWindow', () => {
  it('paces a limit of 100/s with a burst of 2, just under the rate', async () => {
    const bucket = TokenBucket.forWindow(100, { jitterMs: 50, now })
    const start = now()
    const stamps = await greedy(bucket, 4, start + 10_000)
    expect(maxInWindow(stamps, 1000)).toBeLessThanOrEqual(100)
    // burst 2, then (100 + 1 − 2) per 1,050 ms: about 94.3 a second.
    expect(stamps.length).toBeGreaterThanOrEqual(935)
    expect(stamps.length).toBeLessThanOrEqual(2 + 943)
  })

  it('keeps every receiver 1 s window within the limit when deliveries are delayed by up to jitterMs', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 800 }),
        fc.integer({ min: 0, max: 120 }),
        fc.integer({ min: 1, max: 6 }),
        fc.infiniteStream(fc.double({ min: 0, max: 1, noNaN: true })),
        async (limit, jitterMs, workers, delays) => {
          const bucket = TokenBucket.forWindow(limit, { jitterMs, now })
          const start = now()
          const stamps = await greedy(bucket, workers, start + 3_000)
          const arrivals = stamps.map((t) => t + delays.next().value * jitterMs)
          expect(maxInWindow(arrivals, 1000)).toBeLessThanOrEqual(limit)
          // and it still uses most of the limit: (limit + 1 − burst) per window + jitter
          const burst = limit < 40 ? 1 : Math.max(2, Math.ceil(limit / 200))
          const perSecond = ((limit + 1 - burst) * 1000) / (1000 + jitterMs)
          expect(stamps.length).toBeGreaterThanOrEqual(Math.floor(perSecond * 3 * 0.95))
        },
      ),
      { numRuns: 40 },
    )
  })
})
