import type { DeadLetterOutput, FlushBatchOutput } from '../../machines/batchFlusher.js'
import type { DeadLetterQueue } from '../durability/dlq.js'
import type { Release } from '../durability/release.js'
import type { Outbox } from '../delivery/outbox.js'
import { retryBatch } from '../delivery/retryPolicy.js'
import { BreakerOpen, CallTimeout, guarded, withTimeout, type Link, type MachineSystem, type Sink } from '../delivery/sink.js'
import type { Logger } from '../observability/logger.js'
import type { Metrics } from '../observability/metrics.js'
import type { StoredEvent } from '../types.js'
import { isRejected, StoreError, type Store } from './store.js'

export const STORE_SINK = 'store'
/** Most rows one insert carries when the queue is far behind (one JSON parameter of a few hundred KB). */
export const STORE_BACKLOG_BATCH = 1000

export interface StoreSinkOptions {
  store: Store
  dlq: DeadLetterQueue
  outbox: Outbox
  release: Release
  system: MachineSystem
  /** systemId of the store's circuit breaker. */
  breakerId: string
  metrics: Metrics
  logger: Logger
  callTimeoutMs: number
  /** Whether the migrations ran at start; when not, the store refuses every call until they have (migrateOnce). */
  migrated: boolean
}

/**
 * The store as a sink: batch writes guarded by the store's circuit breaker and the one retry
 * policy, dead-lettering of batches given up on, and replay of the DLQ. Every call reports its
 * outcome to the breaker (a refused batch is the data's fault, so it counts as the store answering).
 */
export class StoreSink implements Sink {
  readonly name = STORE_SINK
  private migrated: boolean

  constructor(private readonly o: StoreSinkOptions) {
    this.migrated = o.migrated
  }

  /** Runs the migrations if start-up could not (the store was down); the store's connect does it. */
  async migrateOnce(): Promise<void> {
    if (this.migrated) return
    const applied = await this.o.store.migrate()
    this.migrated = true
    this.o.logger.info({ store: this.o.store.kind, applied }, 'store ready (migrated once it was reachable)')
  }

  private call<A>(what: (store: Store) => Promise<A>): Promise<A> {
    return guarded(this.o.system, this.o.breakerId, STORE_SINK, () => this.migratedCall(what), isRejected)
  }

  // A batch must never meet a database without its tables: it would be refused and parked as poison.
  private migratedCall<A>(what: (store: Store) => Promise<A>): Promise<A> {
    if (!this.migrated) return Promise.reject(new StoreError({ code: 'unavailable', message: 'store not migrated yet (it was unreachable at start)' }))
    return withTimeout(what(this.o.store), this.o.callTimeoutMs, STORE_SINK)
  }

  async flush(max: number, draining: boolean): Promise<FlushBatchOutput> {
    const batch = this.o.outbox.queue.peek(max)
    if (batch.length === 0) return { flushed: 0, durationMs: 0 }
    const end = this.o.metrics.flushDuration.startTimer({ sink: STORE_SINK })
    const started = performance.now()
    try {
      await retryBatch(() => this.call((store) => store.insertEvents(batch)), {
        isRetryable: (err) => !(err instanceof BreakerOpen) && !isRejected(err),
        // While shutting down there is no time for the policy: one attempt, then the DLQ.
        settings: draining ? { maxRetries: 0 } : undefined,
      })
      end({ outcome: 'ok' })
    } catch (err) {
      end({ outcome: 'error' })
      throw err
    }
    this.o.outbox.take(batch.length)
    this.o.metrics.eventsStored.inc(batch.length)
    this.o.release.released(batch[batch.length - 1]!.seq)
    return { flushed: batch.length, durationMs: performance.now() - started }
  }

  /** Moves the oldest `max` queued events (the batch the failed flush tried) to the durable DLQ. */
  async deadLetter(max: number, error: string): Promise<DeadLetterOutput> {
    const batch = this.o.outbox.queue.peek(max)
    if (batch.length === 0) return { moved: 0 }
    await this.o.dlq.append({ sink: STORE_SINK, events: batch, error, attempts: 1 })
    this.o.outbox.take(batch.length)
    this.o.metrics.eventsDeadLettered.labels(STORE_SINK).inc(batch.length)
    this.o.logger.warn({ sink: STORE_SINK, events: batch.length, firstSeq: batch[0]!.seq, error }, 'batch moved to the dead-letter queue')
    this.o.release.released(batch[batch.length - 1]!.seq)
    return { moved: batch.length }
  }

  /** Moves everything still queued to the DLQ (shutdown, when the flushers could not drain). */
  async deadLetterAll(error: string): Promise<number> {
    let moved = 0
    while (this.o.outbox.size > 0) moved += (await this.deadLetter(1000, error)).moved
    return moved
  }

  /**
   * The dlqReplayer's replayBatch: replays the oldest entry. A refused entry is split so that only
   * the rows the store refuses are parked (each with its reason) and the rest is stored.
   */
  async replayOldest(): Promise<{ replayed: number; parked: number; remaining: number }> {
    const { dlq } = this.o
    const entry = dlq.peekOldest(STORE_SINK)
    if (!entry) return { replayed: 0, parked: 0, remaining: 0 }
    let parked = 0
    try {
      await this.call((store) => store.insertEvents(entry.events))
    } catch (err) {
      if (!isRejected(err)) {
        await dlq.markFailed(entry.id, messageOf(err))
        throw err
      }
      parked = await this.parkPoison(entry.events, err.message)
    }
    await dlq.markDone(entry.id)
    this.o.metrics.eventsReplayed.labels(STORE_SINK).inc(entry.events.length - parked)
    this.o.release.dlqChanged()
    return { replayed: 1, parked, remaining: dlq.liveDepth }
  }

  private async parkPoison(events: readonly StoredEvent[], batchError: string): Promise<number> {
    const { dlq } = this.o
    let parked = 0
    for (const event of events) {
      try {
        await this.call((store) => store.insertEvents([event]))
      } catch (err) {
        if (!isRejected(err)) throw err
        const entry = await dlq.append({ sink: STORE_SINK, events: [event], error: err.message || batchError, attempts: 1 })
        await dlq.park(entry.id, `rejected by the store: ${err.message}`)
        this.o.logger.error({ sink: STORE_SINK, id: event.id, seq: event.seq, reason: err.message }, 'poison event parked in the dead-letter queue')
        parked++
      }
    }
    return parked
  }

  /** Liveness ping for the store's connection machine. */
  ping(): Promise<void> {
    return withTimeout(this.o.store.ping(), this.o.callTimeoutMs, STORE_SINK)
  }
}

/**
 * The store's link: connected when a ping answers (after the migrations, if start-up could not run
 * them); the pool reconnects by itself, so nothing to close.
 */
export function storeLink(sink: StoreSink): Link {
  return {
    connect: async () => {
      await sink.migrateOnce()
      await sink.ping()
    },
    probe: (sendBack, intervalMs) => {
      let inFlight = false
      const timer = setInterval(() => {
        if (inFlight) return
        inFlight = true
        sink
          .ping()
          .catch((err: unknown) => sendBack({ type: 'connection.lost', code: codeOf(err), message: messageOf(err) }))
          .finally(() => (inFlight = false))
      }, intervalMs)
      return () => clearInterval(timer)
    },
    watch: () => () => {},
  }
}

const messageOf = (err: unknown): string => (err instanceof Error ? err.message : String(err))
const codeOf = (err: unknown): string => (err instanceof StoreError ? err.code : err instanceof CallTimeout ? 'timeout' : 'pingFailed')
