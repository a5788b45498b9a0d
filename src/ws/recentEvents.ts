import type { StoredEvent } from '../types.js'

/**
 * The newest accepted events, in seq order, for clients that resume with ?since=. It keeps at
 * least `minSize` events and never drops one the store has not committed yet, so
 * "store rows + this buffer" always covers everything accepted.
 */
export class RecentEvents {
  private items: StoredEvent[] = []
  private start = 0
  private committed = 0

  /** `hardMax` bounds memory even while the store is down (events then live in the DLQ too). */
  constructor(private readonly minSize: number, private readonly hardMax = Number.POSITIVE_INFINITY) {}

  get size(): number {
    return this.items.length - this.start
  }

  get oldestSeq(): number | undefined {
    return this.items[this.start]?.seq
  }

  get newestSeq(): number | undefined {
    return this.size ? this.items[this.items.length - 1]!.seq : undefined
  }

  append(batch: readonly StoredEvent[]): void {
    for (const e of batch) this.items.push(e)
    this.evict()
  }

  /** The store has committed every event up to seq. */
  markCommitted(seq: number): void {
    if (seq > this.committed) this.committed = seq
    this.evict()
  }

  /** Events with seq > afterSeq, ascending. */
  since(afterSeq: number): StoredEvent[] {
    let lo = this.start
    let hi = this.items.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (this.items[mid]!.seq <= afterSeq) lo = mid + 1
      else hi = mid
    }
    return this.items.slice(lo)
  }

  private evict(): void {
    while (this.size > this.minSize && (this.items[this.start]!.seq <= this.committed || this.size > this.hardMax)) this.start++
    // Compact lazily so eviction stays O(1) amortised.
    if (this.start > 4096 && this.start * 2 > this.items.length) {
      this.items = this.items.slice(this.start)
      this.start = 0
    }
  }
}
