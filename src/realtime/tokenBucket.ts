interface Waiter {
  since: number
  resolve: (waitedMs: number) => void
  reject: (reason: unknown) => void
  signal: AbortSignal | undefined
  onAbort: () => void
}

export interface WindowPacing {
  /** The receiver's sliding window; default 1000 ms (a per-second limit). */
  windowMs?: number
  /** How much later one message may reach the receiver than the next one did; default 50 ms. */
  jitterMs?: number
  now?: () => number
}

/**
 * A token bucket: `ratePerSecond` tokens refill continuously up to `burst`, each take() spends one
 * and waits for it when none is left. Waiting takes are served first come, first served, and a
 * tryTake() never jumps that queue. In any interval of T ms at most floor(burst + rate·T/1000)
 * takes go through. Its timer is unref'd: a bucket alone never keeps the process alive.
 */
export class TokenBucket {
  private tokens: number
  private last: number
  private readonly perMs: number
  private readonly waiters: Waiter[] = []
  private timer: NodeJS.Timeout | null = null

  constructor(
    ratePerSecond: number,
    private readonly burst: number = Math.max(1, ratePerSecond),
    private readonly now: () => number = () => performance.now(),
  ) {
    if (!(ratePerSecond > 0) || !Number.isFinite(ratePerSecond)) throw new RangeError(`ratePerSecond must be a positive number, got ${ratePerSecond}`)
    if (!(burst >= 1) || !Number.isFinite(burst)) throw new RangeError(`burst must be a number ≥ 1, got ${burst}`)
    this.perMs = ratePerSecond / 1000
    this.tokens = burst
    this.last = now()
  }

  /**
   * A bucket that keeps every sliding `windowMs` window, as the receiver counts it, at or under
   * `limit` messages, even when a message reaches the receiver up to `jitterMs` later than the
   * next one: the sends behind any receiver window fall within windowMs + jitterMs, and at most
   * floor(burst + rate·(windowMs + jitterMs)/1000) ≤ limit takes fit in that span.
   * Burst: 1 below a limit of 40 (a message every (windowMs + jitterMs)/limit, rounded up to
   * whole timer milliseconds, which costs under 4 %); from 40 on, max(2, ⌈limit/200⌉), so a
   * timer firing a few milliseconds late banks its token instead of losing it. Throughput:
   * (limit + 1 − burst) per windowMs + jitterMs, e.g. 99 per 1,050 ms for 100/s.
   */
  static forWindow(limit: number, pacing: WindowPacing = {}): TokenBucket {
    if (!(limit >= 1) || !Number.isFinite(limit)) throw new RangeError(`limit must be a number ≥ 1, got ${limit}`)
    const span = (pacing.windowMs ?? 1000) + (pacing.jitterMs ?? 50)
    const burst = limit < 40 ? 1 : Math.max(2, Math.ceil(limit / 200))
    // The bound is a strict inequality; shave a millionth so rounding cannot reach it.
    const rate = (((limit + 1 - burst) * 1000) / span) * (1 - 1e-6)
    return new TokenBucket(rate, burst, pacing.now)
  }

  /** Whole tokens a tryTake() could have now (0 while takes are waiting). */
  get available(): number {
    if (this.waiters.length > 0) return 0
    this.refill()
    return Math.floor(this.tokens)
  }

  /** Takes a token if one is there and nobody is waiting for one. */
  tryTake(): boolean {
    if (this.waiters.length > 0) return false
    this.refill()
    if (this.tokens < 1) return false
    this.tokens -= 1
    return true
  }

  /** Resolves with the milliseconds waited once a token is taken; rejects with the signal's reason when aborted first. */
  take(signal?: AbortSignal): Promise<number> {
    if (signal?.aborted) return Promise.reject(signal.reason)
    if (this.tryTake()) return Promise.resolve(0)
    return new Promise<number>((resolve, reject) => {
      const waiter: Waiter = {
        since: this.now(),
        resolve,
        reject,
        signal,
        onAbort: () => this.abandon(waiter),
      }
      signal?.addEventListener('abort', waiter.onAbort, { once: true })
      this.waiters.push(waiter)
      this.schedule()
    })
  }

  private abandon(waiter: Waiter): void {
    const i = this.waiters.indexOf(waiter)
    if (i < 0) return
    this.waiters.splice(i, 1)
    if (this.waiters.length === 0 && this.timer) {
      clearTimeout(this.timer)
      this.timer = null
    }
    waiter.reject(waiter.signal?.reason)
  }

  private refill(): void {
    const t = this.now()
    if (t > this.last) {
      this.tokens = Math.min(this.burst, this.tokens + (t - this.last) * this.perMs)
      this.last = t
    }
  }

  private serve(): void {
    this.timer = null
    this.refill()
    while (this.tokens >= 1 && this.waiters.length > 0) {
      const waiter = this.waiters.shift() as Waiter
      this.tokens -= 1
      waiter.signal?.removeEventListener('abort', waiter.onAbort)
      waiter.resolve(this.last - waiter.since)
    }
    this.schedule()
  }

  private schedule(): void {
    if (this.timer || this.waiters.length === 0) return
    this.refill()
    // Never early: a timer that fires a little before the token is due just schedules again.
    const ms = Math.max(1, Math.ceil((1 - this.tokens) / this.perMs))
    this.timer = setTimeout(() => this.serve(), ms)
    this.timer.unref()
  }
}
