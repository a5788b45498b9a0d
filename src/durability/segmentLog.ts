import { mkdir, open, readdir, rename, rm, unlink, type FileHandle } from 'node:fs/promises'
import path from 'node:path'
import { Data, Predicate } from 'effect'
import { ChunkedReader, FrameCorrupt, io, readFrameSync, scanFrames, SegmentIoError, syncDir, toIoError, writeFully, type Decode, type ScanItem } from './records.js'

/** Cutting a failed write back (or removing a segment that failed to start) failed too: writes are refused until reopen. */
export class SegmentLogBroken extends Data.TaggedError('SegmentLogBroken')<{ readonly message: string; readonly cause: unknown }> {}

export { encodeFrame, FrameCorrupt, HEADER_BYTES, MAX_RECORD_BYTES, SegmentIoError, syncDir, type ScanItem } from './records.js'

export type SegmentLogError = SegmentIoError | SegmentLogBroken | FrameCorrupt
type ErrorMap = { [K in SegmentLogError['_tag']]: (err: Extract<SegmentLogError, { _tag: K }>) => unknown }

/** A user's error for a segment log error (matched by tag); anything else is returned as it is. */
export function mapLogError(err: unknown, to: ErrorMap): unknown {
  if (Predicate.isTagged(err, 'SegmentIoError')) return to.SegmentIoError(err as SegmentIoError)
  if (Predicate.isTagged(err, 'SegmentLogBroken')) return to.SegmentLogBroken(err as SegmentLogBroken)
  if (Predicate.isTagged(err, 'FrameCorrupt')) return to.FrameCorrupt(err as FrameCorrupt)
  return err
}

export interface Segment<M> {
  /** From its file name `<20 digits>.<extension>`, so name order is number order. */
  readonly number: number
  readonly name: string
  /** Length of its good, durable prefix. */
  bytes: number
  /** Frames in it after its header frame. */
  records: number
  /** What the user of the log keeps per segment. */
  readonly meta: M
}

export interface SegmentLogOptions<M> {
  dir: string
  extension: string
  /** A segment takes no frame that would grow it past this, unless it holds no record yet. */
  segmentBytes: number
  /** fdatasync writes, and fsync the directory after creating, renaming or deleting files. */
  fsync: boolean
  /** Every segment starts with a header frame, given when it is started, that is not a record. */
  headers: boolean
  /** 'all': every segment's file stays open (readFrameSync); 'active': only the one appended to. */
  handles: 'all' | 'active'
  meta: (segmentNumber: number) => M
}

/** What open() repaired: bytes cut from torn or corrupt tails, and segment files it removed. */
export interface LogRecovery {
  truncatedBytes: number
  damagedSegments: string[]
  removedSegments: string[]
}

export interface Recover<T, M> {
  /** Throws when a checked payload is not a record: the segment is cut there, like a torn tail. */
  decode: (payload: Buffer, offset: number, segment: Segment<M>) => T
  /** Takes each good record in log order; 'supersedes' makes every earlier segment obsolete. */
  apply: (value: T, segment: Segment<M>, offset: number, end: number) => 'supersedes' | void
}

export interface AppendPlan<M> {
  /** Number and header frame of the segment started for frame `index`. */
  newSegment: (index: number) => { number: number; header?: Buffer }
  /** Frame `index` is durable at `offset` of `segment`; called in frame order. */
  written: (index: number, segment: Segment<M>, offset: number) => void
}

const WRITE_CHUNK_BYTES = 1 << 20

/**
 * An append-only log of checksummed frames (records.ts) in segment files of one directory. It
 * recovers by scanning every segment and cutting a torn or corrupt tail at its last good frame;
 * appends go to the last segment, a new one is started where a frame would not fit; a write is
 * fdatasync'd before it counts, and a failed one is cut back off the file. Front segments are
 * deleted once their user is done with them, and everything can be rewritten into one snapshot
 * segment (temp file, fdatasync, rename, directory fsync).
 */
export class SegmentLog<M> {
  readonly recovery: LogRecovery = { truncatedBytes: 0, damagedSegments: [], removedSegments: [] }
  private list: Array<Segment<M>> = []
  private readonly handles = new Map<Segment<M>, FileHandle>()
  private brokenBy: SegmentLogBroken | undefined
  private fsyncCount = 0
  private highestNumber = 0

  private constructor(private readonly opts: SegmentLogOptions<M>) {}

  /** Opens the directory's segments in order and replays their good records into `recover`. */
  static async open<T, M>(opts: SegmentLogOptions<M>, recover: Recover<T, M>): Promise<SegmentLog<M>> {
    const log = new SegmentLog(opts)
    try {
      await log.load(recover)
    } catch (err) {
      await log.close()
      throw err
    }
    return log
  }

  get segments(): ReadonlyArray<Segment<M>> {
    return this.list
  }

  /** The segment appends go to while it has room: the last one, if it is open. */
  get active(): Segment<M> | undefined {
    const last = this.list.at(-1)
    return last && this.handles.has(last) ? last : undefined
  }

  get bytes(): number {
    return this.list.reduce((n, s) => n + s.bytes, 0)
  }

  /** Data fdatasyncs so far (writes, headers, snapshots). */
  get fsyncs(): number {
    return this.fsyncCount
  }

  get broken(): SegmentLogBroken | undefined {
    return this.brokenBy
  }

  /** The highest segment number seen (also of removed ones). */
  get lastNumber(): number {
    return this.highestNumber
  }

  /** Whether a frame of `length` bytes goes into `segment` rather than into a new one. */
  accepts(segment: { bytes: number; records: number } | undefined, length: number): boolean {
    return segment !== undefined && (segment.records === 0 || segment.bytes + length <= this.opts.segmentBytes)
  }

  /**
   * Writes frames in order: as many as fit in the active segment with one write and one
   * fdatasync, then the rest into new segments. Throws at the first failure (SegmentIoError,
   * or SegmentLogBroken when the log refuses writes); frames already passed to written() stay.
   */
  async append(frames: readonly Buffer[], plan: AppendPlan<M>): Promise<void> {
    let i = 0
    while (i < frames.length) {
      if (this.brokenBy) throw this.brokenBy
      const segment = this.accepts(this.active, frames[i]!.length) ? this.active! : await this.start(plan.newSegment(i))
      let end = segment.bytes + frames[i]!.length
      let j = i + 1
      while (j < frames.length && end + frames[j]!.length <= this.opts.segmentBytes) end += frames[j++]!.length
      let offset = segment.bytes
      await this.write(segment, frames.slice(i, j))
      for (; i < j; i++) {
        plan.written(i, segment, offset)
        offset += frames[i]!.length
      }
    }
  }

  /** Deletes the first `count` segments, each durably before the next, so front ones go first. */
  async dropFront(count: number): Promise<void> {
    for (let k = 0; k < count; k++) {
      const segment = this.list[0]!
      await io(unlink(this.file(segment)))
      this.list.shift()
      await this.closeHandle(segment)
      if (this.opts.fsync) await io(syncDir(this.opts.dir))
    }
  }

  /**
   * Writes `header` and what `fill` puts (put resolves to the frame's offset) into a new segment
   * `number`, made durable under a temp name first; then it replaces every other segment, which
   * are deleted after `installed` has been told. Reopening forgets the older segments only if
   * the header says so (Recover.apply returns 'supersedes'), so a crash in between loses nothing.
   */
  async rewrite(
    number: number,
    header: Buffer,
    fill: (put: (frame: Buffer) => Promise<number>) => Promise<void>,
    installed: (segment: Segment<M>) => void,
  ): Promise<void> {
    const name = this.nameOf(number)
    const file = path.join(this.opts.dir, name)
    const temp = `${file}.tmp`
    this.highestNumber = Math.max(this.highestNumber, number)
    const fh = await io(open(temp, 'wx+'))
    let size = 0
    let records = -1
    try {
      let chunk: Buffer[] = []
      let chunkBytes = 0
      const flush = async () => {
        await writeFully(fh, Buffer.concat(chunk), size - chunkBytes)
        chunk = []
        chunkBytes = 0
      }
      const put = async (frame: Buffer) => {
        const at = size
        chunk.push(frame)
        chunkBytes += frame.length
        size += frame.length
        records++
        if (chunkBytes >= WRITE_CHUNK_BYTES) await flush()
        return at
      }
      await put(header)
      await fill(put)
      if (chunkBytes > 0) await flush()
      if (this.opts.fsync) {
        this.fsyncCount++
        await io(fh.datasync())
      }
      await io(rename(temp, file))
      if (this.opts.fsync) await io(syncDir(this.opts.dir))
    } catch (err) {
      await io(fh.close())
      await io(rm(temp, { force: true }))
      throw err
    }
    const snapshot: Segment<M> = { number, name, bytes: size, records, meta: this.opts.meta(number) }
    const old = this.list
    this.list = [snapshot]
    this.handles.set(snapshot, fh)
    installed(snapshot)
    for (const segment of old) {
      await this.closeHandle(segment)
      await io(unlink(this.file(segment)))
    }
    if (this.opts.fsync) await io(syncDir(this.opts.dir))
  }

  /** The checked payload of the frame at [offset, offset + length) of an open segment, read synchronously. */
  readFrameSync(segment: Segment<M>, offset: number, length: number): Buffer {
    const fh = this.handles.get(segment)
    if (!fh) throw new SegmentIoError({ message: `${segment.name} is not open`, cause: undefined })
    return readFrameSync(fh.fd, offset, length, segment.name)
  }

  /** Checked payloads of frames of an open segment, read through one window (for a pass over many). */
  frameReader(segment: Segment<M>): (offset: number, length: number) => Promise<Buffer> {
    const fh = this.handles.get(segment)
    if (!fh) throw new SegmentIoError({ message: `${segment.name} is not open`, cause: undefined })
    const reader = new ChunkedReader(fh, segment.bytes)
    return (offset, length) => reader.frame(offset, length, segment.name)
  }

  /**
   * The frames of a segment up to `limit`, through a handle of its own, so the pass survives the
   * segment being dropped meanwhile; nothing if it was dropped before the pass could start.
   */
  async *scan<T>(segment: Segment<M>, limit: number, decode: Decode<T>): AsyncGenerator<ScanItem<T>> {
    if (!this.list.includes(segment)) return
    let fh: FileHandle
    try {
      fh = await open(this.file(segment), 'r')
    } catch (cause) {
      if (!this.list.includes(segment)) return
      throw toIoError(cause)
    }
    try {
      yield* scanFrames(fh, limit, decode)
    } finally {
      await io(fh.close())
    }
  }

  /** Closes every file; the log is not used after this. */
  async close(): Promise<void> {
    for (const segment of [...this.handles.keys()]) await this.closeHandle(segment)
  }

  private async load<T>(recover: Recover<T, M>): Promise<void> {
    const { dir, extension } = this.opts
    const segmentName = new RegExp(`^\\d{20}\\.${extension}$`)
    const tempName = new RegExp(`^\\d{20}\\.${extension}\\.tmp$`)
    await io(mkdir(dir, { recursive: true }))
    const names = await io(readdir(dir))
    for (const name of names) if (tempName.test(name)) await io(rm(path.join(dir, name), { force: true }))
    const obsolete: Array<Segment<M>> = []
    for (const name of names.filter((n) => segmentName.test(n)).sort()) {
      const segment = await this.recoverSegment(name, recover, () => obsolete.push(...this.list.splice(0)))
      if (segment.bytes === 0) obsolete.push(segment)
      else this.list.push(segment)
    }
    for (const segment of obsolete) {
      await this.closeHandle(segment)
      await io(unlink(this.file(segment)))
      this.recovery.removedSegments.push(segment.name)
    }
    if (obsolete.length > 0 && this.opts.fsync) await io(syncDir(dir))
    if (this.opts.handles === 'active') for (const segment of this.list.slice(0, -1)) await this.closeHandle(segment)
  }

  /** Scans one segment into `recover` and cuts it at its last good frame. */
  private async recoverSegment<T>(name: string, recover: Recover<T, M>, supersede: () => void): Promise<Segment<M>> {
    const number = Number(name.slice(0, 20))
    this.highestNumber = Math.max(this.highestNumber, number)
    const segment: Segment<M> = { number, name, bytes: 0, records: 0, meta: this.opts.meta(number) }
    const fh = await io(open(this.file(segment), 'r+'))
    this.handles.set(segment, fh)
    const size = (await io(fh.stat())).size
    for await (const item of scanFrames(fh, size, (payload, offset) => recover.decode(payload, offset, segment))) {
      if (item.kind === 'bad') break
      if (recover.apply(item.value, segment, item.offset, item.end) === 'supersedes') supersede()
      if (!this.opts.headers || item.offset > 0) segment.records++
      segment.bytes = item.end
    }
    if (segment.bytes < size) {
      await io(fh.truncate(segment.bytes))
      if (this.opts.fsync) await io(fh.datasync())
      this.recovery.truncatedBytes += size - segment.bytes
      this.recovery.damagedSegments.push(name)
    }
    return segment
  }

  /** Creates segment `number` (with its header, durably) and makes it the active one. */
  private async start({ number, header }: { number: number; header?: Buffer }): Promise<Segment<M>> {
    const segment: Segment<M> = { number, name: this.nameOf(number), bytes: header?.length ?? 0, records: 0, meta: this.opts.meta(number) }
    this.highestNumber = Math.max(this.highestNumber, number)
    const fh = await io(open(this.file(segment), 'wx+'))
    try {
      if (header) {
        await writeFully(fh, header, 0)
        if (this.opts.fsync) {
          this.fsyncCount++
          await io(fh.datasync())
        }
      }
      if (this.opts.fsync) await io(syncDir(this.opts.dir))
    } catch (err) {
      await this.discard(segment, fh)
      throw err
    }
    const previous = this.active
    this.list.push(segment)
    this.handles.set(segment, fh)
    if (previous && this.opts.handles === 'active') await this.closeHandle(previous)
    return segment
  }

  private async discard(segment: Segment<M>, fh: FileHandle): Promise<void> {
    try {
      await fh.close()
      await unlink(this.file(segment))
    } catch (cause) {
      this.brokenBy = new SegmentLogBroken({ message: `could not remove ${segment.name} after it failed to start`, cause })
    }
  }

  private async write(segment: Segment<M>, frames: readonly Buffer[]): Promise<void> {
    const fh = this.handles.get(segment)!
    const at = segment.bytes
    const buf = frames.length === 1 ? frames[0]! : Buffer.concat(frames)
    try {
      await writeFully(fh, buf, at)
      if (this.opts.fsync) {
        this.fsyncCount++
        await io(fh.datasync())
      }
    } catch (err) {
      await this.rollBack(segment, fh, at)
      throw err
    }
    segment.bytes = at + buf.length
    segment.records += frames.length
  }

  /** Cuts a segment back to `at`, its last good frame; drops it when that leaves it empty. */
  private async rollBack(segment: Segment<M>, fh: FileHandle, at: number): Promise<void> {
    try {
      await fh.truncate(at)
      if (this.opts.fsync) await fh.datasync()
      if (at === 0) {
        this.list.splice(this.list.indexOf(segment), 1)
        this.handles.delete(segment)
        await fh.close()
        await unlink(this.file(segment))
      }
    } catch (cause) {
      this.brokenBy = new SegmentLogBroken({ message: `could not roll back ${segment.name} to byte ${at}`, cause })
    }
  }

  private async closeHandle(segment: Segment<M>): Promise<void> {
    const fh = this.handles.get(segment)
    this.handles.delete(segment)
    if (fh) await io(fh.close())
  }

  private nameOf(number: number): string {
    return `${String(number).padStart(20, '0')}.${this.opts.extension}`
  }

  private file(segment: Segment<M>): string {
    return path.join(this.opts.dir, segment.name)
  }
}
