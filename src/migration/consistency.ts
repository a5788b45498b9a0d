import type { StoredEvent } from '../types.js'
import { canonicalJson, diffJson, fingerprint, type DiffEntry } from './canonicalJson.js'
import { WindowedCounts, type PathStats } from './pathCounts.js'

/**
 * The consistency validator's comparison core: pure (the clock is injected, no I/O, no timers).
 *
 * The relay calls sent() with every accepted batch, in seq order, when it publishes it; shadow
 * subscribers call arrived() with what reached them on a path. Per path and per event id:
 *
 * - sent: events handed to sent() (each counts once on every path).
 * - first arrival: the first arrived() of an id on a path. It falls in exactly one class, checked
 *   in this order:
 *     late        arrived more than deadlineMs after it was sent (the event also counts as missing);
 *     mismatched  its canonical JSON (sorted keys) differs from the sent event's (a sample with the
 *                 field-level diff is kept);
 *     reordered   its seq is lower than the highest seq that already arrived first on the path;
 *     matched     otherwise.
 * - missing: no arrival within deadlineMs (arrived − sent > deadlineMs, or still absent when the
 *   deadline passes at a tick); counted once per event and path, whether it arrives later or not.
 * - duplicated: every arrival of an id after its first on that path.
 * - unexpected: arrivals of ids the validator does not know (never sent, or forgotten after
 *   2 × deadlineMs); they count nowhere else.
 * - latency: arrival − sent of every first arrival (late ones included), in ms.
 *
 * So, per path: matched + mismatched + reordered + missing = events decided ≤ sent, late ≤ missing,
 * and matched + mismatched + reordered + late = first arrivals of known ids.
 *
 * consistencyPct = 100 × matched / (matched + missing + reordered + mismatched + duplicated), null
 * while that is 0. Events still within their deadline are not counted yet; a clean run reads
 * exactly 100 and every fault lowers it (each duplicate arrival is one unit of inconsistency).
 *
 * Sliding window: counters live in time buckets of bucketMs (default windowMs / 30); the window
 * is the last ceil(windowMs / bucketMs) buckets, the current one included. Everything about an
 * event (its outcome, duplicates, latency) is counted in the bucket of its sent time, so within
 * a window matched ≤ sent; an outcome whose bucket has already left the window only counts since
 * start. Unexpected arrivals count in the bucket of their arrival.
 *
 * Memory is bounded: an event is tracked for 2 × deadlineMs after it was sent, and at most
 * maxTracked events (default 200,000) are tracked: past it the oldest is forgotten, and if it was
 * still within its deadline it counts as missing on the paths it had not arrived on (`evicted`).
 * The sent event itself (for the canonical comparison and diffs) and a fingerprint of it are held
 * only until the deadline.
 * Latency is kept in fixed log-linear histograms (latencyHistogram.ts); counters per path and
 * bucket in pathCounts.ts, payload comparison in canonicalJson.ts.
 * Samples: the latest sampleLimit mismatches.
 *
 * Times are clamped to never go backwards (a wall clock stepped back by NTP); pass Date.now as
 * `now`, and the same clock to the shadows, so `at` in reports is a wall-clock time.
 */

export type PathName = 'realtime' | 'websocket'
export const PATH_NAMES: readonly PathName[] = ['realtime', 'websocket']

export interface ValidatorOptions {
  /** VALIDATOR_DEADLINE_MS, 5000 */
  deadlineMs: number
  /** Sliding window, default 300,000 ms. */
  windowMs?: number
  /** Width of the window's time buckets; default windowMs / 30 (10 s for 5 min). */
  bucketMs?: number
  /** Bounded mismatch samples, default 20. */
  sampleLimit?: number
  /** Most events tracked at once, default 200,000. */
  maxTracked?: number
  now: () => number
}

export const DEFAULT_WINDOW_MS = 300_000
export const DEFAULT_SAMPLE_LIMIT = 20
export const DEFAULT_MAX_TRACKED = 200_000
const BUCKETS_PER_WINDOW = 30
const MAX_BUCKETS = 1_000

export interface MismatchSample {
  /** When it arrived (validator clock). */
  at: number
  id: string
  seq: number
  path: PathName
  expected: StoredEvent
  actual: unknown
  diff: DiffEntry[]
}

export interface ConsistencyReport {
  at: number
  deadlineMs: number
  windowMs: number
  paths: PathName[]
  /** Only the paths the validator was built with have an entry. */
  sinceStart: Partial<Record<PathName, PathStats>>
  window: Partial<Record<PathName, PathStats>>
  /** Oldest first, at most sampleLimit. */
  samples: MismatchSample[]
  /** 100 − the websocket calibration path's window consistency; null when not calibrating or no data. */
  noiseFloorPct: number | null
  memory: { tracked: number; pending: number; maxTracked: number; evicted: number }
}

interface Tracked {
  id: string
  seq: number
  sentAt: number
  bucket: number
  /** Some path has neither arrived nor been counted missing yet. */
  pending: boolean
  /** Held while the event is pending: sha1 of its JSON as sent, and the event for the canonical check and diffs. */
  fingerprint: string | null
  event: StoredEvent | null
  /** Bit per path: first arrival seen. */
  arrived: number
  /** Bit per path: counted missing. */
  missed: number
}

/** Compares what arrived on each path with what was sent, by event id (definitions above). */
export class ConsistencyValidator {
  readonly deadlineMs: number
  readonly windowMs: number
  readonly bucketMs: number
  private readonly sampleLimit: number
  private readonly maxTracked: number
  private readonly now: () => number
  private readonly paths: PathName[]
  private readonly allBits: number
  /** Every remembered event by id. */
  private readonly tracked = new Map<string, Tracked>()
  /**
   * The remembered events in sent order: queue[head] is the oldest remembered one, and none before
   * queue[pendingHead] is pending. (Iterating a Map after deleting at its front would walk the holes.)
   */
  private queue: Tracked[] = []
  private head = 0
  private pendingHead = 0
  private pendingCount = 0
  private readonly counts: WindowedCounts
  private readonly maxSeq: number[]
  private readonly samples: MismatchSample[] = []
  private evicted = 0
  private last = -Infinity

  constructor(opts: ValidatorOptions, paths: PathName[]) {
    const windowMs = opts.windowMs ?? DEFAULT_WINDOW_MS
    const bucketMs = opts.bucketMs ?? windowMs / BUCKETS_PER_WINDOW
    positive('deadlineMs', opts.deadlineMs)
    positive('windowMs', windowMs)
    positive('bucketMs', bucketMs)
    if (windowMs / bucketMs > MAX_BUCKETS) throw new RangeError(`windowMs / bucketMs must be at most ${MAX_BUCKETS}, got ${windowMs / bucketMs}`)
    const unique = [...new Set(paths)]
    if (unique.length === 0 || unique.some((p) => !PATH_NAMES.includes(p))) throw new RangeError(`paths must be some of ${PATH_NAMES.join(', ')}, got ${JSON.stringify(paths)}`)
    this.deadlineMs = opts.deadlineMs
    this.windowMs = windowMs
    this.bucketMs = bucketMs
    this.sampleLimit = Math.max(0, Math.floor(opts.sampleLimit ?? DEFAULT_SAMPLE_LIMIT))
    this.maxTracked = Math.max(1, Math.floor(opts.maxTracked ?? DEFAULT_MAX_TRACKED))
    this.now = opts.now
    this.paths = unique
    this.allBits = (1 << unique.length) - 1
    this.counts = new WindowedCounts(unique.length, windowMs, bucketMs, () => this.last)
    this.maxSeq = unique.map(() => -Infinity)
  }

  /** The reference: events the relay accepted and published, in seq order, at publish time. */
  sent(events: readonly StoredEvent[], at?: number): void {
    const t = this.time(at)
    this.expire(t)
    const bucket = Math.floor(t / this.bucketMs)
    for (const event of events) {
      if (this.tracked.has(event.id)) continue // sent twice: the first send is the reference
      const entry: Tracked = { id: event.id, seq: event.seq, sentAt: t, bucket, pending: true, fingerprint: fingerprint(event), event, arrived: 0, missed: 0 }
      this.tracked.set(event.id, entry)
      this.queue.push(entry)
      this.pendingCount++
      for (let p = 0; p < this.paths.length; p++) this.counts.count(p, bucket, 'sent')
    }
    while (this.tracked.size > this.maxTracked) this.evictOldest()
    this.compact()
  }

  /** What a shadow subscriber received on a path. */
  arrived(path: PathName, events: readonly StoredEvent[], at?: number): void {
    const p = this.paths.indexOf(path)
    if (p < 0) throw new RangeError(`path ${path} is not validated (paths: ${this.paths.join(', ')})`)
    const t = this.time(at)
    this.expire(t)
    const bit = 1 << p
    for (const event of events) {
      const id = (event as { id?: unknown } | null)?.id
      const entry = typeof id === 'string' ? this.tracked.get(id) : undefined
      if (!entry) {
        this.counts.count(p, Math.floor(t / this.bucketMs), 'unexpected')
        continue
      }
      if (entry.arrived & bit) {
        this.counts.count(p, entry.bucket, 'duplicated')
        continue
      }
      entry.arrived |= bit
      const latency = t - entry.sentAt
      this.counts.recordLatency(p, entry.bucket, latency)
      if (latency > this.deadlineMs || entry.missed & bit) {
        this.markMissing(entry, p)
        this.counts.count(p, entry.bucket, 'late')
      } else if (entry.event && !sameJson(entry, event)) {
        this.counts.count(p, entry.bucket, 'mismatched')
        this.sample(t, path, entry.event, event)
      } else if (entry.seq < this.maxSeq[p]!) {
        this.counts.count(p, entry.bucket, 'reordered')
      } else {
        this.counts.count(p, entry.bucket, 'matched')
      }
      if (entry.seq > this.maxSeq[p]!) this.maxSeq[p] = entry.seq
      if (((entry.arrived | entry.missed) & this.allBits) === this.allBits) this.settle(entry)
    }
  }

  /** Expires deadlines: events not arrived within deadlineMs on a path count as missing (once). */
  tick(at?: number): void {
    this.expire(this.time(at))
  }

  snapshot(): ConsistencyReport {
    const at = this.time()
    this.expire(at)
    const sinceStart: Partial<Record<PathName, PathStats>> = {}
    const window: Partial<Record<PathName, PathStats>> = {}
    this.paths.forEach((path, p) => {
      sinceStart[path] = this.counts.sinceStartStats(p)
      window[path] = this.counts.windowStats(p)
    })
    const calibration = window.websocket?.consistencyPct
    return {
      at,
      deadlineMs: this.deadlineMs,
      windowMs: this.windowMs,
      paths: [...this.paths],
      sinceStart,
      window,
      samples: [...this.samples],
      noiseFloorPct: calibration === undefined || calibration === null ? null : 100 - calibration,
      memory: { tracked: this.tracked.size, pending: this.pendingCount, maxTracked: this.maxTracked, evicted: this.evicted },
    }
  }

  private time(at?: number): number {
    const t = at ?? this.now()
    if (t > this.last) this.last = t
    return this.last
  }

  private expire(now: number): void {
    const { queue } = this
    while (this.pendingHead < queue.length) {
      const entry = queue[this.pendingHead]!
      if (now - entry.sentAt <= this.deadlineMs) break
      this.missAll(entry)
      this.pendingHead++
    }
    while (this.head < this.pendingHead) {
      const entry = queue[this.head]!
      if (now - entry.sentAt <= 2 * this.deadlineMs) break
      this.tracked.delete(entry.id)
      this.head++
    }
    this.compact()
  }

  private evictOldest(): void {
    const oldest = this.queue[this.head]!
    this.missAll(oldest)
    this.tracked.delete(oldest.id)
    this.head++
    if (this.pendingHead < this.head) this.pendingHead = this.head
    this.evicted++
  }

  /** Counts a pending event missing on every path it has not arrived on, and settles it. */
  private missAll(entry: Tracked): void {
    if (!entry.pending) return
    for (let p = 0; p < this.paths.length; p++) if (!(entry.arrived & (1 << p))) this.markMissing(entry, p)
    this.settle(entry)
  }

  private compact(): void {
    if (this.head < 4096 || this.head * 2 < this.queue.length) return
    this.queue = this.queue.slice(this.head)
    this.pendingHead -= this.head
    this.head = 0
  }

  private markMissing(entry: Tracked, p: number): void {
    const bit = 1 << p
    if (entry.missed & bit) return
    entry.missed |= bit
    this.counts.count(p, entry.bucket, 'missing')
  }

  private settle(entry: Tracked): void {
    if (!entry.pending) return
    entry.pending = false
    this.pendingCount--
    entry.fingerprint = null
    entry.event = null
  }

  private sample(at: number, path: PathName, expected: StoredEvent, actual: unknown): void {
    if (this.sampleLimit === 0) return
    this.samples.push({ at, id: expected.id, seq: expected.seq, path, expected, actual, diff: diffJson(expected, actual) })
    if (this.samples.length > this.sampleLimit) this.samples.shift()
  }
}

function positive(name: string, value: number): void {
  if (!(value > 0) || !Number.isFinite(value)) throw new RangeError(`${name} must be a positive number, got ${value}`)
}

/**
 * Payload equality is canonical-JSON equality. Both wires hand back JSON.parse(JSON.stringify(e)),
 * key order kept, so comparing plain JSON fingerprints first settles nearly every arrival at a
 * third of the cost; only a differing fingerprint pays for the canonical comparison.
 */
function sameJson(entry: Tracked, actual: unknown): boolean {
  if (entry.fingerprint !== null && entry.fingerprint === fingerprint(actual)) return true
  return canonicalJson(entry.event) === canonicalJson(actual)
}
