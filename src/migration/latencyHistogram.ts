/**
 * Latency kept in a fixed log-linear histogram: exact below 128 µs, ≤ 0.8 % error above.
 */

/** Sub-buckets per power of two; values below 2 × HALF µs are exact. */
const HALF = 64
const EXACT = 2 * HALF
/** Latencies are clamped to 2^36 µs (about 19 hours). */
const MAX_MICROS = 2 ** 36 - 1
const SLOTS = EXACT + (Math.log2(MAX_MICROS + 1) - Math.log2(EXACT)) * HALF

/**
 * A fixed log-linear histogram of milliseconds (HdrHistogram's layout with 64 sub-buckets per
 * power of two, in µs): memory fixed at 8 KiB once used, merging is adding arrays. Percentiles are
 * nearest-rank; a bucket reports its midpoint, clamped to the exact min and max seen.
 */
export class LatencyHistogram {
  count = 0
  private min = Infinity
  private max = -Infinity
  private counts: Uint32Array | null = null

  record(ms: number): void {
    const value = Math.max(0, ms)
    const counts = (this.counts ??= new Uint32Array(SLOTS))
    counts[slotOf(Math.min(MAX_MICROS, Math.round(value * 1000)))]!++
    this.count++
    if (value < this.min) this.min = value
    if (value > this.max) this.max = value
  }

  add(other: LatencyHistogram): void {
    if (!other.counts) return
    const counts = (this.counts ??= new Uint32Array(SLOTS))
    for (let i = 0; i < SLOTS; i++) counts[i]! += other.counts[i]!
    this.count += other.count
    this.min = Math.min(this.min, other.min)
    this.max = Math.max(this.max, other.max)
  }

  /** The q-quantile (0 < q ≤ 1) in ms, nearest rank; null when empty. */
  percentile(q: number): number | null {
    if (!this.counts || this.count === 0) return null
    const rank = Math.max(1, Math.ceil(q * this.count))
    if (rank >= this.count) return this.max
    let seen = 0
    for (let i = 0; i < SLOTS; i++) {
      seen += this.counts[i]!
      if (seen >= rank) return Math.min(this.max, Math.max(this.min, midpointOf(i) / 1000))
    }
    return this.max
  }
}

function slotOf(micros: number): number {
  if (micros < EXACT) return micros
  const shift = Math.floor(Math.log2(micros)) - Math.log2(HALF)
  return EXACT + (shift - 1) * HALF + (Math.floor(micros / 2 ** shift) - HALF)
}

function midpointOf(slot: number): number {
  if (slot < EXACT) return slot
  const shift = Math.floor((slot - EXACT) / HALF) + 1
  const sub = ((slot - EXACT) % HALF) + HALF
  return (sub + 0.5) * 2 ** shift
}
