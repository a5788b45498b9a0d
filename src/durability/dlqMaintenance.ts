import { appendRecordOf, type DlqIndex, type Entry, type SegmentPins } from './dlqIndex.js'
import { encodeLogRecord, eventsJsonOf } from './dlqRecords.js'
import { messageOf } from './records.js'
import type { SegmentLog } from './segmentLog.js'

const COMPACT_RETRY_MS = 10_000

export interface DlqLimits {
  segmentBytes: number
  maxBytes: number
}

/**
 * Keeps the dead-letter queue's files bounded. A segment at the front whose records all belong
 * to done entries is deleted (only the front, because a `done` record must outlive the append it
 * cancels). When at least half of the bytes are dead (and there is more than a segment of them),
 * or when the files are nearly full (or an append would not fit) and compaction would free a
 * tenth of maxBytes, the entries not done are rewritten into a snapshot segment whose first
 * record says "snapshot": open() forgets every record before it, so deleting the old segments
 * afterwards may be interrupted at any point. The rewrite needs room for a copy of the entries
 * kept while it runs. Never fails a caller: the last failure is kept in `error`.
 */
export class DlqMaintenance {
  /** Why the last disk reclamation (segment deletion, compaction) failed; cleared when one succeeds. */
  error: string | undefined
  /** After a failed compaction, none is tried before this (Date.now()). */
  private compactRetryAt = 0

  constructor(
    private readonly log: SegmentLog<SegmentPins>,
    private readonly index: DlqIndex,
    private readonly limits: DlqLimits,
  ) {}

  /** The files hold at least 90 % of maxBytes. */
  get nearlyFull(): boolean {
    return this.log.bytes >= this.limits.maxBytes * 0.9
  }

  /** Before a group: compacts when `needed` more bytes would not fit but compaction would free a tenth of maxBytes. */
  async makeRoom(needed: number): Promise<void> {
    const bytes = this.log.bytes
    if (needed === 0 || bytes + needed <= this.limits.maxBytes) return
    const reclaimable = bytes - this.index.keptBytes
    if (reclaimable < Math.max(needed, this.limits.maxBytes * 0.1) || Date.now() < this.compactRetryAt) return
    await this.tryCompact()
  }

  /** After open and every group: deletes dead front segments; compacts when enough bytes are dead. */
  async run(): Promise<void> {
    if (this.log.broken) return
    const segments = this.log.segments
    let dead = 0
    while (dead < segments.length - 1 && segments[dead]!.meta.pins === 0) dead++
    try {
      await this.log.dropFront(dead)
    } catch (err) {
      this.error = `segment deletion failed: ${messageOf(err)}`
      return
    }
    const bytes = this.log.bytes
    const deadBytes = bytes - this.index.keptBytes
    this.error = undefined
    const halfDead = bytes > this.limits.segmentBytes && deadBytes * 2 >= bytes
    // Near the bound dead bytes would turn producers away (nearlyFull): reclaim them sooner.
    const deadWhileNearlyFull = this.nearlyFull && deadBytes >= this.limits.maxBytes * 0.1
    if ((halfDead || deadWhileNearlyFull) && Date.now() >= this.compactRetryAt) await this.tryCompact()
  }

  private async tryCompact(): Promise<void> {
    try {
      await this.compact()
      this.error = undefined
    } catch (err) {
      this.error = `compaction failed: ${messageOf(err)}`
      this.compactRetryAt = Date.now() + COMPACT_RETRY_MS
    }
  }

  /** Rewrites every entry not done, with its current state, into a snapshot segment that replaces all others. */
  private async compact(): Promise<void> {
    const places: Array<{ entry: Entry; offset: number; length: number }> = []
    const readers = new Map<Entry['segment'], (offset: number, length: number) => Promise<Buffer>>()
    const header = encodeLogRecord({ t: 'segment', nextId: this.index.nextId, snapshot: true })
    const fill = async (put: (frame: Buffer) => Promise<number>) => {
      for (const entry of this.index.entries.values()) {
        let read = readers.get(entry.segment)
        if (!read) readers.set(entry.segment, (read = this.log.frameReader(entry.segment)))
        const frame = encodeLogRecord(appendRecordOf(entry), eventsJsonOf(await read(entry.offset, entry.length)))
        places.push({ entry, offset: await put(frame), length: frame.length })
      }
    }
    await this.log.rewrite(this.log.lastNumber + 1, header, fill, (snapshot) => this.index.moveAll(snapshot, places))
  }
}
