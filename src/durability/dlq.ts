import { readSync } from 'node:fs'
import { mkdir, open, readdir, rename, rm, unlink, type FileHandle } from 'node:fs/promises'
import path from 'node:path'
import { crc32 } from 'node:zlib'
import { Data } from 'effect'
import type { StoredEvent } from '../types.js'
import { ChunkedReader, encodeRecord, HEADER_BYTES, MAX_RECORD_BYTES, syncDir } from './wal.js'

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

export interface DlqEntry {
  /** Monotonically increasing, across restarts. */
  id: number
  /** 'store' | 'realtime' | ... */
  sink: string
  events: StoredEvent[]
  /** Last error message; callers pass it cleaned of secrets. */
  error: string
  attempts: number
  firstFailedAt: string
  lastFailedAt: string
  parked?: { reason: string; at: string }
}

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

/** What open() repaired: bytes cut from torn or corrupt tails, and segment files it removed. */
export interface DlqRecovery {
  truncatedBytes: number
  damagedSegments: string[]
  /** Left empty by a torn first record, or made obsolete by a later compaction snapshot. */
  removedSegments: string[]
}

type SegmentRecord = { t: 'segment'; nextId: number; snapshot: boolean }
type AppendRecord = {
  t: 'append'
  id: number
  sink: string
  error: string
  attempts: number
  firstFailedAt: string
  lastFailedAt: string
  parked?: { reason: string; at: string }
  /** Events in the record. */
  n: number
}
type MutationRecord =
  | { t: 'done'; id: number }
  | { t: 'failed'; id: number; error: string; at: string }
  | { t: 'park'; id: number; reason: string; at: string }
  | { t: 'requeue'; id: number }
type LogRecord = SegmentRecord | AppendRecord | MutationRecord

interface Segment {
  name: string
  file: string
  fh: FileHandle
  /** Length of its good, durable prefix. */
  bytes: number
  /** Records (not counting the segment record) in it. */
  records: number
  /** Records in it that belong to entries not yet done: while > 0 it cannot go. */
  pins: number
}

/** What is kept in memory of an entry that is not done: everything but its events. */
interface Entry {
  id: number
  sink: string
  error: string
  attempts: number
  firstFailedAt: string
  lastFailedAt: string
  parked: { reason: string; at: string } | undefined
  eventCount: number
  /** Where its append record (and so its events) is. */
  segment: Segment
  offset: number
  length: number
  /** The segment of each of its records (append, failed, park, requeue). */
  pinned: Segment[]
}

type PendingOp =
  | {
      kind: 'append'
      input: DlqAppend
      eventsJson: Buffer
      resolve: (entry: DlqEntry) => void
      reject: (err: Error) => void
    }
  | { kind: 'mutation'; record: MutationRecord; resolve: () => void; reject: (err: Error) => void }

type ScanItem =
  | { kind: 'record'; record: LogRecord; offset: number; end: number }
  | { kind: 'bad'; offset: number; reason: string }

const SEGMENT_NAME = /^(\d{20})\.dlq$/
const TEMP_NAME = /^\d{20}\.dlq\.tmp$/
const NEWLINE = Buffer.from('\n')
const WRITE_CHUNK_BYTES = 1 << 20
const TOP_REASONS = 20
const COMPACT_RETRY_MS = 10_000
/** The most a segment record can take: the cost of starting a segment. */
const SEGMENT_RECORD_BYTES = encodeLogRecord({ t: 'segment', nextId: Number.MAX_SAFE_INTEGER, snapshot: false }).length
const DEFAULT_LIST_LIMIT = 100
const MAX_LIST_LIMIT = 1_000

/**
 * The durable dead-letter queue: batches a sink could not take, kept until they are replayed into
 * it (markDone) or parked as poison for an admin.
 *
 * On disk: an append-only log in segment files `<20-digit generation>.dlq`, framed like the WAL
 * ([u32 length][u32 crc32][payload]). A payload is one JSON line naming the record (`segment`,
 * `append`, `done`, `failed`, `park`, `requeue`); an append's events follow it, after a newline, as
 * a JSON array. Every segment starts with a `segment` record carrying the next id, so ids keep
 * rising after everything has been deleted.
 *
 * In memory: an index, not the events. Each entry that is not done keeps its metadata and where its
 * append record is (segment, offset, length); peekOldest and list read and check its events from
 * the file with a synchronous pread (one record each; page-cached while the replayer drains). So a
 * 1 GiB backlog costs memory per entry, not per event, and open() parses only the record headers.
 *
 * Disk stays bounded: a closed segment at the front whose records all belong to done entries is
 * deleted (only the front, because a `done` record must outlive the append it cancels). When at
 * least half of the bytes are dead (and there is more than a segment of them), or when the files
 * are nearly full (or an append would not fit) and compaction would free a tenth of maxBytes, the
 * entries not done are rewritten into a snapshot segment (temp file, fdatasync, rename, directory
 * fsync) whose first record says "snapshot": open() forgets every record before it, so deleting
 * the old segments afterwards may be interrupted at any point. The rewrite needs room for a copy
 * of the entries kept while it runs.
 *
 * Writes (appends and state changes) are group-committed: those made while a write is in flight go
 * out together with one fdatasync, in call order, and resolve once durable.
 */
export class DeadLetterQueue {
  readonly recovery: DlqRecovery = { truncatedBytes: 0, damagedSegments: [], removedSegments: [] }
  private readonly dir: string
  private readonly segmentBytes: number
  private readonly maxBytes: number
  private readonly fsync: boolean
  private segments: Segment[] = []
  private lastGeneration = 0
  private nextId = 1
  /** Entries not done, in id order (insertion order: ids are assigned ascending). */
  private readonly entries = new Map<number, Entry>()
  private readonly liveBySink = new Map<string, SortedIds>()
  private readonly reasonCounts = new Map<string, number>()
  private depth = 0
  private liveEvents = 0
  private parkedCount = 0
  /** Bytes of the append records of entries not done: about what a compaction would keep. */
  private keptBytes = 0
  private pending: PendingOp[] = []
  private flushScheduled = false
  private queue: Promise<unknown> = Promise.resolve()
  private broken: DlqBrokenError | undefined
  private closing: Promise<void> | undefined
  private closed = false
  private fsyncs = 0
  private maintenanceError: string | undefined
  /** After a failed compaction, none is tried before this (Date.now()). */
  private compactRetryAt = 0

  private constructor(opts: DlqOptions) {
    this.dir = opts.dir
    this.segmentBytes = opts.segmentBytes ?? 16 * 1024 * 1024
    this.maxBytes = opts.maxBytes ?? 1024 * 1024 * 1024
    this.fsync = opts.fsync ?? true
  }

  /** Rebuilds the index from the segments, cutting a torn or corrupt tail at its last good record. */
  static async open(opts: DlqOptions): Promise<DeadLetterQueue> {
    await mkdir(opts.dir, { recursive: true })
    for (const name of await readdir(opts.dir)) {
      if (TEMP_NAME.test(name)) await rm(path.join(opts.dir, name), { force: true })
    }
    const dlq = new DeadLetterQueue(opts)
    try {
      await dlq.load()
    } catch (err) {
      for (const s of dlq.segments) await s.fh.close()
      throw err
    }
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
      return Promise.reject(new DlqInvalidError({ message: `batch cannot be serialised: ${(cause as Error).message}`, cause }))
    }
    if (eventsJson.length + HEADER_BYTES > Math.min(this.maxBytes, MAX_RECORD_BYTES)) {
      return Promise.reject(this.fullError(eventsJson.length + HEADER_BYTES))
    }
    return new Promise<DlqEntry>((resolve, reject) => this.enqueue({ kind: 'append', input: entry, eventsJson, resolve, reject }))
  }

  /** The oldest live (not parked, not done) entry for a sink, or undefined. Reads its events from disk. */
  peekOldest(sink: string): DlqEntry | undefined {
    const id = this.liveBySink.get(sink)?.first()
    return id === undefined ? undefined : this.read(this.entries.get(id)!)
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
    for (const e of this.entries.values()) {
      if (e.parked && (filter.sink === undefined || e.sink === filter.sink) && (filter.id === undefined || e.id === filter.id)) ids.push(e.id)
    }
    await Promise.all(ids.map((id) => this.mutate({ t: 'requeue', id })))
    return ids.length
  }

  /** Admin listing: entries with id > afterId, oldest first, optionally one sink, only parked (true) or only live (false). */
  list(opts: { sink?: string; parked?: boolean; afterId?: number; limit?: number } = {}): DlqEntry[] {
    const limit = Math.max(1, Math.min(MAX_LIST_LIMIT, Math.floor(opts.limit ?? DEFAULT_LIST_LIMIT)))
    const page: DlqEntry[] = []
    for (const e of this.entries.values()) {
      if (opts.afterId !== undefined && e.id <= opts.afterId) continue
      if (opts.sink !== undefined && e.sink !== opts.sink) continue
      if (opts.parked !== undefined && (e.parked !== undefined) !== opts.parked) continue
      page.push(this.read(e))
      if (page.length >= limit) break
    }
    return page
  }

  stats(): DlqStats {
    let oldest: number | undefined
    for (const ids of this.liveBySink.values()) {
      const first = ids.first()
      if (first !== undefined && (oldest === undefined || first < oldest)) oldest = first
    }
    const reasons = [...this.reasonCounts].sort((a, b) => b[1] - a[1]).slice(0, TOP_REASONS)
    return {
      depth: this.depth,
      events: this.liveEvents,
      parked: this.parkedCount,
      oldestAt: oldest === undefined ? undefined : this.entries.get(oldest)!.firstFailedAt,
      bytes: this.bytes,
      reasons: Object.fromEntries(reasons),
      fsyncs: this.fsyncs,
      segments: this.segments.length,
      maintenanceError: this.maintenanceError,
    }
  }

  /** Live (replayable) entries; cheap, for hot paths (stats() builds the whole report). */
  get liveDepth(): number {
    return this.depth
  }

  /** For back-pressure: the files hold at least 90 % of maxBytes. */
  get nearlyFull(): boolean {
    return this.bytes >= this.maxBytes * 0.9
  }

  /** Refuses new calls, waits for the writes already made, closes the files. */
  close(): Promise<void> {
    this.closing ??= this.exclusive(async () => {
      this.closed = true
      for (const s of this.segments) await s.fh.close()
    })
    return this.closing
  }

  private get bytes(): number {
    return this.segments.reduce((n, s) => n + s.bytes, 0)
  }

  private refusal(): Error | undefined {
    if (this.closing) return new DlqClosedError({ message: 'dead-letter queue is closed' })
    return this.broken
  }

  private fullError(needed: number): DlqFullError {
    return new DlqFullError({
      message: `dead-letter queue is full: ${this.bytes} of ${this.maxBytes} bytes used, ${needed} more needed`,
      bytes: this.bytes,
      maxBytes: this.maxBytes,
    })
  }

  private mutate(record: MutationRecord): Promise<void> {
    const refused = this.refusal()
    if (refused) return Promise.reject(refused)
    if (!this.entries.has(record.id)) {
      return Promise.reject(new DlqNotFoundError({ message: `dead letter ${record.id} is not in the queue`, id: record.id }))
    }
    return new Promise<void>((resolve, reject) => this.enqueue({ kind: 'mutation', record, resolve, reject }))
  }

  private enqueue(op: PendingOp): void {
    this.pending.push(op)
    if (!this.flushScheduled) {
      this.flushScheduled = true
      void this.exclusive(() => this.flushPending())
    }
  }

  /** Runs fn after everything queued before it (group writes, close). */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn)
    this.queue = run.catch(() => undefined)
    return run
  }

  private async flushPending(): Promise<void> {
    this.flushScheduled = false
    const group = this.pending
    this.pending = []
    if (this.broken) {
      for (const op of group) op.reject(this.broken)
      return
    }
    await this.makeRoomFor(group)

    // Where each frame will land (segmentFor's rule), so an append is refused before anything is written.
    const writes: Array<{ op: PendingOp; record: AppendRecord | MutationRecord; frame: Buffer }> = []
    let room = this.maxBytes - this.bytes
    const active = this.segments.at(-1)
    let activeBytes = active?.bytes ?? 0
    let activeRecords = active ? active.records : -1
    let nextId = this.nextId
    const now = new Date().toISOString()
    for (const op of group) {
      let record: AppendRecord | MutationRecord
      let frame: Buffer
      if (op.kind === 'mutation') {
        record = op.record
        frame = encodeLogRecord(record)
      } else {
        const { sink, error, attempts, firstFailedAt = now } = op.input
        record = { t: 'append', id: nextId, sink, error, attempts, firstFailedAt, lastFailedAt: now, n: op.input.events.length }
        frame = encodeLogRecord(record, op.eventsJson)
      }
      const rolls = activeRecords === -1 || (activeRecords > 0 && activeBytes + frame.length > this.segmentBytes)
      const cost = frame.length + (rolls ? SEGMENT_RECORD_BYTES : 0)
      if (op.kind === 'append') {
        if (cost > room) {
          op.reject(this.fullError(cost))
          continue
        }
        nextId++
      }
      room -= cost
      if (rolls) [activeBytes, activeRecords] = [SEGMENT_RECORD_BYTES, 0]
      activeBytes += frame.length
      activeRecords++
      writes.push({ op, record, frame })
    }

    let i = 0
    try {
      while (i < writes.length) {
        const segment = await this.segmentFor(writes[i]!.frame.length)
        let end = segment.bytes + writes[i]!.frame.length
        let j = i + 1
        while (j < writes.length && end + writes[j]!.frame.length <= this.segmentBytes) end += writes[j++]!.frame.length
        let offset = segment.bytes
        const batch = writes.slice(i, j)
        await this.write(segment, batch.map((w) => w.frame))
        for (const w of batch) {
          this.apply(w.record, segment, offset, w.frame.length)
          offset += w.frame.length
          if (w.op.kind === 'append') w.op.resolve(toDlqEntry(w.record as AppendRecord, [...w.op.input.events]))
          else w.op.resolve()
        }
        i = j
      }
    } catch (err) {
      const error =
        err instanceof DlqBrokenError || err instanceof DlqIoError
          ? err
          : new DlqIoError({ message: `dead-letter write failed: ${(err as Error).message}`, cause: err })
      for (const w of writes.slice(i)) w.op.reject(error)
    }
    await this.maintain()
  }

  /** Compacts first when the group's appends would not fit but compaction would free a tenth of maxBytes. */
  private async makeRoomFor(group: readonly PendingOp[]): Promise<void> {
    let needed = 0
    for (const op of group) if (op.kind === 'append') needed += op.eventsJson.length + 512
    if (needed === 0 || this.bytes + needed <= this.maxBytes) return
    const reclaimable = this.bytes - this.keptBytes
    if (reclaimable < Math.max(needed, this.maxBytes * 0.1) || Date.now() < this.compactRetryAt) return
    await this.tryCompact()
  }

  /** Deletes dead front segments; compacts when half the bytes are dead. Never fails a caller. */
  private async maintain(): Promise<void> {
    if (this.broken || this.closed) return
    try {
      while (this.segments.length > 1 && this.segments[0]!.pins === 0) {
        const dead = this.segments[0]!
        await unlink(dead.file)
        if (this.fsync) await syncDir(this.dir)
        this.segments.shift()
        await dead.fh.close()
      }
    } catch (err) {
      this.maintenanceError = `segment deletion failed: ${(err as Error).message}`
      return
    }
    const bytes = this.bytes
    const dead = bytes - this.keptBytes
    this.maintenanceError = undefined
    const halfDead = bytes > this.segmentBytes && dead * 2 >= bytes
    // Near the bound dead bytes would turn producers away (nearlyFull): reclaim them sooner.
    const deadWhileNearlyFull = this.nearlyFull && dead >= this.maxBytes * 0.1
    if ((halfDead || deadWhileNearlyFull) && Date.now() >= this.compactRetryAt) await this.tryCompact()
  }

  private async tryCompact(): Promise<void> {
    try {
      await this.compact()
      this.maintenanceError = undefined
    } catch (err) {
      this.maintenanceError = `compaction failed: ${(err as Error).message}`
      this.compactRetryAt = Date.now() + COMPACT_RETRY_MS
    }
  }

  /**
   * Rewrites every entry not done, with its current state, into a fresh snapshot segment, then
   * deletes all older segments. The snapshot becomes the active segment.
   */
  private async compact(): Promise<void> {
    const generation = ++this.lastGeneration
    const name = segmentName(generation)
    const file = path.join(this.dir, name)
    const temp = `${file}.tmp`
    const fh = await open(temp, 'wx+')
    const moved: Array<{ entry: Entry; offset: number; length: number }> = []
    let size = 0
    try {
      const readers = new Map<Segment, ChunkedReader>()
      let chunk: Buffer[] = []
      let chunkBytes = 0
      const flush = async () => {
        await writeFully(fh, Buffer.concat(chunk), size - chunkBytes)
        chunk = []
        chunkBytes = 0
      }
      const put = async (frame: Buffer) => {
        chunk.push(frame)
        chunkBytes += frame.length
        size += frame.length
        if (chunkBytes >= WRITE_CHUNK_BYTES) await flush()
      }
      await put(encodeLogRecord({ t: 'segment', nextId: this.nextId, snapshot: true }))
      for (const entry of this.entries.values()) {
        let reader = readers.get(entry.segment)
        if (!reader) readers.set(entry.segment, (reader = new ChunkedReader(entry.segment.fh, entry.segment.bytes)))
        const old = await reader.read(entry.offset, entry.length)
        if (!old) throw new DlqCorruptError({ message: `${entry.segment.name} ends before dead letter ${entry.id}` })
        const payload = checkFrame(old, entry.segment.name, entry.offset)
        const frame = encodeLogRecord(appendRecordOf(entry), payload.subarray(payload.indexOf(NEWLINE) + 1))
        moved.push({ entry, offset: size, length: frame.length })
        await put(frame)
      }
      if (chunkBytes > 0) await flush()
      if (this.fsync) {
        this.fsyncs++
        await fh.datasync()
      }
      await rename(temp, file)
      if (this.fsync) await syncDir(this.dir)
    } catch (err) {
      await fh.close()
      await rm(temp, { force: true })
      throw err
    }

    const snapshot: Segment = { name, file, fh, bytes: size, records: moved.length, pins: moved.length }
    for (const { entry, offset, length } of moved) {
      entry.segment = snapshot
      entry.offset = offset
      entry.length = length
      entry.pinned = [snapshot]
    }
    this.keptBytes = moved.reduce((n, m) => n + m.length, 0)
    const old = this.segments
    this.segments = [snapshot]
    // The snapshot supersedes them at open(), so a crash anywhere in here loses nothing.
    for (const s of old) {
      await s.fh.close()
      await unlink(s.file)
    }
    if (this.fsync) await syncDir(this.dir)
  }

  /** The segment a frame of `length` goes to: the active one, or a new one when it would overflow. */
  private async segmentFor(length: number): Promise<Segment> {
    const active = this.segments.at(-1)
    if (active && (active.records === 0 || active.bytes + length <= this.segmentBytes)) return active
    const name = segmentName(++this.lastGeneration)
    const file = path.join(this.dir, name)
    const fh = await open(file, 'wx+')
    const first = encodeLogRecord({ t: 'segment', nextId: this.nextId, snapshot: false })
    try {
      await writeFully(fh, first, 0)
      if (this.fsync) {
        this.fsyncs++
        await fh.datasync()
        await syncDir(this.dir)
      }
    } catch (err) {
      await fh.close()
      await unlink(file).catch(() => undefined)
      throw err
    }
    const segment: Segment = { name, file, fh, bytes: first.length, records: 0, pins: 0 }
    this.segments.push(segment)
    return segment
  }

  private async write(segment: Segment, frames: readonly Buffer[]): Promise<void> {
    const at = segment.bytes
    const buf = frames.length === 1 ? frames[0]! : Buffer.concat(frames)
    try {
      await writeFully(segment.fh, buf, at)
      if (this.fsync) {
        this.fsyncs++
        await segment.fh.datasync()
      }
    } catch (err) {
      await this.rollBack(segment, at)
      throw new DlqIoError({ message: `dead-letter write failed: ${(err as Error).message}`, cause: err })
    }
    segment.bytes = at + buf.length
    segment.records += frames.length
  }

  /** Cuts a segment back to `at`, its last good record (never 0: the segment record stays). */
  private async rollBack(segment: Segment, at: number): Promise<void> {
    try {
      await segment.fh.truncate(at)
      if (this.fsync) await segment.fh.datasync()
    } catch (cause) {
      this.broken = new DlqBrokenError({ message: `could not roll back ${segment.name} to byte ${at}; reopen the queue`, cause })
    }
  }

  /** Updates the index with a durable record; the same code replays the log at open(). */
  private apply(record: LogRecord, segment: Segment, offset: number, length: number): void {
    if (record.t === 'segment') {
      if (record.snapshot) this.forgetAll()
      this.nextId = Math.max(this.nextId, record.nextId)
      return
    }
    const existing = this.entries.get(record.id)
    if (record.t === 'append') {
      if (existing) this.forget(existing)
      const { id, sink, error, attempts, firstFailedAt, lastFailedAt, parked, n } = record
      const entry: Entry = { id, sink, error, attempts, firstFailedAt, lastFailedAt, parked, eventCount: n, segment, offset, length, pinned: [segment] }
      segment.pins++
      this.entries.set(id, entry)
      this.keptBytes += length
      this.attach(entry)
      this.nextId = Math.max(this.nextId, id + 1)
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
    segment.pins++
  }

  private forget(entry: Entry): void {
    this.detach(entry)
    for (const s of entry.pinned) s.pins--
    this.entries.delete(entry.id)
    this.keptBytes -= entry.length
  }

  private forgetAll(): void {
    this.entries.clear()
    this.liveBySink.clear()
    this.reasonCounts.clear()
    this.depth = this.liveEvents = this.parkedCount = this.keptBytes = 0
  }

  /** Counts an entry in by its state (live or parked). */
  private attach(entry: Entry): void {
    if (entry.parked) {
      this.parkedCount++
    } else {
      let ids = this.liveBySink.get(entry.sink)
      if (!ids) this.liveBySink.set(entry.sink, (ids = new SortedIds()))
      ids.insert(entry.id)
      this.depth++
      this.liveEvents += entry.eventCount
    }
    const reason = entry.parked ? entry.parked.reason : entry.error
    this.reasonCounts.set(reason, (this.reasonCounts.get(reason) ?? 0) + 1)
  }

  private detach(entry: Entry): void {
    if (entry.parked) {
      this.parkedCount--
    } else {
      this.liveBySink.get(entry.sink)!.remove(entry.id)
      this.depth--
      this.liveEvents -= entry.eventCount
    }
    const reason = entry.parked ? entry.parked.reason : entry.error
    const count = this.reasonCounts.get(reason)! - 1
    if (count === 0) this.reasonCounts.delete(reason)
    else this.reasonCounts.set(reason, count)
  }

  /** An entry with its events, read from its append record. */
  private read(entry: Entry): DlqEntry {
    if (this.closed) throw new DlqClosedError({ message: 'dead-letter queue is closed' })
    const frame = Buffer.allocUnsafe(entry.length)
    try {
      let got = 0
      while (got < entry.length) {
        const n = readSync(entry.segment.fh.fd, frame, got, entry.length - got, entry.offset + got)
        if (n === 0) throw new DlqCorruptError({ message: `${entry.segment.name} ends before dead letter ${entry.id}` })
        got += n
      }
    } catch (err) {
      if (err instanceof DlqCorruptError) throw err
      throw new DlqIoError({ message: `reading dead letter ${entry.id} failed: ${(err as Error).message}`, cause: err })
    }
    const payload = checkFrame(frame, entry.segment.name, entry.offset)
    let events: unknown
    try {
      events = JSON.parse(payload.subarray(payload.indexOf(NEWLINE) + 1).toString('utf8'))
    } catch {
      events = undefined
    }
    if (!Array.isArray(events) || events.length !== entry.eventCount) {
      throw new DlqCorruptError({ message: `${entry.segment.name} at byte ${entry.offset}: events of dead letter ${entry.id} do not parse` })
    }
    return toDlqEntry(appendRecordOf(entry), events as StoredEvent[])
  }

  /** Replays every segment in order; a snapshot segment makes the ones before it obsolete. */
  private async load(): Promise<void> {
    const names = (await readdir(this.dir)).filter((n) => SEGMENT_NAME.test(n)).sort()
    const obsolete: Segment[] = []
    for (const name of names) {
      this.lastGeneration = Math.max(this.lastGeneration, Number(name.slice(0, 20)))
      const file = path.join(this.dir, name)
      const fh = await open(file, 'r+')
      const segment: Segment = { name, file, fh, bytes: 0, records: 0, pins: 0 }
      try {
        const size = (await fh.stat()).size
        for await (const item of scanLog(fh, size)) {
          if (item.kind === 'bad') break
          if (item.record.t === 'segment' && item.record.snapshot) {
            obsolete.push(...this.segments)
            this.segments = []
          }
          this.apply(item.record, segment, item.offset, item.end - item.offset)
          if (item.record.t !== 'segment') segment.records++
          segment.bytes = item.end
        }
        if (segment.bytes < size) {
          await fh.truncate(segment.bytes)
          if (this.fsync) await fh.datasync()
          this.recovery.truncatedBytes += size - segment.bytes
          this.recovery.damagedSegments.push(name)
        }
      } catch (err) {
        await fh.close()
        throw err
      }
      if (segment.bytes === 0) obsolete.push(segment)
      else this.segments.push(segment)
    }
    for (const s of obsolete) {
      await s.fh.close()
      await unlink(s.file)
      this.recovery.removedSegments.push(s.name)
    }
    if (obsolete.length > 0 && this.fsync) await syncDir(this.dir)
    await this.maintain()
  }
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

function segmentName(generation: number): string {
  return `${String(generation).padStart(20, '0')}.dlq`
}

function appendRecordOf(e: Entry): AppendRecord {
  const { id, sink, error, attempts, firstFailedAt, lastFailedAt, parked } = e
  return { t: 'append', id, sink, error, attempts, firstFailedAt, lastFailedAt, ...(parked ? { parked } : {}), n: e.eventCount }
}

function toDlqEntry(r: AppendRecord, events: StoredEvent[]): DlqEntry {
  const { id, sink, error, attempts, firstFailedAt, lastFailedAt, parked } = r
  return { id, sink, events, error, attempts, firstFailedAt, lastFailedAt, ...(parked ? { parked: { ...parked } } : {}) }
}

function encodeLogRecord(record: LogRecord, events?: Buffer): Buffer {
  const line = Buffer.from(JSON.stringify(record))
  return encodeRecord(events ? Buffer.concat([line, NEWLINE, events]) : line)
}

/** The payload of a whole frame read back from disk, or DlqCorruptError. */
function checkFrame(frame: Buffer, segment: string, offset: number): Buffer {
  const payload = frame.subarray(HEADER_BYTES)
  if (frame.length < HEADER_BYTES || frame.readUInt32LE(0) !== payload.length || frame.readUInt32LE(4) !== crc32(payload)) {
    throw new DlqCorruptError({ message: `${segment} at byte ${offset}: record no longer matches its length or crc` })
  }
  return payload
}

/** Records of a segment up to `limit` bytes; ends with a 'bad' item at the first torn or corrupt one. */
async function* scanLog(fh: FileHandle, limit: number): AsyncGenerator<ScanItem> {
  const reader = new ChunkedReader(fh, limit)
  let at = 0
  while (at < limit) {
    const item = await readLogRecord(reader, at)
    yield item
    if (item.kind === 'bad') return
    at = item.end
  }
}

async function readLogRecord(reader: ChunkedReader, at: number): Promise<ScanItem> {
  const bad = (reason: string): ScanItem => ({ kind: 'bad', offset: at, reason })
  const header = await reader.read(at, HEADER_BYTES)
  if (!header) return bad('torn header')
  const length = header.readUInt32LE(0)
  const crc = header.readUInt32LE(4)
  if (length === 0 || length > MAX_RECORD_BYTES) return bad(`bad length ${length}`)
  const payload = await reader.read(at + HEADER_BYTES, length)
  if (!payload) return bad('torn record')
  if (crc32(payload) !== crc) return bad('crc mismatch')
  let record: LogRecord
  try {
    record = decodeLogRecord(payload)
  } catch (err) {
    return bad((err as Error).message)
  }
  // A segment starts with its segment record, and has only that one.
  if ((at === 0) !== (record.t === 'segment')) return bad('segment record out of place')
  return { kind: 'record', record, offset: at, end: at + HEADER_BYTES + length }
}

function decodeLogRecord(payload: Buffer): LogRecord {
  const nl = payload.indexOf(NEWLINE)
  const r = JSON.parse(payload.subarray(0, nl === -1 ? payload.length : nl).toString('utf8')) as Record<string, unknown> | null
  const isId = (v: unknown) => typeof v === 'number' && Number.isSafeInteger(v) && v > 0
  const isText = (v: unknown) => typeof v === 'string'
  const ok = (() => {
    if (r === null || typeof r !== 'object') return false
    if ((r.t === 'append') !== (nl !== -1)) return false
    switch (r.t) {
      case 'segment':
        return isId(r.nextId) && typeof r.snapshot === 'boolean'
      case 'append': {
        const parked = r.parked as Record<string, unknown> | undefined
        return (
          isId(r.id) && isText(r.sink) && isText(r.error) && isText(r.firstFailedAt) && isText(r.lastFailedAt) &&
          typeof r.attempts === 'number' && Number.isSafeInteger(r.attempts) && isId(r.n) &&
          (parked === undefined || (typeof parked === 'object' && parked !== null && isText(parked.reason) && isText(parked.at)))
        )
      }
      case 'done':
      case 'requeue':
        return isId(r.id)
      case 'failed':
        return isId(r.id) && isText(r.error) && isText(r.at)
      case 'park':
        return isId(r.id) && isText(r.reason) && isText(r.at)
      default:
        return false
    }
  })()
  if (!ok) throw new Error(`not a dead-letter record: ${JSON.stringify(r).slice(0, 80)}`)
  return r as LogRecord
}

async function writeFully(fh: FileHandle, buf: Buffer, position: number): Promise<void> {
  let done = 0
  while (done < buf.length) {
    const { bytesWritten } = await fh.write(buf, done, buf.length - done, position + done)
    if (bytesWritten === 0) throw new Error('write made no progress')
    done += bytesWritten
  }
}
