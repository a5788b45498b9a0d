/** Record framing (checksummed frames), scanning that stops at a torn or corrupt tail, and the file I/O under a segment log. */
import { readSync } from 'node:fs'
import { open, type FileHandle } from 'node:fs/promises'
import { crc32 } from 'node:zlib'
import { Data } from 'effect'

/** A read, write, fsync or file operation of a segment log failed; `cause` is the system error. */
export class SegmentIoError extends Data.TaggedError('SegmentIoError')<{ readonly message: string; readonly cause: unknown }> {}
/** A whole frame read back by position no longer matches what was written there. */
export class FrameCorrupt extends Data.TaggedError('FrameCorrupt')<{
  readonly message: string
  /** 'short': the file ends first; 'mismatch': its length or crc is off. */
  readonly reason: 'short' | 'mismatch'
  readonly offset: number
}> {}

export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

export function toIoError(cause: unknown): SegmentIoError {
  return new SegmentIoError({ message: messageOf(cause), cause })
}

/** `op`, with its failure as a SegmentIoError. */
export async function io<T>(op: Promise<T>): Promise<T> {
  try {
    return await op
  } catch (cause) {
    throw toIoError(cause)
  }
}

/** A frame: [u32 LE payload length][u32 LE crc32(payload)][payload]. */
export const HEADER_BYTES = 8
export const MAX_RECORD_BYTES = 1 << 30
const READ_CHUNK_BYTES = 1 << 20

export type ScanItem<T> =
  | { kind: 'record'; value: T; offset: number; end: number }
  | { kind: 'bad'; offset: number; reason: string }

/** Turns a checked payload into a record; throws (an Error) when the payload is not one. */
export type Decode<T> = (payload: Buffer, offset: number) => T

export function encodeFrame(payload: Buffer): Buffer {
  if (payload.length > MAX_RECORD_BYTES) throw new RangeError(`record of ${payload.length} bytes exceeds ${MAX_RECORD_BYTES}`)
  const frame = Buffer.allocUnsafe(HEADER_BYTES + payload.length)
  frame.writeUInt32LE(payload.length, 0)
  frame.writeUInt32LE(crc32(payload), 4)
  payload.copy(frame, HEADER_BYTES)
  return frame
}

/** The payload of a whole frame read back from `offset` of file `name`, or FrameCorrupt. */
export function checkFrame(frame: Buffer, offset: number, name: string): Buffer {
  const payload = frame.subarray(HEADER_BYTES)
  if (frame.length < HEADER_BYTES || frame.readUInt32LE(0) !== payload.length || frame.readUInt32LE(4) !== crc32(payload)) {
    throw new FrameCorrupt({ message: `${name} at byte ${offset}: record no longer matches its length or crc`, reason: 'mismatch', offset })
  }
  return payload
}

function endsEarly(offset: number, name: string): FrameCorrupt {
  return new FrameCorrupt({ message: `${name} ends inside the record at byte ${offset}`, reason: 'short', offset })
}

/** Reads the frame [offset, offset + length) synchronously (a page-cached pread) and checks it. */
export function readFrameSync(fd: number, offset: number, length: number, name: string): Buffer {
  const frame = Buffer.allocUnsafe(length)
  let got = 0
  while (got < length) {
    let n: number
    try {
      n = readSync(fd, frame, got, length - got, offset + got)
    } catch (cause) {
      throw toIoError(cause)
    }
    if (n === 0) throw endsEarly(offset, name)
    got += n
  }
  return checkFrame(frame, offset, name)
}

/** Frames of a file up to `limit` bytes; ends with a 'bad' item at the first torn or corrupt one. */
export async function* scanFrames<T>(fh: FileHandle, limit: number, decode: Decode<T>): AsyncGenerator<ScanItem<T>> {
  const reader = new ChunkedReader(fh, limit)
  let at = 0
  while (at < limit) {
    const item = await readFrame(reader, at, decode)
    yield item
    if (item.kind === 'bad') return
    at = item.end
  }
}

async function readFrame<T>(reader: ChunkedReader, at: number, decode: Decode<T>): Promise<ScanItem<T>> {
  const bad = (reason: string): ScanItem<T> => ({ kind: 'bad', offset: at, reason })
  const header = await reader.read(at, HEADER_BYTES)
  if (!header) return bad('torn header')
  const length = header.readUInt32LE(0)
  const crc = header.readUInt32LE(4)
  if (length === 0 || length > MAX_RECORD_BYTES) return bad(`bad length ${length}`)
  const payload = await reader.read(at + HEADER_BYTES, length)
  if (!payload) return bad('torn record')
  if (crc32(payload) !== crc) return bad('crc mismatch')
  let value: T
  try {
    value = decode(payload, at)
  } catch (err) {
    return bad(messageOf(err))
  }
  return { kind: 'record', value, offset: at, end: at + HEADER_BYTES + length }
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
      const { bytesRead } = await io(this.fh.read(next, got, size - got, at + got))
      if (bytesRead === 0) break
      got += bytesRead
    }
    if (got < n) return undefined
    this.buf = next.subarray(0, got)
    this.start = at
    return this.buf.subarray(0, n)
  }

  /** The checked payload of the frame [at, at + length) of file `name`, or FrameCorrupt. */
  async frame(at: number, length: number, name: string): Promise<Buffer> {
    const frame = await this.read(at, length)
    if (!frame) throw endsEarly(at, name)
    return checkFrame(frame, at, name)
  }
}

export async function writeFully(fh: FileHandle, buf: Buffer, position: number): Promise<void> {
  let done = 0
  while (done < buf.length) {
    const { bytesWritten } = await io(fh.write(buf, done, buf.length - done, position + done))
    if (bytesWritten === 0) throw new SegmentIoError({ message: 'write made no progress', cause: undefined })
    done += bytesWritten
  }
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
