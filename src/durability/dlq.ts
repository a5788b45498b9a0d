import { Data } from 'effect'
import type { StoredEvent } from '../types.js'
import { appendRecordOf, DlqIndex, type Entry, type SegmentPins } from './dlqIndex.js'
import { DlqMaintenance, type DlqLimits } from './dlqMaintenance.js'
import { decodeLogRecord, encodeLogRecord, eventsOf, toDlqEntry, type AppendRecord, type DlqEntry, type LogRecord, type MutationRecord } from './dlqRecords.js'
import { GroupCommit, type CommitJob } from './groupCommit.js'
import { messageOf } from './records.js'
import { HEADER_BYTES, mapLogError, MAX_RECORD_BYTES, SegmentLog, type LogRecovery, type SegmentLogBroken } from './segmentLog.js'

/** Appending would take the queue past maxBytes; nothing of the append was written. Answer producers 429. */
export class DlqFullError extends Data.TaggedError('DlqFullError')<{ readonly message: string; readonly bytes: number; readonly maxBytes: number }> {
  readonly code = 'full' as const
}
/** markDone / markFailed / park of an id that is not in the queue (never was, or already done). */
export class DlqNotFoundError extends Data.TaggedError('DlqNotFoundError')<{ readonly message: string; readonly id: number }> {
  readonly code = 'notFound' as const
}
/** An append the queue cannot hold: no events, no sink, or events JSON cannot express. */
export class DlqInvalidError extends Data.TaggedError('DlqInvalidError')<{ readonly message: string; readonly cause?: unknown }> {
  readonly code = 'invalid' as const
}
/** A call after close(). */
export class DlqClosedError extends Data.TaggedError('DlqClosedError')<{ readonly message: string }> {
  readonly code = 'closed' as const
}
/** A write, fsync or read failed. A failed write was cut back off the file; the queue stays usable. */
export class DlqIoError extends Data.TaggedError('DlqIoError')<{ readonly message: string; readonly cause?: unknown }> {
  readonly code = 'io' as const
}
/** Cutting a failed write back failed too: the queue refuses writes until it is reopened. */
export class DlqBrokenError extends Data.TaggedError('DlqBrokenError')<{ readonly message: string; readonly cause?: unknown }> {
  readonly code = 'broken' as const
}
/** A record that was good at open() no longer reads back (bad length, crc or JSON). */
export class DlqCorruptError extends Data.TaggedError('DlqCorruptError')<{ readonly message: string }> {
  readonly code = 'corrupt' as const
}

export type DlqError = DlqFullError | DlqNotFoundError | DlqInvalidError | DlqClosedError | DlqIoError | DlqBrokenError | DlqCorruptError

export type { DlqEntry } from './dlqRecords.js'

export interface DlqOptions {
  dir: string
  /** A segment file is closed and a new one started once it would grow past this (default 16 MiB). */
  segmentBytes?: number
  /** Appends that would take the files past this are refused with DlqFullError (default 1 GiB). */
  maxBytes?: number
  /** fdatasync every write (and fsync the directory after creating, renaming or deleting files) before resolving (default true). */
  fsync?: boolean
}

export interface DlqAppend {
  sink: string
  events: readonly StoredEvent[]
  error: string
  attempts: number
  /** Default: now. */
  firstFailedAt?: string
}

export interface DlqStats {
  /** Live entries: neither parked nor done. */
  depth: number
  /** Events in live entries. */
  events: number
  parked: number
  /** firstFailedAt of the oldest (lowest id) live entry. */
  oldestAt: string | undefined
  /** On disk, in segment files. */
  bytes: number
  /** Parked reasons and live errors, counted; the 20 most frequent. */
  reasons: Record<string, number>
  /** fdatasyncs of writes so far (group commit: fewer than writes). */
  fsyncs: number
  segments: number
  /** Why the last disk reclamation (segment deletion, compaction) failed; cleared when one succeeds. */
  maintenanceError: string | undefined
}

/** What open() repaired: bytes cut from torn or corrupt tails, and segment files it removed (left empty by a torn first record, or made obsolete by a later compaction snapshot). */
export type DlqRecovery = LogRecovery

type PendingOp = { kind: 'append'; append: DlqAppend; eventsJson: Buffer } | { kind: 'mutation'; record: MutationRecord }
type Job = CommitJob<PendingOp, DlqEntry | undefined>
type Write = { job: Job; record: AppendRecord | MutationRecord; frame: Buffer }

const TOP_REASONS = 20
/** The most a segment record can take: the cost of starting a segment. */
const SEGMENT_RECORD_BYTES = encodeLogRecord({ t: 'segment', nextId: Number.MAX_SAFE_INTEGER, snapshot: false }).length
const DEFAULT_LIST_LIMIT = 100
const MAX_LIST_LIMIT = 1_000

/**
 * The durable dead-letter queue: batches a sink could not take, kept until they are replayed into
 * it (markDone) or parked as poison for an admin.
 *
 * On disk: a segment log (segmentLog.ts) in files `<20-digit generation>.dlq` of records
 * (dlqRecords.ts: `segment`, `append`, `done`, `failed`, `park`, `requeue`). Every segment starts
 * with a `segment` record carrying the next id, so ids keep rising after everything was deleted.
 * Front segments are deleted and the rest compacted into snapshots as entries are done, within
 * maxBytes (dlqMaintenance.ts).
 *
 * In memory: an index (dlqIndex.ts), not the events. Each entry that is not done keeps its
 * metadata and where its append record is; peekOldest and list read and check its events from
 * the file with a synchronous pread (one record each; page-cached while the replayer drains). So a
 * 1 GiB backlog costs memory per entry, not per event, and open() parses only the record headers.
 *
 * Writes (appends and state changes) are group-committed: those made while a write is in flight go
 * out together with one fdatasync, in call order, and resolve once durable.
 */
export class DeadLetterQueue {
  readonly recovery: DlqRecovery
  private readonly maxBytes: number
  private readonly maintenance: DlqMaintenance
  private readonly commits = new GroupCommit<PendingOp, DlqEntry | undefined>((jobs) => this.writeGroup(jobs))
  private closing: Promise<void> | undefined
  private closed = false

  private constructor(
    private readonly log: SegmentLog<SegmentPins>,
    private readonly index: DlqIndex,
    limits: DlqLimits,
  ) {
    this.maxBytes = limits.maxBytes
    this.maintenance = new DlqMaintenance(log, index, limits)
    this.recovery = log.recovery
  }

  /** Rebuilds the index from the segments, cutting a torn or corrupt tail at its last good record. */
  static async open(opts: DlqOptions): Promise<DeadLetterQueue> {
    const index = new DlqIndex()
    const segmentBytes = opts.segmentBytes ?? 16 * 1024 * 1024
    const log = await SegmentLog.open<LogRecord, SegmentPins>(
      { dir: opts.dir, extension: 'dlq', segmentBytes, fsync: opts.fsync ?? true, headers: true, handles: 'all', meta: () => ({ pins: 0 }) },
      { decode: decodeLogRecord, apply: (record, segment, offset, end) => index.apply(record, segment, offset, end - offset) },
    )
    const dlq = new DeadLetterQueue(log, index, { segmentBytes, maxBytes: opts.maxBytes ?? 1024 * 1024 * 1024 })
    await dlq.maintenance.run()
    return dlq
  }

  /** Appends a failed batch; resolves once fsynced. Rejects with DlqFullError when maxBytes would be passed. */
  append(entry: DlqAppend): Promise<DlqEntry> {
    const refused = this.refusal()
    if (refused) return Promise.reject(refused)
    if (entry.events.length === 0) return Promise.reject(new DlqInvalidError({ message: 'a dead letter needs at least one event' }))
    if (typeof entry.sink !== 'string' || entry.sink === '') return Promise.reject(new DlqInvalidError({ message: 'a dead letter needs a sink' }))
    if (!Number.isSafeInteger(entry.attempts) || entry.attempts < 0) {
      return Promise.reject(new DlqInvalidError({ message: `attempts must be a non-negative integer, not ${entry.attempts}` }))
    }
    let eventsJson: Buffer
    try {
      eventsJson = Buffer.from(JSON.stringify(entry.events))
    } catch (cause) {
      return Promise.reject(new DlqInvalidError({ message: `batch cannot be serialised: ${messageOf(cause)}`, cause }))
    }
    if (eventsJson.length + HEADER_BYTES > Math.min(this.maxBytes, MAX_RECORD_BYTES)) {
      return Promise.reject(this.fullError(eventsJson.length + HEADER_BYTES))
    }
    return this.commits.submit({ kind: 'append', append: entry, eventsJson }).then((written) => written!)
  }

  /** The oldest live (not parked, not done) entry for a sink, or undefined. Reads its events from disk. */
  peekOldest(sink: string): DlqEntry | undefined {
    const entry = this.index.oldestLive(sink)
    return entry === undefined ? undefined : this.read(entry)
  }

  /** The entry was replayed successfully: it's done (durably recorded), never returned again. */
  markDone(id: number): Promise<void> {
    return this.mutate({ t: 'done', id })
  }

  /** A replay failed again as unavailable: bumps attempts/lastFailedAt/error (durably), keeps its place. */
  markFailed(id: number, error: string): Promise<void> {
    return this.mutate({ t: 'failed', id, error, at: new Date().toISOString() })
  }

  /** A poison entry: parks it with a reason (durably); it is not replayed until requeued. */
  park(id: number, reason: string): Promise<void> {
    return this.mutate({ t: 'park', id, reason, at: new Date().toISOString() })
  }

  /** Admin: moves parked entries of a sink (or one id) back to live, in their old place. Returns how many. */
  async requeue(filter: { sink?: string; id?: number } = {}): Promise<number> {
    const ids: number[] = []
    for (const e of this.index.entries.values()) {
      if (e.parked && (filter.sink === undefined || e.sink === filter.sink) && (filter.id === undefined || e.id === filter.id)) ids.push(e.id)
    }
    await Promise.all(ids.map((id) => this.mutate({ t: 'requeue', id })))
    return ids.length
  }

  /** Admin listing: entries with id > afterId, oldest first, optionally one sink, only parked (true) or only live (false). */
  list(opts: { sink?: string; parked?: boolean; afterId?: number; limit?: number } = {}): DlqEntry[] {
    const limit = Math.max(1, Math.min(MAX_LIST_LIMIT, Math.floor(opts.limit ?? DEFAULT_LIST_LIMIT)))
    const page: DlqEntry[] = []
    for (const e of this.index.entries.values()) {
      if (opts.afterId !== undefined && e.id <= opts.afterId) continue
      if (opts.sink !== undefined && e.sink !== opts.sink) continue
      if (opts.parked !== undefined && (e.parked !== undefined) !== opts.parked) continue
      page.push(this.read(e))
      if (page.length >= limit) break
    }
    return page
  }

  stats(): DlqStats {
    return {
      depth: this.index.depth,
      events: this.index.liveEvents,
      parked: this.index.parked,
      oldestAt: this.index.oldestAt(),
      bytes: this.log.bytes,
      reasons: this.index.topReasons(TOP_REASONS),
      fsyncs: this.log.fsyncs,
      segments: this.log.segments.length,
      maintenanceError: this.maintenance.error,
    }
  }

  /** Live (replayable) entries; cheap, for hot paths (stats() builds the whole report). */
  get liveDepth(): number {
    return this.index.depth
  }

  /** For back-pressure: the files hold at least 90 % of maxBytes. */
  get nearlyFull(): boolean {
    return this.maintenance.nearlyFull
  }

  /** Refuses new calls, waits for the writes already made, closes the files. */
  close(): Promise<void> {
    this.closing ??= this.commits.exclusive(async () => {
      this.closed = true
      await this.log.close()
    })
    return this.closing
  }

  private refusal(): DlqClosedError | DlqBrokenError | undefined {
    if (this.closing) return new DlqClosedError({ message: 'dead-letter queue is closed' })
    return this.log.broken && brokenError(this.log.broken)
  }

  private fullError(needed: number): DlqFullError {
    const bytes = this.log.bytes
    const message = `dead-letter queue is full: ${bytes} of ${this.maxBytes} bytes used, ${needed} more needed`
    return new DlqFullError({ message, bytes, maxBytes: this.maxBytes })
  }

  private mutate(record: MutationRecord): Promise<void> {
    const refused = this.refusal()
    if (refused) return Promise.reject(refused)
    if (!this.index.entries.has(record.id)) {
      return Promise.reject(new DlqNotFoundError({ message: `dead letter ${record.id} is not in the queue`, id: record.id }))
    }
    return this.commits.submit({ kind: 'mutation', record }).then(() => undefined)
  }

  private async writeGroup(jobs: readonly Job[]): Promise<void> {
    if (this.log.broken) throw brokenError(this.log.broken)
    let needed = 0
    for (const { input } of jobs) if (input.kind === 'append') needed += input.eventsJson.length + 512
    await this.maintenance.makeRoom(needed)
    const writes = this.place(jobs)
    let written = 0
    try {
      await this.log.append(
        writes.map((w) => w.frame),
        {
          newSegment: () => ({ number: this.log.lastNumber + 1, header: encodeLogRecord({ t: 'segment', nextId: this.index.nextId, snapshot: false }) }),
          written: (i, segment, offset) => {
            const { job, record, frame } = writes[i]!
            this.index.apply(record, segment, offset, frame.length)
            job.resolve(job.input.kind === 'append' ? toDlqEntry(record as AppendRecord, [...job.input.append.events]) : undefined)
            written = i + 1
          },
        },
      )
    } catch (err) {
      const error = writeError(err)
      for (const w of writes.slice(written)) w.job.reject(error)
    }
    if (!this.closed) await this.maintenance.run()
  }

  /**
   * The records of a group, with where each frame will land (the log's roll rule), so an append
   * that would take the files past maxBytes is refused before anything is written.
   */
  private place(jobs: readonly Job[]): Write[] {
    const writes: Write[] = []
    let room = this.maxBytes - this.log.bytes
    const active = this.log.active
    let tail = active && { bytes: active.bytes, records: active.records }
    let nextId = this.index.nextId
    const now = new Date().toISOString()
    for (const job of jobs) {
      const op = job.input
      let record: AppendRecord | MutationRecord
      let frame: Buffer
      if (op.kind === 'mutation') {
        record = op.record
        frame = encodeLogRecord(record)
      } else {
        const { sink, error, attempts, firstFailedAt = now, events } = op.append
        record = { t: 'append', id: nextId, sink, error, attempts, firstFailedAt, lastFailedAt: now, n: events.length }
        frame = encodeLogRecord(record, op.eventsJson)
      }
      const rolls = !this.log.accepts(tail, frame.length)
      const cost = frame.length + (rolls ? SEGMENT_RECORD_BYTES : 0)
      if (op.kind === 'append') {
        if (cost > room) {
          job.reject(this.fullError(cost))
          continue
        }
        nextId++
      }
      room -= cost
      if (rolls || !tail) tail = { bytes: SEGMENT_RECORD_BYTES, records: 0 }
      tail.bytes += frame.length
      tail.records++
      writes.push({ job, record, frame })
    }
    return writes
  }

  /** An entry with its events, read from its append record. */
  private read(entry: Entry): DlqEntry {
    if (this.closed) throw new DlqClosedError({ message: 'dead-letter queue is closed' })
    let payload: Buffer
    try {
      payload = this.log.readFrameSync(entry.segment, entry.offset, entry.length)
    } catch (err) {
      throw readError(entry, err)
    }
    const events = eventsOf(payload, entry.eventCount)
    if (!events) throw new DlqCorruptError({ message: `${entry.segment.name} at byte ${entry.offset}: events of dead letter ${entry.id} do not parse` })
    return toDlqEntry(appendRecordOf(entry), events)
  }
}

function brokenError(e: SegmentLogBroken): DlqBrokenError {
  return new DlqBrokenError({ message: `${e.message}; reopen the queue`, cause: e.cause })
}

/** The DlqError for a failed write (others pass through as they are). */
function writeError(err: unknown): unknown {
  return mapLogError(err, {
    SegmentIoError: (e) => new DlqIoError({ message: `dead-letter write failed: ${e.message}`, cause: e.cause }),
    SegmentLogBroken: brokenError,
    FrameCorrupt: (e) => new DlqCorruptError({ message: e.message }),
  })
}

/** The DlqError for a failed read of an entry's append record. */
function readError(entry: Entry, err: unknown): unknown {
  return mapLogError(err, {
    FrameCorrupt: (e) => new DlqCorruptError({ message: e.reason === 'short' ? `${entry.segment.name} ends before dead letter ${entry.id}` : e.message }),
    SegmentIoError: (e) => new DlqIoError({ message: `reading dead letter ${entry.id} failed: ${e.message}`, cause: e.cause }),
    SegmentLogBroken: brokenError,
  })
}
