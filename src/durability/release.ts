import type { Logger } from '../observability/logger.js'
import { tell, type MachineSystem } from '../delivery/sink.js'
import type { Hub } from '../ws/hub.js'
import type { DeadLetterQueue } from './dlq.js'
import type { Wal } from './wal.js'

/** How often, at most, fully committed WAL segments are released. */
const WAL_RELEASE_INTERVAL_MS = 1000

export interface ReleaseOptions {
  wal: Wal
  dlq: DeadLetterQueue
  hub: Hub
  system: MachineSystem
  /** systemId of the store's DLQ replayer, told when the DLQ's depth changes. */
  replayerId: string
  logger: Logger
  /** Every event up to this seq was stored when the relay started. */
  releasedSeq: number
}

/**
 * What the store has taken: every event up to `releasedSeq` has left the store outbox (stored, or
 * durable in the DLQ). From that follow the WAL segments that may go, the seq below which
 * resuming dashboards may read the store, and the DLQ depth the replayer hears of.
 */
export class Release {
  releasedSeq: number
  private lastWalRelease = 0
  /** The DLQ depth the replayer last heard of (-1: not yet told). */
  private reportedDepth = -1

  constructor(private readonly o: ReleaseOptions) {
    this.releasedSeq = o.releasedSeq
  }

  /** The store outbox moved past `seq`. Runs after every flush and dead-lettering: keep it cheap. */
  released(seq: number): void {
    this.releasedSeq = seq
    const now = Date.now()
    if (now - this.lastWalRelease >= WAL_RELEASE_INTERVAL_MS) {
      this.lastWalRelease = now
      this.o.wal.release(seq).catch((err: Error) => this.o.logger.error({ err: err.message }, 'write-ahead log release failed'))
    }
    this.dlqChanged()
  }

  /** The DLQ may have changed (a dead-lettering, a replay, a requeue). */
  dlqChanged(): void {
    const depth = this.o.dlq.liveDepth
    // Resuming clients read the store: only events known to be there may leave the recent buffer.
    if (depth === 0) this.o.hub.markCommitted(this.releasedSeq)
    if (depth === this.reportedDepth) return
    this.reportedDepth = depth
    tell(this.o.system, this.o.replayerId, { type: 'dlq.changed', depth })
  }

  /** At shutdown: with nothing left unstored, the whole WAL may go. */
  async releaseAll(unstored: number): Promise<void> {
    if (unstored === 0) await this.o.wal.release(this.releasedSeq)
  }
}
