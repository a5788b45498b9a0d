import { spawn } from 'node:child_process'
import { appendFile, mkdtemp, open, readdir, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { StoredEvent } from '../../src/types.js'
import { Wal, WalError } from '../../src/durability/wal.js'

const WAL_MODULE = new URL('../../src/durability/wal.ts', import.meta.url).href

function ev(seq: number, pad = 0): StoredEvent {
  return {
    id: `00000000-0000-7000-8000-${String(seq).padStart(12, '0')}`,
    seq,
    event_type: 'cpu.sample',
    timestamp: new Date(Date.UTC(2026, 0, 1) + seq).toISOString(),
    source: 'host-1',
    data: { cpu: seq / 100, pad: 'x'.repeat(pad) },
    metadata: { n: seq },
  }
}

function range(from: number, to: number, pad = 0): StoredEvent[] {
  return Array.from({ length: to - from + 1 }, (_, i) => ev(from + i, pad))
}

async function collect(wal: Wal, afterSeq = 0, chunkSize = 1000): Promise<StoredEvent[][]> {
  const chunks: StoredEvent[][] = []
  for await (const chunk of wal.replay(afterSeq, chunkSize)) chunks.push(chunk)
  return chunks
}

async function seqs(wal: Wal, afterSeq = 0): Promise<number[]> {
  return (await collect(wal, afterSeq)).flat().map((e) => e.seq)
}

async function segmentFiles(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((n) => n.endsWith('.wal')).sort()
}

let dir: string
const opened: Wal[] = []
async function openWal(extra: Partial<Parameters<typeof Wal.open>[0]> = {}): Promise<Wal> {
  const wal = await Wal.open({ dir, ...extra })
  opened.push(wal)
  return wal
}

beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'relay-wal-'))
})
afterEach(async () => {
  await Promise.all(opened.splice(0).map((w) => w.close()))
  await rm(dir, { recursive: true, force: true })
})

describe('Wal', () => {
  it('replays what was appended, in order, in chunks, before and after reopening', async () => {
    const wal = await openWal()
    expect(wal.maxSeq).toBe(0)
    await wal.append(range(1, 3))
    await wal.append(range(4, 4))
    await wal.append([])
    await wal.append(range(5, 250))
    expect(wal.maxSeq).toBe(250)
    expect(wal.stats()).toMatchObject({ segments: 1, pendingAppends: 0, appendedEvents: 250, fsyncs: 3 })

    const chunks = await collect(wal, 0, 100)
    expect(chunks.map((c) => c.length)).toEqual([100, 100, 50])
    expect(chunks.flat()).toEqual(range(1, 250))
    expect(await seqs(wal, 247)).toEqual([248, 249, 250])
    await wal.close()

    const again = await openWal()
    expect(again.maxSeq).toBe(250)
    expect(again.recovery).toEqual({ truncatedBytes: 0, damagedSegments: [], removedSegments: [] })
    expect((await collect(again)).flat()).toEqual(range(1, 250))
  })

  it('refuses seqs that do not ascend, and appends after close', async () => {
    const wal = await openWal()
    await wal.append(range(1, 2))
    await expect(wal.append([ev(2)])).rejects.toMatchObject({ code: 'invalid' })
    await expect(wal.append([ev(4), ev(3)])).rejects.toMatchObject({ code: 'invalid' })
    await wal.append([ev(3)])
    await wal.close()
    await expect(wal.append([ev(4)])).rejects.toBeInstanceOf(WalError)
    await expect(wal.append([ev(4)])).rejects.toMatchObject({ code: 'closed' })
  })

  it('group-commits concurrent appends: far fewer fsyncs than appends, disk order = call order', async () => {
    const wal = await openWal()
    const appends = Array.from({ length: 1_000 }, (_, i) => wal.append([ev(i + 1)]))
    expect(wal.stats().pendingAppends).toBe(1_000)
    await Promise.all(appends)
    const stats = wal.stats()
    expect(stats).toMatchObject({ appendedEvents: 1_000, pendingAppends: 0 })
    expect(stats.fsyncs).toBeGreaterThan(0)
    expect(stats.fsyncs).toBeLessThanOrEqual(10)

    // Staggered: appends made while a write is in flight queue and go out together in the next.
    const staggered: Promise<void>[] = []
    for (let seq = 1_001; seq <= 2_000; seq++) {
      staggered.push(wal.append([ev(seq)]))
      if (seq % 5 === 0) await new Promise((r) => setImmediate(r))
    }
    await Promise.all(staggered)
    expect(wal.stats().fsyncs - stats.fsyncs).toBeLessThanOrEqual(200)
    expect(await seqs(wal)).toEqual(range(1, 2_000).map((e) => e.seq))
  })

  it('close() waits for appends already made', async () => {
    const wal = await openWal()
    const appends = Array.from({ length: 20 }, (_, i) => wal.append([ev(i + 1)]))
    await wal.close()
    expect(wal.stats().pendingAppends).toBe(0)
    await Promise.all(appends)
    const again = await openWal()
    expect(again.maxSeq).toBe(20)
  })

  it('drops a torn tail (garbage or a half-written record), keeps the good records, appends on', async () => {
    const wal = await openWal()
    await wal.append(range(1, 10))
    await wal.append(range(11, 20))
    await wal.close()
    const [segment] = await segmentFiles(dir)
    const file = path.join(dir, segment!)
    const good = (await stat(file)).size

    // A record header that promises more than follows, then junk.
    const torn = Buffer.alloc(8 + 13)
    torn.writeUInt32LE(4_000, 0)
    torn.write('{"half":', 8)
    await appendFile(file, torn)
    const reopened = await openWal()
    expect(reopened.recovery).toEqual({ truncatedBytes: torn.length, damagedSegments: [segment], removedSegments: [] })
    expect((await stat(file)).size).toBe(good)
    expect(reopened.maxSeq).toBe(20)
    await reopened.append(range(21, 25))
    await reopened.close()

    // Cut the last record in half.
    const whole = (await stat(file)).size
    await truncate(file, whole - 7)
    const cut = await openWal()
    expect(cut.recovery.truncatedBytes).toBe(whole - 7 - good)
    expect(cut.maxSeq).toBe(20)
    expect(await seqs(cut)).toEqual(range(1, 20).map((e) => e.seq))
    await cut.append(range(21, 22))
    await cut.close()
    expect(await seqs(await openWal())).toEqual(range(1, 22).map((e) => e.seq))
  })

  it('treats zero-filled tails (a crash after the file grew) as torn', async () => {
    const wal = await openWal()
    await wal.append(range(1, 5))
    await wal.close()
    const file = path.join(dir, (await segmentFiles(dir))[0]!)
    await appendFile(file, Buffer.alloc(4096))
    const reopened = await openWal()
    expect(reopened.recovery.truncatedBytes).toBe(4096)
    expect(await seqs(reopened)).toEqual([1, 2, 3, 4, 5])
  })

  it('detects a crc mismatch and keeps only the records before it', async () => {
    const wal = await openWal()
    await wal.append(range(1, 3))
    await wal.append(range(4, 6))
    await wal.append(range(7, 9))
    await wal.close()
    const file = path.join(dir, (await segmentFiles(dir))[0]!)
    const bytes = await readFile(file)
    const firstLength = 8 + bytes.readUInt32LE(0)
    // Flip one payload byte inside the second record; its length field stays plausible.
    const victim = firstLength + 8 + 20
    const fh = await open(file, 'r+')
    await fh.write(Buffer.from([bytes[victim]! ^ 0x01]), 0, 1, victim)
    await fh.close()

    const reopened = await openWal()
    expect(reopened.recovery.damagedSegments).toHaveLength(1)
    expect(reopened.recovery.truncatedBytes).toBe(bytes.length - firstLength)
    expect(await seqs(reopened)).toEqual([1, 2, 3])
    expect(reopened.maxSeq).toBe(3)
    await reopened.append(range(4, 4))
    expect(await seqs(reopened)).toEqual([1, 2, 3, 4])
  })

  it('rolls segments at segmentBytes, names them by first seq, and release() deletes fully committed ones', async () => {
    const wal = await openWal({ segmentBytes: 2_048, rollOnReleaseBytes: 1_024 })
    for (let seq = 1; seq <= 40; seq += 2) await wal.append(range(seq, seq + 1, 200))
    const names = await segmentFiles(dir)
    expect(names.length).toBeGreaterThan(5)
    expect(wal.stats().segments).toBe(names.length)
    const firstSeqs = names.map((n) => Number(n.slice(0, 20)))
    expect(firstSeqs[0]).toBe(1)
    expect([...firstSeqs].sort((a, b) => a - b)).toEqual(firstSeqs)
    for (const name of names) expect(name).toMatch(/^\d{20}\.wal$/)
    for (const name of names) expect((await stat(path.join(dir, name))).size).toBeLessThanOrEqual(2_048)

    // Committed up to 20: segments holding only seqs <= 20 go; the one straddling 20 stays.
    await wal.release(20)
    const kept = await segmentFiles(dir)
    const keptFirst = kept.map((n) => Number(n.slice(0, 20)))
    expect(keptFirst[0]).toBeLessThanOrEqual(21)
    expect(keptFirst[1]).toBeGreaterThan(20)
    expect(kept.length).toBeLessThan(names.length)
    expect(wal.stats().segments).toBe(kept.length)
    const replayed = await seqs(wal, 20)
    expect(replayed).toEqual(range(21, 40).map((e) => e.seq))
    const all = await seqs(wal)
    expect(all[all.length - 1]).toBe(40)
    expect(all[0]).toBeLessThanOrEqual(21)

    // Nothing committed beyond what is there: no change.
    await wal.release(20)
    expect(await segmentFiles(dir)).toEqual(kept)
  })

  it('keeps maxSeq after every segment is released, across a reopen', async () => {
    const wal = await openWal({ rollOnReleaseBytes: 1 })
    await wal.append(range(1, 100))
    await wal.release(99) // the active segment is not fully committed: it stays
    expect(await segmentFiles(dir)).toHaveLength(1)
    await wal.release(100)
    expect(await segmentFiles(dir)).toEqual([])
    expect(wal.stats()).toMatchObject({ segments: 0, bytes: 0 })
    expect(wal.maxSeq).toBe(100)
    expect(await seqs(wal)).toEqual([])
    await wal.close()

    const reopened = await openWal({ rollOnReleaseBytes: 1 })
    expect(reopened.maxSeq).toBe(100)
    await expect(reopened.append([ev(100)])).rejects.toMatchObject({ code: 'invalid' })
    await reopened.append([ev(101)])
    expect(await segmentFiles(dir)).toEqual(['00000000000000000101.wal'])
    await reopened.close()
    const third = await openWal()
    expect(third.maxSeq).toBe(101)
    expect(await seqs(third)).toEqual([101])
  })

  it('refuses to open over an unreadable checkpoint rather than restart seqs', async () => {
    await writeFile(path.join(dir, 'checkpoint.json'), '{"maxSeq": "garbage"')
    await expect(Wal.open({ dir })).rejects.toMatchObject({ code: 'corrupt' })
  })
})

describe('Wal under process failure', () => {
  it('keeps every acknowledged append when the process is SIGKILLed mid-write', async () => {
    const acked = new Set<number>()
    for (let round = 0; round < 3; round++) {
      const child = runChild(KILL_CHILD, { WAL_DIR: dir })
      const target = acked.size + 300 + Math.floor(Math.random() * 700)
      await child.lines((line) => {
        const [from, to] = line.split('-').map(Number) as [number, number]
        for (let s = from; s <= to; s++) acked.add(s)
        return acked.size >= target
      })
      child.kill()
      await child.exited
    }
    const wal = await openWal()
    const stored = await seqs(wal)
    const present = new Set(stored)
    const missing = [...acked].filter((s) => !present.has(s))
    expect(missing).toEqual([])
    // Strictly increasing across the three lives of the log.
    expect(stored.every((s, i) => i === 0 || s > stored[i - 1]!)).toBe(true)
    expect(wal.maxSeq).toBe(stored[stored.length - 1])
    await wal.append([ev(wal.maxSeq + 1)])
  }, 60_000)

  it('rejects a whole group when the disk refuses the write (EFBIG), rolls it back, and appends on', async () => {
    // `ulimit -f 64`: files the child writes may not exceed 64 KiB.
    const child = runChild(DISK_FULL_CHILD, { WAL_DIR: dir }, { fileSizeLimitKiB: 64 })
    let report: { group: Array<{ status: string; code?: string; cause?: string }>; size: number; bytes: number; retry: string } | undefined
    await child.lines((line) => {
      report = JSON.parse(line) as typeof report
      return true
    })
    await child.exited
    expect(report!.group).toHaveLength(20)
    for (const r of report!.group) expect(r).toEqual({ status: 'rejected', code: 'io', cause: 'EFBIG' })
    expect(report!.size).toBe(report!.bytes) // cut back to the last good record
    expect(report!.retry).toBe('ok')

    const wal = await openWal()
    expect(wal.recovery.truncatedBytes).toBe(0)
    expect(await seqs(wal)).toEqual([1, 2])
  }, 60_000)
})

/** Appends batches of 1–4 events, 16 in flight, printing "first-last" once each is durable. */
const KILL_CHILD = `
const { Wal } = await import(process.env.WAL_MODULE)
const wal = await Wal.open({ dir: process.env.WAL_DIR, segmentBytes: 64 * 1024 })
let seq = wal.maxSeq
const inflight = new Set()
for (;;) {
  while (inflight.size < 16) {
    const from = seq + 1
    const batch = []
    for (let i = 0, n = 1 + (from % 4); i < n; i++) {
      seq++
      batch.push({ id: 'e' + seq, seq, event_type: 'kill', timestamp: new Date().toISOString(), source: 'child', data: { pad: 'x'.repeat(seq % 500) }, metadata: {} })
    }
    const to = seq
    const p = wal.append(batch).then(() => {
      inflight.delete(p)
      process.stdout.write(from + '-' + to + '\\n')
    })
    inflight.add(p)
  }
  await Promise.race(inflight)
}
`

/** Fills a 64 KiB file limit: one record, then a group of 20 that cannot fit, then a small retry. */
const DISK_FULL_CHILD = `
import { statSync, readdirSync } from 'node:fs'
const { Wal } = await import(process.env.WAL_MODULE)
const dir = process.env.WAL_DIR
const wal = await Wal.open({ dir })
const ev = (seq, pad) => ({ id: 'e' + seq, seq, event_type: 'full', timestamp: '2026-01-01T00:00:00.000Z', source: 'child', data: { pad: 'x'.repeat(pad) }, metadata: {} })
await wal.append([ev(1, 5000)])
const group = await Promise.allSettled(Array.from({ length: 20 }, (_, i) => wal.append([ev(2 + i, 5000)])))
const file = dir + '/' + readdirSync(dir).find((n) => n.endsWith('.wal'))
const size = statSync(file).size
const bytes = wal.stats().bytes
const retry = await wal.append([ev(2, 10)]).then(() => 'ok', (e) => e.code + ': ' + e.message)
await wal.close()
process.stdout.write(JSON.stringify({
  group: group.map((r) => r.status === 'fulfilled' ? { status: r.status } : { status: r.status, code: r.reason.code, cause: r.reason.cause?.code }),
  size, bytes, retry,
}) + '\\n')
`

interface Child {
  /** Feeds stdout lines to onLine until it returns true; rejects if the child exits first. */
  lines(onLine: (line: string) => boolean, timeoutMs?: number): Promise<void>
  kill(): void
  exited: Promise<number | null>
}

function runChild(code: string, env: Record<string, string>, opts: { fileSizeLimitKiB?: number } = {}): Child {
  const nodeArgs = ['--import', 'tsx', '--input-type=module', '-e', code]
  const fullEnv = { ...process.env, ...env, WAL_MODULE }
  const proc =
    opts.fileSizeLimitKiB === undefined
      ? spawn(process.execPath, nodeArgs, { env: fullEnv, stdio: ['ignore', 'pipe', 'pipe'] })
      : spawn('bash', ['-c', `ulimit -f ${opts.fileSizeLimitKiB} && exec "$0" "$@"`, process.execPath, ...nodeArgs], {
          env: fullEnv,
          stdio: ['ignore', 'pipe', 'pipe'],
        })
  let stderr = ''
  proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (c) => resolve(c)))
  return {
    exited,
    kill: () => proc.kill('SIGKILL'),
    lines(onLine, timeoutMs = 30_000) {
      return new Promise<void>((resolve, reject) => {
        let buffered = ''
        const timer = setTimeout(() => finish(new Error(`child gave no answer in ${timeoutMs} ms: ${stderr}`)), timeoutMs)
        const onData = (d: Buffer) => {
          buffered += d.toString()
          const parts = buffered.split('\n')
          buffered = parts.pop()!
          for (const line of parts) if (onLine(line)) return finish()
        }
        const onExit = (c: number | null) => finish(new Error(`child exited (${c}) early: ${stderr}`))
        const finish = (err?: Error) => {
          clearTimeout(timer)
          proc.stdout.off('data', onData)
          proc.off('exit', onExit)
          if (err) reject(err)
          else resolve()
        }
        proc.stdout.on('data', onData)
        proc.on('exit', onExit)
      })
    },
  }
}
