import type { ActorRefFrom } from 'xstate'
import { tryAcquirePermission, type circuitBreakerMachine } from '../../machines/circuitBreaker.js'
import type { Logger } from '../observability/logger.js'
import type { Metrics } from '../observability/metrics.js'
import { retryBatch } from '../delivery/retryPolicy.js'
import { BreakerOpenError } from '../store/sink.js'
import type { StoreQueue } from '../delivery/queue.js'
import type { RealtimeTransport } from './transport.js'

export const REALTIME_SINK = 'realtime'

type Breaker = ActorRefFrom<typeof circuitBreakerMachine>

export interface RealtimeSinkDeps {
  transport: () => RealtimeTransport
  queue: StoreQueue
  breaker: () => Breaker | undefined
  metrics: Metrics
  logger: Logger
}

/**
 * Supabase Realtime as a sink: acknowledged broadcasts of payload-bounded batches, guarded by the
 * Realtime breaker and the one retry policy. Realtime is a delivery path, not storage: a batch it
 * would not acknowledge is dropped and counted (the store has it, and dashboards fail over to
 * /ws?since=, which reads the store) rather than held in the dead-letter queue, so a Realtime
 * outage can never fill the relay's disk or throttle ingest.
 */
export class RealtimeSink {
  /** Highest seq Realtime acknowledged. */
  lastAckedSeq = 0
  /** Broadcast attempts and failures in the current and previous minute, for the rollout's error-rate gate. */
  private calls = { windowStart: Date.now(), attempts: 0, failures: 0, prevAttempts: 0, prevFailures: 0 }

  constructor(private readonly deps: RealtimeSinkDeps) {}

  /** The realtimeFlusher's flushBatch: one broadcast of the oldest events that fit the payload limit. */
  async flush(max: number, draining: boolean): Promise<{ flushed: number; durationMs: number }> {
    const pending = this.deps.queue.peek(max)
    if (pending.length === 0) return { flushed: 0, durationMs: 0 }
    const transport = this.deps.transport()
    const { events, tooLarge } = transport.fit(pending)
    if (tooLarge) {
      // Cannot happen for validated events (256 KiB limit) unless REALTIME_MAX_PAYLOAD_BYTES is set below it.
      this.drop(events.length, 'payloadTooLarge', `event seq ${events[0]!.seq} alone exceeds REALTIME_MAX_PAYLOAD_BYTES`)
      return { flushed: events.length, durationMs: 0 }
    }
    const started = performance.now()
    const end = this.deps.metrics.flushDuration.startTimer({ sink: REALTIME_SINK })
    try {
      await retryBatch(() => this.call(() => transport.send(events)), {
        isRetryable: (err) => !(err instanceof BreakerOpenError) && (err as { code?: string }).code !== 'payloadTooLarge',
        settings: draining ? { maxRetries: 0 } : { maxElapsedMs: 5000 },
      })
      end({ outcome: 'ok' })
    } catch (err) {
      end({ outcome: 'error' })
      throw err
    }
    this.deps.queue.drop(events.length)
    this.lastAckedSeq = events[events.length - 1]!.seq
    this.deps.metrics.eventsDelivered.labels(REALTIME_SINK).inc(events.length)
    this.deps.metrics.queueDepth.labels(REALTIME_SINK).set(this.deps.queue.size)
    return { flushed: events.length, durationMs: performance.now() - started }
  }

  /** The realtimeFlusher's deadLetter: drop the batch Realtime would not take, counted and logged. */
  async discard(max: number, error: string): Promise<{ moved: number }> {
    const batch = this.deps.queue.peek(max)
    if (batch.length === 0) return { moved: 0 }
    this.drop(batch.length, (/breaker/i.test(error) ? 'breakerOpen' : 'notAcknowledged'), error, batch[0]!.seq)
    return { moved: batch.length }
  }

  /** Drops the oldest `count` queued events (the queue is over its bound). */
  discardOldest(count: number): void {
    this.drop(count, 'overflow', 'Realtime queue over BATCH_MAX_PENDING')
  }

  /** Drops everything still queued (shutdown). */
  discardAll(reason: string): number {
    const n = this.deps.queue.size
    if (n) this.drop(n, 'shutdown', reason)
    return n
  }

  private drop(count: number, reason: string, error: string, firstSeq?: number): void {
    this.deps.queue.drop(count)
    this.deps.metrics.eventsDropped.labels(REALTIME_SINK, reason).inc(count)
    this.deps.metrics.queueDepth.labels(REALTIME_SINK).set(this.deps.queue.size)
    this.deps.logger.warn({ sink: REALTIME_SINK, events: count, firstSeq, reason, error }, 'Realtime did not take a batch; dashboards read it from /ws?since=')
  }

  /** Failed broadcasts / attempted broadcasts over roughly the last minute, in percent; null without attempts. */
  errorRatePct(): number | null {
    this.rollCalls()
    const attempts = this.calls.attempts + this.calls.prevAttempts
    return attempts === 0 ? null : ((this.calls.failures + this.calls.prevFailures) * 100) / attempts
  }

  private rollCalls(): void {
    const now = Date.now()
    if (now - this.calls.windowStart < 60_000) return
    const stale = now - this.calls.windowStart >= 120_000
    this.calls = { windowStart: now, attempts: 0, failures: 0, prevAttempts: stale ? 0 : this.calls.attempts, prevFailures: stale ? 0 : this.calls.failures }
  }

  private async call<A>(what: () => Promise<A>): Promise<A> {
    const breaker = this.deps.breaker()
    if (breaker && !tryAcquirePermission(breaker)) throw new BreakerOpenError(REALTIME_SINK)
    const started = performance.now()
    this.rollCalls()
    this.calls.attempts++
    try {
      const result = await what()
      breaker?.send({ type: 'call.succeeded', durationMs: performance.now() - started })
      return result
    } catch (err) {
      this.calls.failures++
      breaker?.send({ type: 'call.failed', reason: (err as Error).message })
      throw err
    }
  }
}
