import type { DeadLetterOutput, FlushBatchOutput } from '../../machines/batchFlusher.js'
import type { Outbox } from '../delivery/outbox.js'
import { retryBatch } from '../delivery/retryPolicy.js'
import { BatchHeld, BreakerOpen, guarded, type Link, type MachineSystem, type Sink } from '../delivery/sink.js'
import type { Logger } from '../observability/logger.js'
import type { Metrics } from '../observability/metrics.js'
import { RealtimeError, type RealtimeTransport } from './transport.js'

export const REALTIME_SINK = 'realtime'

export interface RealtimeSinkOptions {
  transport: RealtimeTransport
  /** The Realtime backlog: bounded by REALTIME_BACKLOG_EVENTS, oldest dropped and counted past it. */
  outbox: Outbox
  system: MachineSystem
  /** systemId of the Realtime circuit breaker. */
  breakerId: string
  metrics: Metrics
  logger: Logger
}

const isPayloadTooLarge = (err: unknown): boolean => err instanceof RealtimeError && err.code === 'payloadTooLarge'

/**
 * Supabase Realtime as a sink: acknowledged broadcasts of payload-bounded batches, guarded by the
 * Realtime breaker and the one retry policy. A batch Realtime does not take is held (BatchHeld) in
 * the bounded backlog, not dropped: the flusher retries it, and goes at once when the breaker lets
 * calls through again, so on recovery the backlog goes out first, in seq order, paced by the
 * transport's token bucket. Only at shutdown (draining) is a held batch given up, counted.
 */
export class RealtimeSink implements Sink {
  readonly name = REALTIME_SINK
  /** Highest seq Realtime acknowledged. */
  lastAckedSeq = 0
  /** Broadcast attempts and failures in the current and previous minute, for the rollout's error-rate gate. */
  private calls = { windowStart: Date.now(), attempts: 0, failures: 0, prevAttempts: 0, prevFailures: 0 }

  constructor(private readonly o: RealtimeSinkOptions) {}

  async flush(max: number, draining: boolean): Promise<FlushBatchOutput> {
    const pending = this.o.outbox.queue.peek(max)
    if (pending.length === 0) return { flushed: 0, durationMs: 0 }
    const { transport } = this.o
    const { events, tooLarge } = transport.fit(pending)
    if (tooLarge) {
      // Cannot happen for validated events (256 KiB limit) unless REALTIME_MAX_PAYLOAD_BYTES is set below it.
      this.o.outbox.discard(events.length, 'payloadTooLarge')
      this.o.logger.warn({ sink: REALTIME_SINK, seq: events[0]!.seq }, 'event alone exceeds REALTIME_MAX_PAYLOAD_BYTES; dashboards read it from /ws?since=')
      return { flushed: events.length, durationMs: 0 }
    }
    const started = performance.now()
    const end = this.o.metrics.flushDuration.startTimer({ sink: REALTIME_SINK })
    try {
      await retryBatch(() => this.call(() => transport.send(events)), {
        isRetryable: (err) => !(err instanceof BreakerOpen) && !isPayloadTooLarge(err),
        settings: draining ? { maxRetries: 0 } : { maxElapsedMs: 5000 },
      })
      end({ outcome: 'ok' })
    } catch (err) {
      end({ outcome: 'error' })
      throw err
    }
    this.o.outbox.take(events.length)
    this.lastAckedSeq = events[events.length - 1]!.seq
    this.o.metrics.eventsDelivered.labels(REALTIME_SINK).inc(events.length)
    return { flushed: events.length, durationMs: performance.now() - started }
  }

  /** Holds the batch in the backlog (the flusher retries it); at shutdown drops it, counted. */
  async deadLetter(max: number, error: string, draining: boolean): Promise<DeadLetterOutput> {
    if (!draining) throw new BatchHeld({ sink: REALTIME_SINK, message: `held for Realtime: ${error}` })
    const moved = this.o.outbox.discard(max, 'shutdown')
    if (moved) this.o.logger.warn({ sink: REALTIME_SINK, events: moved, error }, 'Realtime did not take a batch before shutdown; dashboards read it from /ws?since=')
    return { moved }
  }

  /** Drops everything still held (shutdown, after the flushers). */
  discardAll(): number {
    const n = this.o.outbox.discard(this.o.outbox.size, 'shutdown')
    if (n) this.o.logger.warn({ sink: REALTIME_SINK, events: n }, 'Realtime backlog dropped at shutdown; dashboards read it from /ws?since=')
    return n
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
    this.rollCalls()
    const counted = guarded(this.o.system, this.o.breakerId, REALTIME_SINK, what)
    // A refused call was never attempted: it does not count for the error rate.
    return counted.then(
      (result) => {
        this.calls.attempts++
        return result
      },
      (err: unknown) => {
        if (!(err instanceof BreakerOpen)) {
          this.calls.attempts++
          this.calls.failures++
        }
        throw err
      },
    )
  }
}

/**
 * The Realtime channel as a link. supabase-js rejoins by itself; the machine observes its
 * statuses rather than fighting it: a rejoin is `connection.restored`, anything else `connection.lost`.
 */
export function realtimeLink(transport: RealtimeTransport): Link {
  return {
    connect: (signal) => transport.connect(signal),
    probe: () => () => {},
    watch: (sendBack) =>
      transport.onStatus((status, err) => {
        if (status === 'SUBSCRIBED') sendBack({ type: 'connection.restored' })
        else sendBack({ type: 'connection.lost', code: status, message: err?.message ?? `channel ${status}` })
      }),
  }
}
