import type { ActorRefFrom } from 'xstate'
import { tryAcquirePermission, type circuitBreakerMachine } from '../../machines/circuitBreaker.js'
import type { DeadLetterQueue } from '../durability/dlq.js'
import type { Logger } from '../observability/logger.js'
import type { Metrics } from '../observability/metrics.js'
import { retryBatch } from '../delivery/retryPolicy.js'
import type { Store } from './store.js'
import type { StoreQueue } from '../delivery/queue.js'
import type { StoredEvent } from '../types.js'

export const STORE_SINK = 'store'
/** Most rows one insert carries when the queue is far behind (one JSON parameter of a few hundred KB). */
export const STORE_BACKLOG_BATCH = 1000

/** The breaker refused the call: the store is known to be down; the batch goes to the DLQ at once. */
export class BreakerOpenError extends Error {
  readonly _tag = 'BreakerOpen'
  readonly code = 'breakerOpen'
  constructor(readonly sink: string) {
    super(`${sink} circuit breaker is open`)
  }
}

/** A call that did not answer within its bound (a stalled network never errors by itself). */
export class CallTimeoutError extends Error {
  readonly _tag = 'CallTimeout'
  readonly code = 'timeout'
  constructor(readonly sink: string, readonly ms: number) {
    super(`${sink} call timed out after ${ms} ms`)
  }
}

type Breaker = ActorRefFrom<typeof circuitBreakerMachine>

export interface StoreSinkDeps {
  store: () => Store
  dlq: () => DeadLetterQueue
  queue: StoreQueue
  breaker: () => Breaker | undefined
  metrics: Metrics
  logger: Logger
  callTimeoutMs: number
  /** Every event up to seq has left the queue: stored, or durable in the DLQ. */
  onReleased: (seq: number) => void
}

/**
 * The store as a sink: batch writes guarded by the store's circuit breaker and the one retry
 * policy, dead-lettering of batches given up on, and replay of the DLQ. Every call reports its
 * outcome to the breaker (a refused batch is the data's fault, so it counts as the store answering).
 */
export class StoreSink {
  constructor(private readonly deps: StoreSinkDeps) {}

  /** One guarded call to the store. */
  async call<A>(what: (store: Store) => Promise<A>): Promise<A> {
    const breaker = this.deps.breaker()
    if (breaker && !tryAcquirePermission(breaker)) throw new BreakerOpenError(STORE_SINK)
    const started = performance.now()
    try {
      const result = await withTimeout(what(this.deps.store()), this.deps.callTimeoutMs, STORE_SINK)
      breaker?.send({ type: 'call.succeeded', durationMs: performance.now() - started })
      return result
    } catch (err) {
      if ((err as { code?: string }).code === 'rejected') breaker?.send({ type: 'call.succeeded', durationMs: performance.now() - started })
      else breaker?.send({ type: 'call.failed', reason: (err as Error).message })
      throw err
    }
  }

  /** The batchFlusher's flushBatch: write the oldest `max` queued events, retrying per the policy. */
  async flush(max: number, draining: boolean): Promise<{ flushed: number; durationMs: number }> {
    const batch = this.deps.queue.peek(max)
    if (batch.length === 0) return { flushed: 0, durationMs: 0 }
    const end = this.deps.metrics.flushDuration.startTimer({ sink: STORE_SINK })
    const started = performance.now()
    try {
      await retryBatch(() => this.call((store) => store.insertEvents(batch)), {
        isRetryable: (err) => !(err instanceof BreakerOpenError) && (err as { code?: string }).code !== 'rejected',
        // While shutting down there is no time for the policy: one attempt, then the DLQ.
        settings: draining ? { maxRetries: 0 } : undefined,
      })
      end({ outcome: 'ok' })
    } catch (err) {
      end({ outcome: 'error' })
      throw err
    }
    this.deps.queue.drop(batch.length)
    this.deps.metrics.eventsStored.inc(batch.length)
    this.deps.onReleased(batch[batch.length - 1]!.seq)
    return { flushed: batch.length, durationMs: performance.now() - started }
  }

  /** The batchFlusher's deadLetter: move the oldest `max` queued events to the durable DLQ. */
  async deadLetter(max: number, error: string): Promise<{ moved: number }> {
    // The same rows the failed flush tried: the machine passes the same max, and the queue has not moved.
    const batch = this.deps.queue.peek(max)
    if (batch.length === 0) return { moved: 0 }
    await this.deps.dlq().append({ sink: STORE_SINK, events: batch, error, attempts: 1 })
    this.deps.queue.drop(batch.length)
    this.deps.metrics.eventsDeadLettered.labels(STORE_SINK).inc(batch.length)
    this.deps.logger.warn({ sink: STORE_SINK, events: batch.length, firstSeq: batch[0]!.seq, error }, 'batch moved to the dead-letter queue')
    this.deps.onReleased(batch[batch.length - 1]!.seq)
    return { moved: batch.length }
  }

  /** Moves everything still queued to the DLQ (shutdown, when the flushers could not drain). */
  async deadLetterAll(error: string): Promise<number> {
    let moved = 0
    while (this.deps.queue.size > 0) moved += (await this.deadLetter(1000, error)).moved
    return moved
  }

  /**
   * The dlqReplayer's replayBatch: replays the oldest entry. A refused entry is split so that only
   * the rows the store refuses are parked (each with its reason) and the rest is stored.
   */
  async replayOldest(): Promise<{ replayed: number; parked: number; remaining: number }> {
    const dlq = this.deps.dlq()
    const entry = dlq.peekOldest(STORE_SINK)
    if (!entry) return { replayed: 0, parked: 0, remaining: 0 }
    let parked = 0
    try {
      await this.call((store) => store.insertEvents(entry.events))
    } catch (err) {
      if ((err as { code?: string }).code !== 'rejected') {
        await dlq.markFailed(entry.id, (err as Error).message)
        throw err
      }
      parked = await this.parkPoison(entry.events, (err as Error).message)
    }
    await dlq.markDone(entry.id)
    const remaining = dlq.liveDepth
    this.deps.metrics.eventsReplayed.labels(STORE_SINK).inc(entry.events.length - parked)
    return { replayed: 1, parked, remaining }
  }

  private async parkPoison(events: readonly StoredEvent[], batchError: string): Promise<number> {
    const dlq = this.deps.dlq()
    let parked = 0
    for (const event of events) {
      try {
        await this.call((store) => store.insertEvents([event]))
      } catch (err) {
        if ((err as { code?: string }).code !== 'rejected') throw err
        const entry = await dlq.append({ sink: STORE_SINK, events: [event], error: (err as Error).message || batchError, attempts: 1 })
        await dlq.park(entry.id, `rejected by the store: ${(err as Error).message}`)
        this.deps.logger.error({ sink: STORE_SINK, id: event.id, seq: event.seq, reason: (err as Error).message }, 'poison event parked in the dead-letter queue')
        parked++
      }
    }
    return parked
  }

  /** Liveness ping for the store's connection machine. */
  async ping(): Promise<void> {
    await withTimeout(this.deps.store().ping(), this.deps.callTimeoutMs, STORE_SINK)
  }
}

export function withTimeout<A>(promise: Promise<A>, ms: number, sink: string): Promise<A> {
  return new Promise<A>((resolve, reject) => {
    const timer = setTimeout(() => reject(new CallTimeoutError(sink, ms)), ms)
    timer.unref()
    promise.then(
      (v) => {
        clearTimeout(timer)
        resolve(v)
      },
      (e) => {
        clearTimeout(timer)
        reject(e)
      },
    )
  })
}
