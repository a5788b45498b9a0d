import { mkdir, open, readdir, readFile, rename, rm, unlink, type FileHandle } from 'node:fs/promises'
import path from 'node:path'
import { crc32 } from 'node:zlib'
import type { StoredEvent } from '../types.js'

export type WalErrorCode = 'closed' | 'invalid' | 'io' | 'broken' | 'corrupt'

/**
 * - 'closed': append after close().
 * - 'invalid': seqs that do not ascend past every earlier append, or a batch JSON cannot express.
 * - 'io': a write or fsync failed; that write was cut back off the file and the log stays usable.
 * - 'broken': cutting it back failed too; the log refuses appends until it is reopened.
 * - 'corrupt': an unreadable checkpoint, or a record that went bad on disk after open().
 */
export class WalError extends Error {
  override readonly name = 'WalError'
  constructor(
    readonly code: WalErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options)
  }
}

export interface WalOptions {
  dir: string
  /** A segment is closed and a new one started once it would grow past this (default 64 MiB). */
  segmentBytes?: number
  /** fdatasync each group before resolving its appends (default true). */
  fsync?: boolean
  /** release() rolls a fully committed active segment once it holds this much (default 1 MiB). */
  rollOnReleaseBytes?: number
}

/** What open() repaired: bytes cut from torn or corrupt tails, and segments left empty by it. */
export interface WalRecovery {
  truncatedBytes: number
  damagedSegments: string[]
  removedSegments: string[]
}

export interface WalStats {
  segments: number
  bytes: number
  pendingAppends: number
  fsyncs: number
  appendedEvents: number
}

interface Segment {
  name: string
  file: string
  /** Lower bound of the seqs in it (from the name). */
  firstSeq: number
  /** Highest seq durably in it; firstSeq - 1 while empty. */
  lastSeq: number
  /** Length of its good, durable prefix. */
  bytes: number
}

interface PendingAppend {
  record: Buffer
  firstSeq: number
  lastSeq: number
  count: number
  resolve: () => void
  reject: (err: Error) => void
}

type ScanItem =
  | { kind: 'record'; end: number; events: StoredEvent[] }
  | { kind: 'bad'; offset: number; reason: string }

/** Record framing, shared with the DLQ (src/dlq.ts): [u32 LE length][u32 LE crc32(payload)][payload]. */
export const HEADER_BYTES = 8
export const MAX_RECORD_BYTES = 1 << 30
const READ_CHUNK_BYTES = 1 << 20
const SEGMENT_NAME = /^(\d{20})\.wal$/
const CHECKPOINT = 'checkpoint.json'

/**
 * A local write-ahead log: an event is acknowledged once it is here, before the store commits it.
 * Records are [u32 LE length][u32 LE crc32(payload)][payload = JSON array of events], appended to
 * segment files named by their first seq (20 digits, so name order = seq order). A checkpoint
 * file (replaced atomically by rename) keeps maxSeq after every segment has been released.
 */
export class Wal {
  readonly recovery: WalRecovery
  private readonly dir: string
  private readonly segmentBytes: number
  private readonly fsync: boolean
  private readonly rollOnReleaseBytes: number
  private readonly segments: Segment[]
  private active: { segment: Segment; fh: FileHandle } | undefined
  private pending: PendingAppend[] = []
  private inFlight = 0
  private flushScheduled = false
  private queue: Promise<unknown> = Promise.resolve()
  private durableSeq: number
  private lastQueuedSeq: number
  private checkpointSeq: number
  private broken: WalError | undefined
  private closing: Promise<void> | undefined
  private fsyncs = 0
  private appendedEvents = 0

  private constructor(
    opts: WalOptions,
    state: { segments: Segment[]; active?: FileHandle; checkpointSeq: number; recovery: WalRecovery },
  ) {
    this.dir = opts.dir
    this.segmentBytes = opts.segmentBytes ?? 64 * 1024 * 1024
    this.fsync = opts.fsync ?? true
    this.rollOnReleaseBytes = Math.min(opts.rollOnReleaseBytes ?? 1024 * 1024, this.segmentBytes)
    this.segments = state.segments
    const last = state.segments.at(-1)
    this.active = last && state.active ? { segment: last, fh: state.active } : undefined
    this.checkpointSeq = state.checkpointSeq
    this.durableSeq = Math.max(state.checkpointSeq, last?.lastSeq ?? 0)
    this.lastQueuedSeq = this.durableSeq
    this.recovery = state.recovery
  }

  /** Scans the segments, truncates a torn or corrupt tail at the last good record, finds maxSeq. */
  static async open(opts: WalOptions): Promise<Wal> {
    const { dir } = opts
    const sync = opts.fsync ?? true
    await mkdir(dir, { recursive: true })
    await rm(path.join(dir, `${CHECKPOINT}.tmp`), { force: true })
    const checkpointSeq = await readCheckpoint(dir)
    const recovery: WalRecovery = { truncatedBytes: 0, damagedSegments: [], removedSegments: [] }
    const segments: Segment[] = []
    const names = (await readdir(dir)).filter((n) => SEGMENT_NAME.test(n)).sort()
    let prevSeq = 0
    for (const name of names) {
      const file = path.join(dir, name)
      const firstSeq = Number(name.slice(0, 20))
      const fh = await open(file, 'r+')
      try {
        const size = (await fh.stat()).size
        let good = 0
        let lastSeq = firstSeq - 1
        for await (const item of scanRecords(fh, size, Math.max(prevSeq, firstSeq - 1))) {
          if (item.kind === 'bad') break
          good = item.end
          lastSeq = item.events[item.events.length - 1]!.seq
        }
        if (good < size) {
          await fh.truncate(good)
          if (sync) await fh.datasync()
          recovery.truncatedBytes += size - good
          recovery.damagedSegments.push(name)
        }
        if (good === 0) {
          await unlink(file)
          recovery.removedSegments.push(name)
          continue
        }
        segments.push({ name, file, firstSeq, lastSeq, bytes: good })
        prevSeq = lastSeq
      } finally {
        await fh.close()
      }
    }
    if (recovery.removedSegments.length > 0 && sync) await syncDir(dir)
    const last = segments.at(-1)
    const active = last ? await open(last.file, 'r+') : undefined
    return new Wal(opts, { segments, ...(active ? { active } : {}), checkpointSeq, recovery })
  }

  /** Highest seq durably appended, across restarts (segments or checkpoint). */
  get maxSeq(): number {
    return this.durableSeq
  }

  /**
   * Appends a batch whose seqs ascend and exceed every seq appended before. Resolves once the
   * bytes are written and fdatasync'd. Appends made while a write is in flight are written
   * together by the next write and share one fsync; disk order is call order. On a write or
   * fsync failure every append of that write rejects and the file is cut back to its last good
   * record.
   */
  append(events: readonly StoredEvent[]): Promise<void> {
    if (this.closing) return Promise.reject(new WalError('closed', 'write-ahead log is closed'))
    if (this.broken) return Promise.reject(this.broken)
    if (events.length === 0) return Promise.resolve()
    let prev = this.lastQueuedSeq
    for (const e of events) {
      if (!Number.isSafeInteger(e.seq) || e.seq <= prev) {
        return Promise.reject(new WalError('invalid', `seq ${e.seq} does not follow ${prev}: seqs must ascend`))
      }
      prev = e.seq
    }
    let record: Buffer
    try {
      record = encodeRecord(Buffer.from(JSON.stringify(events)))
    } catch (cause) {
      return Promise.reject(new WalError('invalid', `batch cannot be serialised: ${(cause as Error).message}`, { cause }))
    }
    this.lastQueuedSeq = prev
    return new Promise<void>((resolve, reject) => {
      this.pending.push({ record, firstSeq: events[0]!.seq, lastSeq: prev, count: events.length, resolve, reject })
      if (!this.flushScheduled) {
        this.flushScheduled = true
        void this.exclusive(() => this.flushPending())
      }
    })
  }

  /**
   * Every event with seq > afterSeq, in order, in arrays of up to chunkSize, reading one record
   * at a time. Segments released while the replay runs are skipped.
   */
  async *replay(afterSeq = 0, chunkSize = 1000): AsyncGenerator<StoredEvent[]> {
    const snapshot = this.segments.filter((s) => s.lastSeq > afterSeq).map((s) => ({ ...s }))
    let chunk: StoredEvent[] = []
    for (const segment of snapshot) {
      let fh: FileHandle
      try {
        fh = await open(segment.file, 'r')
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue
        throw err
      }
      try {
        for await (const item of scanRecords(fh, segment.bytes, segment.firstSeq - 1)) {
          if (item.kind === 'bad') {
            throw new WalError('corrupt', `${segment.name} at byte ${item.offset}: ${item.reason}`)
          }
          for (const e of item.events) {
            if (e.seq <= afterSeq) continue
            chunk.push(e)
            if (chunk.length >= chunkSize) {
              yield chunk
              chunk = []
            }
          }
        }
      } finally {
        await fh.close()
      }
    }
    if (chunk.length > 0) yield chunk
  }

  /**
   * The store has committed every seq up to upToSeq: deletes the closed segments holding nothing
   * newer, and rolls (then deletes) the active one when it is fully committed and at least
   * rollOnReleaseBytes long. The checkpoint is brought up to maxSeq before anything is deleted.
   */
  release(upToSeq: number): Promise<void> {
    return this.exclusive(async () => {
      const active = this.active
      const victims = this.segments.filter((s) => s !== active?.segment && s.lastSeq <= upToSeq)
      const rollActive =
        active !== undefined && active.segment.lastSeq <= upToSeq && active.segment.bytes >= this.rollOnReleaseBytes
      if (victims.length === 0 && !rollActive) return
      if (this.durableSeq > this.checkpointSeq) await this.writeCheckpoint(this.durableSeq)
      if (rollActive) {
        this.active = undefined
        await active.fh.close()
        victims.push(active.segment)
      }
      for (const v of victims) {
        await unlink(v.file)
        this.segments.splice(this.segments.indexOf(v), 1)
      }
      if (this.fsync) await syncDir(this.dir)
    })
  }

  stats(): WalStats {
    return {
      segments: this.segments.length,
      bytes: this.segments.reduce((n, s) => n + s.bytes, 0),
      pendingAppends: this.pending.length + this.inFlight,
      fsyncs: this.fsyncs,
      appendedEvents: this.appendedEvents,
    }
  }

  /** Refuses new appends, waits for the queued ones, closes the active segment. */
  close(): Promise<void> {
    this.closing ??= this.exclusive(async () => {
      const active = this.active
      this.active = undefined
      await active?.fh.close()
    })
    return this.closing
  }

  /** Runs fn after everything queued before it (group writes, releases, close). */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn)
    this.queue = run.catch(() => undefined)
    return run
  }

  private async flushPending(): Promise<void> {
    this.flushScheduled = false
    const group = this.pending
    this.pending = []
    this.inFlight = group.length
    let i = 0
    try {
      while (i < group.length) {
        if (this.broken) throw this.broken
        const segment = await this.segmentFor(group[i]!)
        let end = segment.bytes + group[i]!.record.length
        let j = i + 1
        while (j < group.length && end + group[j]!.record.length <= this.segmentBytes) end += group[j++]!.record.length
        await this.write(group.slice(i, j))
        for (const p of group.slice(i, j)) p.resolve()
        this.inFlight -= j - i
        i = j
      }
    } catch (err) {
      const error = err instanceof WalError ? err : new WalError('io', `append failed: ${(err as Error).message}`, { cause: err })
      for (const p of group.slice(i)) p.reject(error)
      // A retry may reuse the failed seqs, as long as they still follow what is queued.
      this.lastQueuedSeq = this.pending.at(-1)?.lastSeq ?? this.durableSeq
    } finally {
      this.inFlight = 0
    }
  }

  /** The segment `next` goes to: the active one, or a new one named by next.firstSeq when it would overflow. */
  private async segmentFor(next: PendingAppend): Promise<Segment> {
    const current = this.active
    if (current && (current.segment.bytes === 0 || current.segment.bytes + next.record.length <= this.segmentBytes)) {
      return current.segment
    }
    if (current) {
      this.active = undefined
      await current.fh.close()
    }
    const firstSeq = next.firstSeq
    const name = `${String(firstSeq).padStart(20, '0')}.wal`
    const file = path.join(this.dir, name)
    const fh = await open(file, 'wx')
    try {
      if (this.fsync) await syncDir(this.dir)
    } catch (err) {
      await fh.close()
      await unlink(file).catch(() => undefined)
      throw err
    }
    const segment: Segment = { name, file, firstSeq, lastSeq: firstSeq - 1, bytes: 0 }
    this.segments.push(segment)
    this.active = { segment, fh }
    return segment
  }

  private async write(batch: readonly PendingAppend[]): Promise<void> {
    const { segment, fh } = this.active!
    const at = segment.bytes
    const buf = batch.length === 1 ? batch[0]!.record : Buffer.concat(batch.map((p) => p.record))
    try {
      let done = 0
      while (done < buf.length) {
        const { bytesWritten } = await fh.write(buf, done, buf.length - done, at + done)
        if (bytesWritten === 0) throw new Error('write made no progress')
        done += bytesWritten
      }
      if (this.fsync) {
        this.fsyncs++
        await fh.datasync()
      }
    } catch (err) {
      await this.rollBack(at)
      throw new WalError('io', `append failed: ${(err as Error).message}`, { cause: err })
    }
    segment.bytes = at + buf.length
    segment.lastSeq = batch[batch.length - 1]!.lastSeq
    this.durableSeq = segment.lastSeq
    this.appendedEvents += batch.reduce((n, p) => n + p.count, 0)
  }

  /** Cuts the active segment back to `at` (its last good record); drops it when that is empty. */
  private async rollBack(at: number): Promise<void> {
    const { segment, fh } = this.active!
    try {
      await fh.truncate(at)
      if (this.fsync) await fh.datasync()
      if (at === 0) {
        this.active = undefined
        this.segments.splice(this.segments.indexOf(segment), 1)
        await fh.close()
        await unlink(segment.file)
      }
    } catch (cause) {
      this.broken = new WalError('broken', `could not roll back ${segment.name} to byte ${at}; reopen the log`, { cause })
    }
  }

  private async writeCheckpoint(seq: number): Promise<void> {
    const file = path.join(this.dir, CHECKPOINT)
    const tmp = `${file}.tmp`
    const fh = await open(tmp, 'w')
    try {
      await fh.writeFile(JSON.stringify({ maxSeq: seq }))
      if (this.fsync) await fh.datasync()
    } finally {
      await fh.close()
    }
    await rename(tmp, file)
    if (this.fsync) await syncDir(this.dir)
    this.checkpointSeq = seq
  }
}

export function encodeRecord(payload: Buffer): Buffer {
  if (payload.length > MAX_RECORD_BYTES) throw new RangeError(`record of ${payload.length} bytes exceeds ${MAX_RECORD_BYTES}`)
  const record = Buffer.allocUnsafe(HEADER_BYTES + payload.length)
  record.writeUInt32LE(payload.length, 0)
  record.writeUInt32LE(crc32(payload), 4)
  payload.copy(record, HEADER_BYTES)
  return record
}

/** Records of a segment up to `limit` bytes; ends with a 'bad' item at the first torn or corrupt one. */
async function* scanRecords(fh: FileHandle, limit: number, prevSeq: number): AsyncGenerator<ScanItem> {
  const reader = new ChunkedReader(fh, limit)
  let at = 0
  while (at < limit) {
    const item = await readRecord(reader, at, prevSeq)
    yield item
    if (item.kind === 'bad') return
    prevSeq = item.events[item.events.length - 1]!.seq
    at = item.end
  }
}

async function readRecord(reader: ChunkedReader, at: number, prevSeq: number): Promise<ScanItem> {
  const bad = (reason: string): ScanItem => ({ kind: 'bad', offset: at, reason })
  const header = await reader.read(at, HEADER_BYTES)
  if (!header) return bad('torn header')
  const length = header.readUInt32LE(0)
  const crc = header.readUInt32LE(4)
  if (length === 0 || length > MAX_RECORD_BYTES) return bad(`bad length ${length}`)
  const payload = await reader.read(at + HEADER_BYTES, length)
  if (!payload) return bad('torn record')
  if (crc32(payload) !== crc) return bad('crc mismatch')
  try {
    return { kind: 'record', end: at + HEADER_BYTES + length, events: decodeEvents(payload, prevSeq) }
  } catch (err) {
    return bad((err as Error).message)
  }
}

function decodeEvents(payload: Buffer, prevSeq: number): StoredEvent[] {
  const parsed: unknown = JSON.parse(payload.toString('utf8'))
  if (!Array.isArray(parsed) || parsed.length === 0) throw new Error('payload is not a non-empty array')
  for (const e of parsed as Array<Partial<StoredEvent> | null>) {
    const seq = e?.seq
    if (typeof seq !== 'number' || !Number.isSafeInteger(seq) || seq <= prevSeq) throw new Error(`seq ${seq} out of order`)
    prevSeq = seq
  }
  return parsed as StoredEvent[]
}

/** Reads byte ranges of a file through a 1 MiB window, so scanning small records is cheap. */
export class ChunkedReader {
  private buf = Buffer.alloc(0)
  private start = 0

  constructor(
    private readonly fh: FileHandle,
    private readonly limit: number,
  ) {}

  /** Bytes [at, at + n), or undefined when the file (or limit) ends first. */
  async read(at: number, n: number): Promise<Buffer | undefined> {
    if (at + n > this.limit) return undefined
    if (at >= this.start && at + n <= this.start + this.buf.length) {
      return this.buf.subarray(at - this.start, at - this.start + n)
    }
    const size = Math.min(Math.max(n, READ_CHUNK_BYTES), this.limit - at)
    const next = Buffer.allocUnsafe(size)
    let got = 0
    while (got < size) {
      const { bytesRead } = await this.fh.read(next, got, size - got, at + got)
      if (bytesRead === 0) break
      got += bytesRead
    }
    if (got < n) return undefined
    this.buf = next.subarray(0, got)
    this.start = at
    return this.buf.subarray(0, n)
  }
}

async function readCheckpoint(dir: string): Promise<number> {
  let text: string
  try {
    text = await readFile(path.join(dir, CHECKPOINT), 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0
    throw err
  }
  // Written by rename, so it is whole or absent; anything else must not silently reset seqs.
  const seq = (() => {
    try {
      return (JSON.parse(text) as { maxSeq?: unknown }).maxSeq
    } catch {
      return undefined
    }
  })()
  if (typeof seq !== 'number' || !Number.isSafeInteger(seq) || seq < 0) {
    throw new WalError('corrupt', `${path.join(dir, CHECKPOINT)} is unreadable; refusing to restart seqs`)
  }
  return seq
}

/** Makes a created, renamed or deleted directory entry durable. */
export async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r')
  try {
    await fh.sync()
  } finally {
    await fh.close()
  }
}
