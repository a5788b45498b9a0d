import { Data } from 'effect'
import type { Bus } from '../bus.js'
import type { Sequencer } from './sequencer.js'
import type { MonitoringEvent, StoredEvent } from '../types.js'

/** accept() after stop(): the relay is shutting down. */
export class IngestClosedError extends Data.TaggedError('IngestClosedError')<{ readonly message: string }> {
  static of(): IngestClosedError {
    return new IngestClosedError({ message: 'the relay is shutting down and accepts no new events' })
  }
}

/** A bounded queue cannot take the batch (back-pressure): answer 429 with Retry-After. */
export class OverloadedError extends Data.TaggedError('OverloadedError')<{ readonly message: string; readonly queue: string; readonly retryAfterSeconds: number }> {
  static of(queue: string, retryAfterSeconds: number): OverloadedError {
    return new OverloadedError({ queue, retryAfterSeconds, message: `the relay's ${queue} queue is full; retry later` })
  }
}

/** The write-ahead log could not take the batch, so it is not acknowledged. */
export class DurabilityError extends Data.TaggedError('DurabilityError')<{ readonly message: string; readonly cause: unknown }> {
  static of(cause: unknown): DurabilityError {
    return new DurabilityError({ cause, message: `could not make the events durable: ${cause instanceof Error ? cause.message : String(cause)}` })
  }
}

/** Where a batch becomes durable before it is acknowledged (the write-ahead log). */
export interface DurableLog {
  append(batch: readonly StoredEvent[]): Promise<void>
}

/** Back-pressure: the name of the bounded queue that cannot take `incoming` more events, if any. */
export interface Admission {
  overloaded(incoming: number): string | undefined
}

export interface IngestDeps {
  log: DurableLog
  sequencer: Sequencer
  /** Gets each durable batch, strictly in seq order. */
  bus: Bus
  admission: Admission
}

interface InOrder {
  batch: StoredEvent[]
  state: 'pending' | 'durable' | 'failed'
}

/**
 * Accepts validated events: assigns seqs, makes them durable, then hands them on in seq order.
 * A batch is acknowledged (the promise resolves) only once it is durable.
 */
export class Ingest {
  private accepting = true
  private inFlight = 0
  private readonly order: InOrder[] = []
  private idle: Array<() => void> = []

  constructor(private readonly deps: IngestDeps) {}

  get isAccepting(): boolean {
    return this.accepting
  }

  get pendingRequests(): number {
    return this.inFlight
  }

  async accept(events: readonly MonitoringEvent[]): Promise<StoredEvent[]> {
    if (!this.accepting) throw IngestClosedError.of()
    const full = this.deps.admission.overloaded(events.length)
    if (full) throw OverloadedError.of(full, 1)
    const first = this.deps.sequencer.next(events.length)
    // Key order is the wire order dashboards see: id, seq, then the rest.
    const batch: StoredEvent[] = events.map((e, i) => ({
      id: e.id,
      seq: first + i,
      event_type: e.event_type,
      timestamp: e.timestamp,
      source: e.source,
      data: e.data,
      metadata: e.metadata,
    }))
    const entry: InOrder = { batch, state: 'pending' }
    this.order.push(entry)
    this.inFlight++
    try {
      await this.deps.log.append(batch)
      entry.state = 'durable'
      return batch
    } catch (err) {
      entry.state = 'failed'
      throw DurabilityError.of(err)
    } finally {
      this.inFlight--
      this.release()
    }
  }

  /** Stops accepting and waits until every request already in flight is durable or failed. */
  async stop(): Promise<void> {
    this.accepting = false
    if (this.inFlight === 0) return
    await new Promise<void>((resolve) => this.idle.push(resolve))
  }

  private release(): void {
    while (this.order.length && this.order[0]!.state !== 'pending') {
      const head = this.order.shift()!
      if (head.state === 'durable') this.deps.bus.publish(head.batch)
    }
    if (this.inFlight === 0 && this.idle.length) {
      const waiters = this.idle
      this.idle = []
      for (const w of waiters) w()
    }
  }
}
