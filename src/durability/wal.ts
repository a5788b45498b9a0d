import { mkdir, open, readdir, readFile, rename, rm } from 'node:fs/promises'
import path from 'node:path'
import { Data } from 'effect'
import type { StoredEvent } from '../types.js'
import { GroupCommit, type CommitJob } from './groupCommit.js'
import { io, messageOf } from './records.js'
import { encodeFrame, mapLogError, SegmentLog, syncDir, type LogRecovery, type Segment } from './segmentLog.js'

export type WalErrorCode = 'closed' | 'invalid' | 'io' | 'broken' | 'corrupt'

/**
 * - 'closed': append after close().
 * - 'invalid': seqs that do not ascend past every earlier append, or a batch JSON cannot express.
 * - 'io': a write or fsync failed; that write was cut back off the file and the log stays usable.
 * - 'broken': cutting it back failed too; the log refuses appends until it is reopened.
 * - 'corrupt': an unreadable checkpoint, or a record that went bad on disk after open().
 */
export class WalError extends Data.TaggedError('WalError')<{ readonly code: WalErrorCode; readonly message: string; readonly cause?: unknown }> {}

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
export type WalRecovery = LogRecovery

export interface WalStats {
  segments: number
  bytes: number
  pendingAppends: number
  fsyncs: number
  appendedEvents: number
}

/** Per segment (named by the lowest seq it may hold): the highest seq durably in it, one below the name's while empty. */
interface SegmentSeqs {
  lastSeq: number
}

interface PendingAppend {
  frame: Buffer
  firstSeq: number
  lastSeq: number
  count: number
}

const CHECKPOINT = 'checkpoint.json'

/**
 * A local write-ahead log: an event is acknowledged once it is here, before the store commits it.
 * A segment log (segmentLog.ts) whose records are JSON arrays of events, in segments named by
 * their first seq (so name order = seq order). A checkpoint file (replaced atomically by rename)
 * keeps maxSeq after every segment has been released.
 */
export class Wal {
  readonly recovery: WalRecovery
  private readonly rollOnReleaseBytes: number
  private readonly commits = new GroupCommit<PendingAppend, void>((jobs) => this.writeGroup(jobs))
  private durableSeq: number
  private lastQueuedSeq: number
  private checkpointSeq: number
  private closing: Promise<void> | undefined
  private appendedEvents = 0

  private constructor(
    private readonly dir: string,
    private readonly fsync: boolean,
    private readonly log: SegmentLog<SegmentSeqs>,
    segmentBytes: number,
    rollOnReleaseBytes: number | undefined,
    checkpointSeq: number,
  ) {
    this.rollOnReleaseBytes = Math.min(rollOnReleaseBytes ?? 1024 * 1024, segmentBytes)
    this.checkpointSeq = checkpointSeq
    this.durableSeq = Math.max(checkpointSeq, log.segments.at(-1)?.meta.lastSeq ?? 0)
    this.lastQueuedSeq = this.durableSeq
    this.recovery = log.recovery
  }

  /** Scans the segments, truncates a torn or corrupt tail at the last good record, finds maxSeq. */
  static async open(opts: WalOptions): Promise<Wal> {
    const { dir } = opts
    const fsync = opts.fsync ?? true
    const segmentBytes = opts.segmentBytes ?? 64 * 1024 * 1024
    await mkdir(dir, { recursive: true })
    await rm(path.join(dir, `${CHECKPOINT}.tmp`), { force: true })
    const checkpointSeq = await readCheckpoint(dir)
    let prevSeq = 0
    const log = await SegmentLog.open<StoredEvent[], SegmentSeqs>(
      { dir, extension: 'wal', segmentBytes, fsync, headers: false, handles: 'active', meta: (firstSeq) => ({ lastSeq: firstSeq - 1 }) },
      {
        decode: (payload, offset, segment) => decodeEvents(payload, offset === 0 ? Math.max(prevSeq, segment.number - 1) : segment.meta.lastSeq),
        apply: (events, segment) => {
          segment.meta.lastSeq = prevSeq = events[events.length - 1]!.seq
        },
      },
    )
    return new Wal(dir, fsync, log, segmentBytes, opts.rollOnReleaseBytes, checkpointSeq)
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
    if (this.closing) return Promise.reject(new WalError({ code: 'closed', message: 'write-ahead log is closed' }))
    if (this.log.broken) return Promise.reject(walError(this.log.broken, 'append'))
    if (events.length === 0) return Promise.resolve()
    let prev = this.lastQueuedSeq
    for (const e of events) {
      if (!Number.isSafeInteger(e.seq) || e.seq <= prev) {
        return Promise.reject(new WalError({ code: 'invalid', message: `seq ${e.seq} does not follow ${prev}: seqs must ascend` }))
      }
      prev = e.seq
    }
    let frame: Buffer
    try {
      frame = encodeFrame(Buffer.from(JSON.stringify(events)))
    } catch (cause) {
      return Promise.reject(new WalError({ code: 'invalid', message: `batch cannot be serialised: ${messageOf(cause)}`, cause }))
    }
    this.lastQueuedSeq = prev
    return this.commits.submit({ frame, firstSeq: events[0]!.seq, lastSeq: prev, count: events.length })
  }

  /**
   * Every event with seq > afterSeq, in order, in arrays of up to chunkSize, reading one record
   * at a time. Segments released while the replay runs are skipped.
   */
  async *replay(afterSeq = 0, chunkSize = 1000): AsyncGenerator<StoredEvent[]> {
    const snapshot = this.log.segments.filter((s) => s.meta.lastSeq > afterSeq).map((segment) => ({ segment, bytes: segment.bytes }))
    let chunk: StoredEvent[] = []
    try {
      for (const { segment, bytes } of snapshot) {
        let prevSeq = segment.number - 1
        const decode = (payload: Buffer) => {
          const events = decodeEvents(payload, prevSeq)
          prevSeq = events[events.length - 1]!.seq
          return events
        }
        for await (const item of this.log.scan(segment, bytes, decode)) {
          if (item.kind === 'bad') throw new WalError({ code: 'corrupt', message: `${segment.name} at byte ${item.offset}: ${item.reason}` })
          for (const e of item.value) {
            if (e.seq <= afterSeq) continue
            chunk.push(e)
            if (chunk.length >= chunkSize) {
              yield chunk
              chunk = []
            }
          }
        }
      }
    } catch (err) {
      throw walError(err, 'replay')
    }
    if (chunk.length > 0) yield chunk
  }

  /**
   * The store has committed every seq up to upToSeq: deletes the closed segments holding nothing
   * newer, and rolls (then deletes) the active one when it is fully committed and at least
   * rollOnReleaseBytes long. The checkpoint is brought up to maxSeq before anything is deleted.
   */
  release(upToSeq: number): Promise<void> {
    return this.commits.exclusive(async () => {
      const segments = this.log.segments
      let count = 0
      while (count < segments.length && this.released(segments[count]!, upToSeq)) count++
      if (count === 0) return
      try {
        if (this.durableSeq > this.checkpointSeq) await this.writeCheckpoint(this.durableSeq)
        await this.log.dropFront(count)
      } catch (err) {
        throw walError(err, 'release')
      }
    })
  }

  stats(): WalStats {
    return {
      segments: this.log.segments.length,
      bytes: this.log.bytes,
      pendingAppends: this.commits.size,
      fsyncs: this.log.fsyncs,
      appendedEvents: this.appendedEvents,
    }
  }

  /** Refuses new appends, waits for the queued ones, closes the active segment. */
  close(): Promise<void> {
    this.closing ??= this.commits.exclusive(() => this.log.close())
    return this.closing
  }

  /** Whether a segment may go once the store has everything up to upToSeq; the active one only when long enough. */
  private released(segment: Segment<SegmentSeqs>, upToSeq: number): boolean {
    return segment.meta.lastSeq <= upToSeq && (segment !== this.log.active || segment.bytes >= this.rollOnReleaseBytes)
  }

  private async writeGroup(jobs: ReadonlyArray<CommitJob<PendingAppend, void>>): Promise<void> {
    try {
      await this.log.append(
        jobs.map((j) => j.input.frame),
        {
          newSegment: (i) => ({ number: jobs[i]!.input.firstSeq }),
          written: (i, segment) => {
            const { lastSeq, count } = jobs[i]!.input
            segment.meta.lastSeq = lastSeq
            this.durableSeq = lastSeq
            this.appendedEvents += count
            jobs[i]!.resolve()
          },
        },
      )
    } catch (err) {
      // A retry may reuse the failed seqs, as long as they still follow what is queued.
      this.lastQueuedSeq = this.commits.lastQueued?.lastSeq ?? this.durableSeq
      throw walError(err, 'append')
    }
  }

  private async writeCheckpoint(seq: number): Promise<void> {
    const file = path.join(this.dir, CHECKPOINT)
    const tmp = `${file}.tmp`
    const fh = await io(open(tmp, 'w'))
    try {
      await io(fh.writeFile(JSON.stringify({ maxSeq: seq })))
      if (this.fsync) await io(fh.datasync())
    } finally {
      await io(fh.close())
    }
    await io(rename(tmp, file))
    if (this.fsync) await io(syncDir(this.dir))
    this.checkpointSeq = seq
  }
}

/** The events of a record, checked to be non-empty and to ascend from prevSeq. */
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

async function readCheckpoint(dir: string): Promise<number> {
  if (!(await readdir(dir)).includes(CHECKPOINT)) return 0
  const text = await readFile(path.join(dir, CHECKPOINT), 'utf8')
  // Written by rename, so it is whole or absent; anything else must not silently reset seqs.
  const seq = (() => {
    try {
      return (JSON.parse(text) as { maxSeq?: unknown }).maxSeq
    } catch {
      return undefined
    }
  })()
  if (typeof seq !== 'number' || !Number.isSafeInteger(seq) || seq < 0) {
    throw new WalError({ code: 'corrupt', message: `${path.join(dir, CHECKPOINT)} is unreadable; refusing to restart seqs` })
  }
  return seq
}

/** A WalError for a segment log error (others pass through as they are). */
function walError(err: unknown, doing: string): unknown {
  return mapLogError(err, {
    SegmentIoError: (e) => new WalError({ code: 'io', message: `${doing} failed: ${e.message}`, cause: e.cause }),
    SegmentLogBroken: (e) => new WalError({ code: 'broken', message: `${e.message}; reopen the log`, cause: e.cause }),
    FrameCorrupt: (e) => new WalError({ code: 'corrupt', message: e.message }),
  })
}
