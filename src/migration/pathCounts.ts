import { LatencyHistogram } from './latencyHistogram.js'

/**
 * The consistency validator's counters per path: since start, and in a sliding window of time
 * buckets. The window is the last ceil(windowMs / bucketMs) buckets, the current one included,
 * kept in a ring whose slots are recycled as time moves on.
 */

export interface LatencyStats {
  p50: number | null
  p95: number | null
  p99: number | null
  /** First arrivals measured. */
  samples: number
}

export interface PathStats {
  sent: number
  matched: number
  missing: number
  duplicated: number
  reordered: number
  mismatched: number
  late: number
  unexpected: number
  consistencyPct: number | null
  latencyMs: LatencyStats
}

export type Counter = 'sent' | 'matched' | 'missing' | 'duplicated' | 'reordered' | 'mismatched' | 'late' | 'unexpected'

class Counts {
  sent = 0
  matched = 0
  missing = 0
  duplicated = 0
  reordered = 0
  mismatched = 0
  late = 0
  unexpected = 0
  readonly latency = new LatencyHistogram()

  add(other: Counts): void {
    this.sent += other.sent
    this.matched += other.matched
    this.missing += other.missing
    this.duplicated += other.duplicated
    this.reordered += other.reordered
    this.mismatched += other.mismatched
    this.late += other.late
    this.unexpected += other.unexpected
    this.latency.add(other.latency)
  }

  stats(): PathStats {
    const decided = this.matched + this.missing + this.reordered + this.mismatched + this.duplicated
    return {
      sent: this.sent,
      matched: this.matched,
      missing: this.missing,
      duplicated: this.duplicated,
      reordered: this.reordered,
      mismatched: this.mismatched,
      late: this.late,
      unexpected: this.unexpected,
      consistencyPct: decided === 0 ? null : (this.matched * 100) / decided,
      latencyMs: {
        p50: this.latency.percentile(0.5),
        p95: this.latency.percentile(0.95),
        p99: this.latency.percentile(0.99),
        samples: this.latency.count,
      },
    }
  }
}

interface Bucket {
  index: number
  perPath: Counts[]
}


/** Counters for each of `paths` paths since start and per time bucket of the sliding window. */
export class WindowedCounts {
  private readonly sinceStart: Counts[]
  private readonly ring: Bucket[]

  constructor(
    private readonly paths: number,
    windowMs: number,
    private readonly bucketMs: number,
    /** The latest time seen (never goes backwards). */
    private readonly latest: () => number,
  ) {
    this.sinceStart = Array.from({ length: paths }, () => new Counts())
    this.ring = Array.from({ length: Math.ceil(windowMs / bucketMs) }, () => ({ index: -Infinity, perPath: [] }))
  }

  count(p: number, bucket: number, counter: Counter): void {
    this.sinceStart[p]![counter]++
    const b = this.bucketFor(bucket)
    if (b) b.perPath[p]![counter]++
  }

  recordLatency(p: number, bucket: number, ms: number): void {
    this.sinceStart[p]!.latency.record(ms)
    this.bucketFor(bucket)?.perPath[p]!.latency.record(ms)
  }

  sinceStartStats(p: number): PathStats {
    return this.sinceStart[p]!.stats()
  }

  /** Path p's counters summed over the window ending at the latest time's bucket. */
  windowStats(p: number): PathStats {
    const current = Math.floor(this.latest() / this.bucketMs)
    const sum = new Counts()
    for (const b of this.ring) if (b.index > current - this.ring.length && b.index <= current && b.perPath[p]) sum.add(b.perPath[p]!)
    return sum.stats()
  }

  /** The ring slot of a bucket, recycled when the bucket is newer; undefined when it has left the ring. */
  private bucketFor(index: number): Bucket | undefined {
    const n = this.ring.length
    const slot = this.ring[((index % n) + n) % n]!
    if (slot.index === index) return slot
    if (slot.index > index || index <= Math.floor(this.latest() / this.bucketMs) - n) return undefined
    slot.index = index
    slot.perPath = Array.from({ length: this.paths }, () => new Counts())
    return slot
  }
}
