import type { AppendRecord, EntryFields, LogRecord } from './dlqRecords.js'
import type { Segment } from './segmentLog.js'

/** Per segment: records in it that belong to entries not yet done; while > 0 it cannot go. */
export interface SegmentPins {
  pins: number
}
export type DlqSegment = Segment<SegmentPins>

/** What is kept in memory of an entry that is not done: everything but its events. */
export interface Entry extends EntryFields {
  parked: { reason: string; at: string } | undefined
  eventCount: number
  /** Where its append record (and so its events) is. */
  segment: DlqSegment
  offset: number
  length: number
  /** The segment of each of its records (append, failed, park, requeue). */
  pinned: DlqSegment[]
}

/**
 * The dead-letter queue's state, rebuilt from its records: the entries not done (in id order,
 * which is insertion order), the live ones by sink, counts by reason, and the next id.
 */
export class DlqIndex {
  /** Entries not done, in id order (insertion order: ids are assigned ascending). */
  readonly entries = new Map<number, Entry>()
  private readonly liveBySink = new Map<string, SortedIds>()
  private readonly reasonCounts = new Map<string, number>()
  private counts = { depth: 0, liveEvents: 0, parked: 0, keptBytes: 0 }
  private next = 1

  /** Live entries: neither parked nor done. */
  get depth(): number {
    return this.counts.depth
  }

  get liveEvents(): number {
    return this.counts.liveEvents
  }

  get parked(): number {
    return this.counts.parked
  }

  /** Bytes of the append records of entries not done: about what a compaction would keep. */
  get keptBytes(): number {
    return this.counts.keptBytes
  }

  get nextId(): number {
    return this.next
  }

  /** The oldest live entry of a sink. */
  oldestLive(sink: string): Entry | undefined {
    const id = this.liveBySink.get(sink)?.first()
    return id === undefined ? undefined : this.entries.get(id)
  }

  /** firstFailedAt of the oldest (lowest id) live entry. */
  oldestAt(): string | undefined {
    let oldest: number | undefined
    for (const ids of this.liveBySink.values()) {
      const first = ids.first()
      if (first !== undefined && (oldest === undefined || first < oldest)) oldest = first
    }
    return oldest === undefined ? undefined : this.entries.get(oldest)!.firstFailedAt
  }

  /** Parked reasons and live errors, counted; the `most` most frequent. */
  topReasons(most: number): Record<string, number> {
    return Object.fromEntries([...this.reasonCounts].sort((a, b) => b[1] - a[1]).slice(0, most))
  }

  /** Updates the index with a durable record; the same code replays the log at open(). */
  apply(record: LogRecord, segment: DlqSegment, offset: number, length: number): 'supersedes' | void {
    if (record.t === 'segment') {
      this.next = Math.max(this.next, record.nextId)
      if (!record.snapshot) return
      this.forgetAll()
      return 'supersedes'
    }
    const existing = this.entries.get(record.id)
    if (record.t === 'append') {
      if (existing) this.forget(existing)
      const { id, sink, error, attempts, firstFailedAt, lastFailedAt, parked, n } = record
      const entry: Entry = { id, sink, error, attempts, firstFailedAt, lastFailedAt, parked, eventCount: n, segment, offset, length, pinned: [segment] }
      segment.meta.pins++
      this.entries.set(id, entry)
      this.counts.keptBytes += length
      this.attach(entry)
      this.next = Math.max(this.next, id + 1)
      return
    }
    // A state change of an entry already done (or never seen: its segment went first) changes nothing.
    if (!existing) return
    if (record.t === 'done') {
      this.forget(existing)
      return
    }
    this.detach(existing)
    if (record.t === 'failed') {
      existing.attempts++
      existing.error = record.error
      existing.lastFailedAt = record.at
    } else if (record.t === 'park') {
      existing.parked = { reason: record.reason, at: record.at }
    } else {
      existing.parked = undefined
    }
    this.attach(existing)
    existing.pinned.push(segment)
    segment.meta.pins++
  }

  /** After a compaction: every entry is in `snapshot` now, at the place given. */
  moveAll(snapshot: DlqSegment, places: ReadonlyArray<{ entry: Entry; offset: number; length: number }>): void {
    for (const { entry, offset, length } of places) {
      entry.segment = snapshot
      entry.offset = offset
      entry.length = length
      entry.pinned = [snapshot]
    }
    snapshot.meta.pins = places.length
    this.counts.keptBytes = places.reduce((n, m) => n + m.length, 0)
  }

  private forget(entry: Entry): void {
    this.detach(entry)
    for (const s of entry.pinned) s.meta.pins--
    this.entries.delete(entry.id)
    this.counts.keptBytes -= entry.length
  }

  private forgetAll(): void {
    this.entries.clear()
    this.liveBySink.clear()
    this.reasonCounts.clear()
    this.counts = { depth: 0, liveEvents: 0, parked: 0, keptBytes: 0 }
  }

  /** Counts an entry in by its state (live or parked). */
  private attach(entry: Entry): void {
    if (entry.parked) {
      this.counts.parked++
    } else {
      let ids = this.liveBySink.get(entry.sink)
      if (!ids) this.liveBySink.set(entry.sink, (ids = new SortedIds()))
      ids.insert(entry.id)
      this.counts.depth++
      this.counts.liveEvents += entry.eventCount
    }
    const reason = entry.parked ? entry.parked.reason : entry.error
    this.reasonCounts.set(reason, (this.reasonCounts.get(reason) ?? 0) + 1)
  }

  private detach(entry: Entry): void {
    if (entry.parked) {
      this.counts.parked--
    } else {
      this.liveBySink.get(entry.sink)!.remove(entry.id)
      this.counts.depth--
      this.counts.liveEvents -= entry.eventCount
    }
    const reason = entry.parked ? entry.parked.reason : entry.error
    const count = this.reasonCounts.get(reason)! - 1
    if (count === 0) this.reasonCounts.delete(reason)
    else this.reasonCounts.set(reason, count)
  }
}

export function appendRecordOf(e: Entry): AppendRecord {
  const { id, sink, error, attempts, firstFailedAt, lastFailedAt, parked } = e
  return { t: 'append', id, sink, error, attempts, firstFailedAt, lastFailedAt, ...(parked ? { parked } : {}), n: e.eventCount }
}

/** Ids in ascending order, cheap to take from the front (the replayer's pattern). */
class SortedIds {
  private ids: number[] = []
  private head = 0

  first(): number | undefined {
    return this.ids[this.head]
  }

  insert(id: number): void {
    if (this.head === this.ids.length || id > this.ids[this.ids.length - 1]!) {
      this.ids.push(id)
      return
    }
    const at = this.lowerBound(id)
    if (this.ids[at] !== id) this.ids.splice(at, 0, id)
  }

  remove(id: number): void {
    if (this.ids[this.head] === id) {
      this.head++
      if (this.head === this.ids.length) {
        this.ids = []
        this.head = 0
      } else if (this.head >= 1024 && this.head * 2 >= this.ids.length) {
        this.ids = this.ids.slice(this.head)
        this.head = 0
      }
      return
    }
    const at = this.lowerBound(id)
    if (this.ids[at] === id) this.ids.splice(at, 1)
  }

  private lowerBound(id: number): number {
    let lo = this.head
    let hi = this.ids.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (this.ids[mid]! < id) lo = mid + 1
      else hi = mid
    }
    return lo
  }
}
