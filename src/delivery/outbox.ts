import type { Metrics } from '../observability/metrics.js'
import type { StoredEvent } from '../types.js'
import { StoreQueue } from './queue.js'
import { tell, type MachineSystem } from './sink.js'

export interface OutboxOptions {
  /** The sink this outbox feeds, e.g. 'store' (metrics label). */
  sink: string
  /** systemId of the batch flusher that drains it. */
  flusherId: string
  system: MachineSystem
  metrics: Metrics
  /** Past this many events the oldest are dropped and counted; unbounded when absent (ingest applies back-pressure instead). */
  bound?: number
}

/**
 * The accepted events waiting for one sink, in seq order, and the one place that tells its flusher
 * how many there are: every push is `events.added`, every overflow drop `events.discarded`, so the
 * flusher's count and this queue never disagree.
 */
export class Outbox {
  readonly queue = new StoreQueue()

  constructor(private readonly o: OutboxOptions) {}

  get size(): number {
    return this.queue.size
  }

  /** A durable batch from the bus. */
  consume(batch: readonly StoredEvent[]): void {
    this.queue.push(batch)
    tell(this.o.system, this.o.flusherId, { type: 'events.added', count: batch.length })
    const over = this.o.bound === undefined ? 0 : this.queue.size - this.o.bound
    if (over > 0) {
      this.discard(over, 'overflow')
      tell(this.o.system, this.o.flusherId, { type: 'events.discarded', count: over })
    }
    this.o.metrics.queueDepth.labels(this.o.sink).set(this.queue.size)
  }

  /** Tells the flusher about events queued before it existed (start-up found them in the WAL). */
  announceBacklog(): void {
    if (this.queue.size) tell(this.o.system, this.o.flusherId, { type: 'events.added', count: this.queue.size })
  }

  /** The flusher's batch left (written, or moved to the DLQ): its output tells the flusher. */
  take(count: number): void {
    this.queue.drop(count)
    this.o.metrics.queueDepth.labels(this.o.sink).set(this.queue.size)
  }

  /** Drops the oldest `count` events undelivered, counted under `reason`. */
  discard(count: number, reason: string): number {
    const n = Math.min(count, this.queue.size)
    if (n === 0) return 0
    this.take(n)
    this.o.metrics.eventsDropped.labels(this.o.sink, reason).inc(n)
    return n
  }
}
