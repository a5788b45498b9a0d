import { mkdtemp, open, readdir, readFile, rm, stat, writeFile, type FileHandle } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { GroupCommit } from '../../src/durability/groupCommit.js'
import { encodeFrame, SegmentLog, type SegmentLogOptions } from '../../src/durability/segmentLog.js'

type Meta = { opened: number }

let dir: string
const opened: Array<SegmentLog<Meta>> = []

/** Opens the log in `dir`; its records are utf-8 strings, collected in `seen` in log order. */
async function openLog(extra: Partial<SegmentLogOptions<Meta>> = {}, seen: string[] = []): Promise<SegmentLog<Meta>> {
  const log = await SegmentLog.open<string, Meta>(
    { dir, extension: 'log', segmentBytes: 1 << 20, fsync: true, headers: false, handles: 'all', meta: (n) => ({ opened: n }), ...extra },
    {
      decode: (payload) => {
        const text = payload.toString('utf8')
        if (text.startsWith('!')) throw new Error('not a record')
        return text
      },
      apply: (text) => {
        seen.push(text)
        return text.startsWith('snapshot') ? 'supersedes' : undefined
      },
    },
  )
  opened.push(log)
  return log
}

/** Appends strings as frames, each new segment numbered one past the highest; returns where each landed. */
async function put(log: SegmentLog<Meta>, texts: string[], header?: string): Promise<Array<[string, number]>> {
  const placed: Array<[string, number]> = []
  await log.append(
    texts.map((t) => encodeFrame(Buffer.from(t))),
    {
      newSegment: () => ({ number: log.lastNumber + 1, ...(header ? { header: encodeFrame(Buffer.from(header)) } : {}) }),
      written: (i, segment, offset) => {
        placed[i] = [segment.name, offset]
      },
    },
  )
  return placed
}

async function files(): Promise<string[]> {
  return (await readdir(dir)).sort()
}

beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'relay-segment-log-'))
})
afterEach(async () => {
  vi.restoreAllMocks()
  await Promise.all(opened.splice(0).map((l) => l.close()))
  await rm(dir, { recursive: true, force: true })
})

const SEG1 = '00000000000000000001.log'
const SEG2 = '00000000000000000002.log'
const SEG3 = '00000000000000000003.log'

describe('frames', () => {
  it('are [u32 LE length][u32 LE crc32][payload]', () => {
    // crc32("123456789") is the CRC-32 check value 0xcbf43926.
    expect(encodeFrame(Buffer.from('123456789')).toString('hex')).toBe('09000000' + '2639f4cb' + '313233343536373839')
  })

  it('round-trip through a segment and a reopen, in order', async () => {
    const log = await openLog()
    expect(await put(log, ['alpha', 'bravo'])).toEqual([[SEG1, 0], [SEG1, 13]])
    expect(await put(log, ['charlie'])).toEqual([[SEG1, 26]])
    expect(log.readFrameSync(log.segments[0]!, 13, 13).toString()).toBe('bravo')
    await log.close()
    expect((await stat(path.join(dir, SEG1))).size).toBe(13 + 13 + 15)

    const seen: string[] = []
    const again = await openLog({}, seen)
    expect(seen).toEqual(['alpha', 'bravo', 'charlie'])
    expect(again.recovery).toEqual({ truncatedBytes: 0, damagedSegments: [], removedSegments: [] })
    expect(again.segments.map((s) => [s.name, s.bytes, s.records, s.meta])).toEqual([[SEG1, 41, 3, { opened: 1 }]])
  })
})

describe('recovery', () => {
  it('stops before a last record torn at any byte, cuts it off and appends after the good ones', async () => {
    const log = await openLog()
    await put(log, ['alpha', 'bravo', 'charlie'])
    await log.close()
    const file = path.join(dir, SEG1)
    const whole = await readFile(file)
    expect(whole.length).toBe(41)
    // 'charlie' is bytes 26..40: keep 0 to 14 of its 15 bytes.
    for (let kept = 0; kept < 15; kept++) {
      await writeFile(file, whole.subarray(0, 26 + kept))
      const seen: string[] = []
      const torn = await openLog({}, seen)
      expect(seen).toEqual(['alpha', 'bravo'])
      expect(torn.recovery).toEqual({ truncatedBytes: kept, damagedSegments: kept === 0 ? [] : [SEG1], removedSegments: [] })
      expect((await stat(file)).size).toBe(26)
      expect(await put(torn, ['delta'])).toEqual([[SEG1, 26]])
      await torn.close()
      const after: string[] = []
      await openLog({}, after)
      expect(after).toEqual(['alpha', 'bravo', 'delta'])
    }
  })

  it('detects a flipped payload byte by its crc and keeps only the records before it', async () => {
    const log = await openLog()
    await put(log, ['alpha', 'bravo', 'charlie'])
    await log.close()
    const file = path.join(dir, SEG1)
    const bytes = await readFile(file)
    bytes[13 + 8 + 2] ^= 0x20 // 'bravo' -> 'brAvo', its length field untouched
    await writeFile(file, bytes)

    const seen: string[] = []
    const again = await openLog({}, seen)
    expect(seen).toEqual(['alpha'])
    expect(again.recovery).toEqual({ truncatedBytes: 28, damagedSegments: [SEG1], removedSegments: [] })
    expect((await stat(file)).size).toBe(13)
  })

  it('cuts where decode refuses a payload, and removes segments left empty', async () => {
    const log = await openLog({ segmentBytes: 13 })
    await put(log, ['alpha', '!oops', 'bravo'])
    await log.close()
    expect(await files()).toEqual([SEG1, SEG2, SEG3])
    const seen: string[] = []
    const again = await openLog({ segmentBytes: 13 }, seen)
    expect(seen).toEqual(['alpha', 'bravo'])
    expect(again.recovery).toEqual({ truncatedBytes: 13, damagedSegments: [SEG2], removedSegments: [SEG2] })
    expect(await files()).toEqual([SEG1, SEG3])
  })

  it('reports a frame that went bad on disk after open when it is read back', async () => {
    const log = await openLog()
    await put(log, ['alpha', 'bravo'])
    const fh = await open(path.join(dir, SEG1), 'r+')
    await fh.write(Buffer.from('X'), 0, 1, 13 + 8)
    await fh.close()
    expect(log.readFrameSync(log.segments[0]!, 0, 13).toString()).toBe('alpha')
    expect(() => log.readFrameSync(log.segments[0]!, 13, 13)).toThrow(expect.objectContaining({ _tag: 'FrameCorrupt', reason: 'mismatch', offset: 13 }))
    await expect(log.frameReader(log.segments[0]!)(13, 13)).rejects.toMatchObject({ _tag: 'FrameCorrupt', reason: 'mismatch' })
    await expect(log.frameReader(log.segments[0]!)(13, 20)).rejects.toMatchObject({ _tag: 'FrameCorrupt', reason: 'short' })
  })

  it('forgets every segment before one whose record says it supersedes them', async () => {
    const log = await openLog({ segmentBytes: 20 })
    await put(log, ['alpha', 'bravo', 'snapshot!', 'charlie'])
    await log.close()
    expect(await files()).toEqual([SEG1, SEG2, '00000000000000000003.log', '00000000000000000004.log'])
    const seen: string[] = []
    const again = await openLog({ segmentBytes: 20 }, seen)
    expect(seen).toEqual(['alpha', 'bravo', 'snapshot!', 'charlie'])
    expect(again.recovery.removedSegments).toEqual([SEG1, SEG2])
    expect(await files()).toEqual(['00000000000000000003.log', '00000000000000000004.log'])
  })
})

describe('segments', () => {
  it('roll where the next frame would pass segmentBytes; a frame too big for any segment gets one alone', async () => {
    const log = await openLog({ segmentBytes: 39 })
    // 13-byte frames: three fill 39 bytes exactly, a fourth would not fit.
    const placed = [...(await put(log, ['rec-0', 'rec-1'])), ...(await put(log, ['rec-2', 'rec-3', 'rec-4', 'rec-5', 'rec-6']))]
    expect(placed).toEqual([[SEG1, 0], [SEG1, 13], [SEG1, 26], [SEG2, 0], [SEG2, 13], [SEG2, 26], [SEG3, 0]])
    expect(log.segments.map((s) => [s.name, s.bytes, s.records])).toEqual([[SEG1, 39, 3], [SEG2, 39, 3], [SEG3, 13, 1]])
    expect(log.fsyncs).toBe(4)
    expect(await put(log, ['x'.repeat(50)])).toEqual([['00000000000000000004.log', 0]])
    expect(log.segments.at(-1)!.bytes).toBe(58)
    expect(log.bytes).toBe(39 + 39 + 13 + 58)
  })

  it('start with their header frame, which is not a record', async () => {
    const log = await openLog({ segmentBytes: 40, headers: true })
    // A 12-byte header, then 13-byte records: two fit beside it.
    expect(await put(log, ['rec-0', 'rec-1', 'rec-2'], 'head')).toEqual([[SEG1, 12], [SEG1, 25], [SEG2, 12]])
    expect(log.segments.map((s) => [s.bytes, s.records])).toEqual([[38, 2], [25, 1]])
    await log.close()
    const seen: string[] = []
    const again = await openLog({ segmentBytes: 40, headers: true }, seen)
    expect(seen).toEqual(['head', 'rec-0', 'rec-1', 'head', 'rec-2'])
    expect(again.segments.map((s) => [s.bytes, s.records])).toEqual([[38, 2], [25, 1]])
  })

  it('take any frame while they hold no record yet', async () => {
    const log = await openLog({ segmentBytes: 20, headers: true })
    await log.rewrite(5, encodeFrame(Buffer.from('head')), async () => {}, () => {})
    expect(log.segments.map((s) => [s.name, s.bytes, s.records])).toEqual([['00000000000000000005.log', 12, 0]])
    // 38 bytes, past segmentBytes: into the empty segment, not a new one.
    expect(await put(log, ['y'.repeat(30)], 'head')).toEqual([['00000000000000000005.log', 12]])
    expect(await put(log, ['z'], 'head')).toEqual([['00000000000000000006.log', 12]])
  })

  it('go from the front, durably, and stay gone after a reopen', async () => {
    const log = await openLog({ segmentBytes: 40 })
    await put(log, ['rec-0', 'rec-1', 'rec-2', 'rec-3', 'rec-4', 'rec-5', 'rec-6'])
    await log.dropFront(2)
    expect(log.segments.map((s) => s.name)).toEqual([SEG3])
    expect(await files()).toEqual([SEG3])
    expect(await put(log, ['rec-7'])).toEqual([[SEG3, 13]])
    await log.close()
    const seen: string[] = []
    await openLog({ segmentBytes: 40 }, seen)
    expect(seen).toEqual(['rec-6', 'rec-7'])
  })

  it('are replaced by a rewrite: the snapshot is the only segment left', async () => {
    const log = await openLog({ segmentBytes: 40 })
    await put(log, ['rec-0', 'rec-1', 'rec-2', 'rec-3'])
    let installed: string | undefined
    await log.rewrite(
      7,
      encodeFrame(Buffer.from('snapshot')),
      async (put) => {
        expect(await put(encodeFrame(Buffer.from('rec-3')))).toBe(16)
      },
      (segment) => (installed = segment.name),
    )
    expect(installed).toBe('00000000000000000007.log')
    expect(await files()).toEqual(['00000000000000000007.log'])
    expect(log.segments.map((s) => [s.bytes, s.records])).toEqual([[29, 1]])
    expect(log.lastNumber).toBe(7)
  })

  it('cut a failed write back off the file and stay usable', async () => {
    const log = await openLog()
    await put(log, ['alpha'])
    const handle = await open(path.join(dir, 'probe'), 'w')
    const proto = Object.getPrototypeOf(handle) as FileHandle
    await handle.close()
    vi.spyOn(proto, 'datasync').mockRejectedValueOnce(Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' }))
    await expect(put(log, ['bravo', 'charlie'])).rejects.toMatchObject({ _tag: 'SegmentIoError', message: 'EIO: i/o error, fdatasync' })
    expect((await stat(path.join(dir, SEG1))).size).toBe(13)
    expect(log.broken).toBeUndefined()
    expect(await put(log, ['delta'])).toEqual([[SEG1, 13]])
  })
})

describe('group commit', () => {
  /** Counts fdatasyncs and holds each one until `release()` is called, logging to `events`. */
  async function gateFsyncs(events: string[]) {
    const handle = await open(path.join(dir, 'probe'), 'w')
    const proto = Object.getPrototypeOf(handle) as FileHandle
    await handle.close()
    const real = proto.datasync
    let opens: Array<() => void> = []
    vi.spyOn(proto, 'datasync').mockImplementation(async function (this: FileHandle) {
      events.push('fsync started')
      await new Promise<void>((resolve) => opens.push(resolve))
      await real.call(this)
      events.push('fsync done')
    })
    return {
      release: () => {
        const waiting = opens
        opens = []
        for (const open of waiting) open()
      },
    }
  }

  function committer(log: SegmentLog<Meta>) {
    return new GroupCommit<string, number>(async (jobs) => {
      await log.append(
        jobs.map((j) => encodeFrame(Buffer.from(j.input))),
        { newSegment: () => ({ number: log.lastNumber + 1 }), written: (i, _segment, offset) => jobs[i]!.resolve(offset) },
      )
    })
  }

  const ticks = async (n: number) => {
    for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r))
  }
  const until = async (done: () => boolean) => {
    for (let i = 0; !done(); i++) {
      if (i > 10_000) throw new Error('timed out')
      await new Promise((r) => setTimeout(r, 1))
    }
  }

  it('writes concurrent appends with one fsync, and resolves none before it is done', async () => {
    const log = await openLog()
    const events: string[] = []
    const fsyncs = await gateFsyncs(events)
    const commits = committer(log)
    const appends = Array.from({ length: 50 }, (_, i) => commits.submit(`event ${String(i).padStart(2, '0')}`).then((offset) => events.push(`resolved ${offset}`)))
    expect(commits.size).toBe(50)
    await until(() => events.length > 0)
    await ticks(20)
    expect(events).toEqual(['fsync started'])
    expect(commits.size).toBe(50)
    fsyncs.release()
    await Promise.all(appends)
    // 16-byte frames ("event NN"), resolved with their offsets, in call order.
    expect(events).toEqual(['fsync started', 'fsync done', ...Array.from({ length: 50 }, (_, i) => `resolved ${i * 16}`)])
    expect(log.fsyncs).toBe(1)
    expect(commits.size).toBe(0)
  })

  it('queues appends made while a group is being written for the next group', async () => {
    const log = await openLog()
    const events: string[] = []
    const fsyncs = await gateFsyncs(events)
    const commits = committer(log)
    const first = [0, 1, 2].map((i) => commits.submit(`first ${i}`).then(() => events.push(`first ${i}`)))
    await until(() => events.length > 0)
    const second = [0, 1, 2, 3].map((i) => commits.submit(`second ${i}`).then(() => events.push(`second ${i}`)))
    expect(commits.lastQueued).toBe('second 3')
    fsyncs.release()
    await Promise.all(first)
    await until(() => events.length >= 6)
    await ticks(20)
    expect(events).toEqual(['fsync started', 'fsync done', 'first 0', 'first 1', 'first 2', 'fsync started'])
    fsyncs.release()
    await Promise.all(second)
    expect(events.slice(6)).toEqual(['fsync done', 'second 0', 'second 1', 'second 2', 'second 3'])
    expect(log.fsyncs).toBe(2)
  })

  it('rejects what the writer left unsettled with its error, and keeps running later tasks in order', async () => {
    const order: string[] = []
    const commits = new GroupCommit<number, number>(async (jobs) => {
      jobs[0]!.resolve(10)
      throw new Error('disk on fire')
    })
    const results = await Promise.allSettled([commits.submit(1), commits.submit(2), commits.submit(3)])
    expect(results.map((r) => (r.status === 'fulfilled' ? r.value : (r.reason as Error).message))).toEqual([10, 'disk on fire', 'disk on fire'])
    await Promise.all([commits.exclusive(async () => order.push('a')), commits.exclusive(async () => order.push('b'))])
    expect(order).toEqual(['a', 'b'])

    const forgetful = new GroupCommit<number, number>(async () => {})
    await expect(forgetful.submit(1)).rejects.toMatchObject({ _tag: 'CommitUnsettled' })
  })
})
