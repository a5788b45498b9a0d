import { spawn } from 'node:child_process'
import { appendFile, copyFile, mkdir, mkdtemp, open, readdir, readFile, rm, stat, truncate } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import fc from 'fast-check'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import {
  DeadLetterQueue,
  DlqClosedError,
  DlqCorruptError,
  DlqFullError,
  DlqInvalidError,
  DlqNotFoundError,
  type DlqEntry,
  type DlqOptions,
} from '../../src/durability/dlq.js'
import type { StoredEvent } from '../../src/types.js'

const DLQ_MODULE = new URL('../../src/durability/dlq.ts', import.meta.url).href

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

function batch(from: number, count: number, pad = 0): StoredEvent[] {
  return Array.from({ length: count }, (_, i) => ev(from + i, pad))
}

/** Every entry, parked or live, paging through list() with its cursor. */
function all(dlq: DeadLetterQueue, opts: { sink?: string; parked?: boolean } = {}): DlqEntry[] {
  const out: DlqEntry[] = []
  for (;;) {
    const page = dlq.list({ ...opts, limit: 7, ...(out.length > 0 ? { afterId: out[out.length - 1]!.id } : {}) })
    out.push(...page)
    if (page.length < 7) return out
  }
}

async function segmentFiles(): Promise<string[]> {
  return (await readdir(dir)).filter((n) => n.endsWith('.dlq')).sort()
}

async function diskBytes(): Promise<number> {
  let n = 0
  for (const name of await segmentFiles()) n += (await stat(path.join(dir, name))).size
  return n
}

async function sizes(): Promise<Record<string, number>> {
  const out: Record<string, number> = {}
  for (const name of await segmentFiles()) out[name] = (await stat(path.join(dir, name))).size
  return out
}

let dir: string
const opened: DeadLetterQueue[] = []
async function openDlq(extra: Partial<DlqOptions> = {}): Promise<DeadLetterQueue> {
  const dlq = await DeadLetterQueue.open({ dir, ...extra })
  opened.push(dlq)
  return dlq
}

beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'relay-dlq-'))
})
afterEach(async () => {
  await Promise.all(opened.splice(0).map((d) => d.close()))
  await rm(dir, { recursive: true, force: true })
})

describe('DeadLetterQueue', () => {
  it('keeps appended entries, in order, across a reopen; ids keep increasing', async () => {
    const dlq = await openDlq()
    const a = await dlq.append({ sink: 'store', events: batch(1, 3), error: 'connect ECONNREFUSED', attempts: 4, firstFailedAt: '2020-01-01T00:00:00.000Z' })
    const b = await dlq.append({ sink: 'realtime', events: batch(4, 1), error: 'channel timed out', attempts: 1 })
    const c = await dlq.append({ sink: 'store', events: batch(5, 2, 100), error: 'connect ECONNREFUSED', attempts: 1 })
    expect([a.id, b.id, c.id]).toEqual([1, 2, 3])
    expect(a).toMatchObject({ sink: 'store', events: batch(1, 3), error: 'connect ECONNREFUSED', attempts: 4, firstFailedAt: '2020-01-01T00:00:00.000Z' })
    expect(Date.parse(a.lastFailedAt)).toBeGreaterThan(Date.parse(a.firstFailedAt))
    expect(b.firstFailedAt).toBe(b.lastFailedAt)
    expect(a.parked).toBeUndefined()
    const before = all(dlq)
    expect(before).toEqual([a, b, c])
    await dlq.close()

    const again = await openDlq()
    expect(again.recovery).toEqual({ truncatedBytes: 0, damagedSegments: [], removedSegments: [] })
    expect(all(again)).toEqual(before)
    const d = await again.append({ sink: 'store', events: batch(7, 1), error: 'x', attempts: 1 })
    expect(d.id).toBe(4)
  })

  it('markDone, markFailed, park and requeue are durable', async () => {
    const dlq = await openDlq()
    const ids: number[] = []
    for (let i = 0; i < 5; i++) ids.push((await dlq.append({ sink: 'store', events: batch(i * 10, 2), error: 'down', attempts: 1 })).id)
    await dlq.markDone(ids[0]!)
    await dlq.markFailed(ids[1]!, 'still down')
    await dlq.markFailed(ids[1]!, 'down again')
    await dlq.park(ids[2]!, 'invalid input syntax for type uuid')
    await dlq.park(ids[3]!, 'value too long')
    await dlq.markFailed(ids[3]!, 'parked entries still count attempts')
    expect(await dlq.requeue({ id: ids[3]! })).toBe(1)
    const state = all(dlq)
    expect(state.map((e) => e.id)).toEqual(ids.slice(1))
    expect(state[0]).toMatchObject({ attempts: 3, error: 'down again' })
    expect(Date.parse(state[0]!.lastFailedAt)).toBeGreaterThanOrEqual(Date.parse(state[0]!.firstFailedAt))
    expect(state[1]!.parked).toMatchObject({ reason: 'invalid input syntax for type uuid' })
    expect(state[2]).toMatchObject({ attempts: 2, error: 'parked entries still count attempts' })
    expect(state[2]!.parked).toBeUndefined()
    await dlq.close()

    const again = await openDlq()
    expect(all(again)).toEqual(state)
    await expect(again.markDone(ids[0]!)).rejects.toBeInstanceOf(DlqNotFoundError)
    await expect(again.markFailed(999, 'x')).rejects.toMatchObject({ _tag: 'DlqNotFoundError', code: 'notFound', id: 999 })
    await expect(again.park(999, 'x')).rejects.toBeInstanceOf(DlqNotFoundError)
    expect(await again.requeue({ sink: 'realtime' })).toBe(0)
    expect(await again.requeue()).toBe(1)
    expect(all(again, { parked: true })).toEqual([])
    await again.close()
    expect(all(await openDlq(), { parked: true })).toEqual([])
  })

  it('peekOldest gives the oldest live entry of a sink, skipping parked ones; requeue restores its place', async () => {
    const dlq = await openDlq()
    expect(dlq.peekOldest('store')).toBeUndefined()
    const s1 = await dlq.append({ sink: 'store', events: batch(1, 1), error: 'e', attempts: 1 })
    const r1 = await dlq.append({ sink: 'realtime', events: batch(2, 1), error: 'e', attempts: 1 })
    const s2 = await dlq.append({ sink: 'store', events: batch(3, 1), error: 'e', attempts: 1 })
    const s3 = await dlq.append({ sink: 'store', events: batch(4, 1), error: 'e', attempts: 1 })
    expect(dlq.peekOldest('store')).toEqual(s1)
    expect(dlq.peekOldest('realtime')).toEqual(r1)
    expect(dlq.peekOldest('nope')).toBeUndefined()

    await dlq.park(s1.id, 'poison')
    expect(dlq.peekOldest('store')?.id).toBe(s2.id)
    await dlq.markFailed(s2.id, 'again')
    expect(dlq.peekOldest('store')).toMatchObject({ id: s2.id, attempts: 2, error: 'again', events: s2.events })
    await dlq.markDone(s2.id)
    expect(dlq.peekOldest('store')?.id).toBe(s3.id)
    await dlq.requeue({ sink: 'store' })
    expect(dlq.peekOldest('store')?.id).toBe(s1.id)
    await dlq.markDone(s1.id)
    await dlq.markDone(s3.id)
    expect(dlq.peekOldest('store')).toBeUndefined()
    expect(dlq.peekOldest('realtime')?.id).toBe(r1.id)
  })

  it('lists a page at a time, oldest first, by sink and by parked', async () => {
    const dlq = await openDlq()
    for (let i = 1; i <= 25; i++) {
      const e = await dlq.append({ sink: i % 2 === 0 ? 'realtime' : 'store', events: batch(i, 1), error: 'e', attempts: 1 })
      if (i % 5 === 0) await dlq.park(e.id, 'poison')
    }
    expect(dlq.list().map((e) => e.id)).toEqual(Array.from({ length: 25 }, (_, i) => i + 1))
    expect(dlq.list({ limit: 3 }).map((e) => e.id)).toEqual([1, 2, 3])
    expect(dlq.list({ limit: 3, afterId: 3 }).map((e) => e.id)).toEqual([4, 5, 6])
    expect(dlq.list({ afterId: 25 })).toEqual([])
    expect(dlq.list({ sink: 'store', limit: 4 }).map((e) => e.id)).toEqual([1, 3, 5, 7])
    expect(dlq.list({ parked: true }).map((e) => e.id)).toEqual([5, 10, 15, 20, 25])
    expect(dlq.list({ parked: true, sink: 'realtime' }).map((e) => e.id)).toEqual([10, 20])
    expect(dlq.list({ parked: false, afterId: 8, limit: 3 }).map((e) => e.id)).toEqual([9, 11, 12])
    expect(all(dlq, { sink: 'store', parked: false }).map((e) => e.id)).toEqual([1, 3, 7, 9, 11, 13, 17, 19, 21, 23])
  })

  it('reports depth, events, parked, oldest, bytes on disk and reasons', async () => {
    const dlq = await openDlq()
    expect(dlq.stats()).toMatchObject({ depth: 0, events: 0, parked: 0, oldestAt: undefined, bytes: 0, reasons: {} })
    const a = await dlq.append({ sink: 'store', events: batch(1, 3), error: 'ECONNREFUSED', attempts: 1, firstFailedAt: '2026-01-01T00:00:01.000Z' })
    await dlq.append({ sink: 'realtime', events: batch(4, 2), error: 'ECONNREFUSED', attempts: 1, firstFailedAt: '2026-01-01T00:00:02.000Z' })
    const c = await dlq.append({ sink: 'store', events: batch(6, 4), error: 'timeout', attempts: 1, firstFailedAt: '2026-01-01T00:00:03.000Z' })
    await dlq.park(c.id, 'rejected: bad uuid')
    expect(dlq.stats()).toMatchObject({
      depth: 2,
      events: 5,
      parked: 1,
      oldestAt: '2026-01-01T00:00:01.000Z',
      reasons: { ECONNREFUSED: 2, 'rejected: bad uuid': 1 },
    })
    expect(dlq.stats().bytes).toBe(await diskBytes())
    await dlq.markDone(a.id)
    expect(dlq.stats()).toMatchObject({ depth: 1, events: 2, oldestAt: '2026-01-01T00:00:02.000Z', reasons: { ECONNREFUSED: 1, 'rejected: bad uuid': 1 } })
    expect(dlq.stats().bytes).toBe(await diskBytes())

    for (let i = 0; i < 30; i++) await dlq.append({ sink: 'store', events: batch(100 + i, 1), error: `error #${i % 25}`, attempts: 1 })
    const reasons = dlq.stats().reasons
    expect(Object.keys(reasons)).toHaveLength(20)
    expect(reasons['error #0']).toBe(2)
  })

  it('refuses appends past maxBytes with DlqFullError, writing nothing of them', async () => {
    const dlq = await openDlq({ maxBytes: 16 * 1024 })
    expect(dlq.nearlyFull).toBe(false)
    const kept: DlqEntry[] = []
    let full: unknown
    for (let i = 0; full === undefined; i++) {
      try {
        kept.push(await dlq.append({ sink: 'store', events: batch(i * 10, 2, 400), error: 'down', attempts: 1 }))
      } catch (err) {
        full = err
      }
    }
    expect(full).toBeInstanceOf(DlqFullError)
    expect(full).toMatchObject({ _tag: 'DlqFullError', code: 'full', maxBytes: 16 * 1024 })
    expect(dlq.stats().bytes).toBeLessThanOrEqual(16 * 1024)
    expect(dlq.stats().bytes).toBe(await diskBytes())
    expect(dlq.nearlyFull).toBe(true)

    // A concurrent group: the small ones that fit are written, the big ones are refused whole.
    const before = await sizes()
    const results = await Promise.allSettled([
      dlq.append({ sink: 'store', events: batch(1000, 2, 400), error: 'down', attempts: 1 }),
      dlq.append({ sink: 'store', events: batch(2000, 20, 400), error: 'down', attempts: 1 }),
    ])
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected'])
    expect(await sizes()).toEqual(before)
    await expect(dlq.append({ sink: 'store', events: batch(1, 100, 1000), error: 'x', attempts: 1 })).rejects.toBeInstanceOf(DlqFullError)
    expect(await sizes()).toEqual(before)
    expect(all(dlq)).toEqual(kept)

    // Done entries make room again (the dead bytes are compacted away once they are worth it).
    for (const e of kept) await dlq.markDone(e.id)
    expect(dlq.nearlyFull).toBe(false)
    const next = await dlq.append({ sink: 'store', events: batch(3000, 2, 400), error: 'down', attempts: 1 })
    expect(next.id).toBe(kept[kept.length - 1]!.id + 1)
    await dlq.close()
    const again = await openDlq({ maxBytes: 16 * 1024 })
    expect(again.recovery.truncatedBytes).toBe(0)
    expect(all(again)).toEqual([next])
  })

  it('rejects what it cannot hold and calls after close', async () => {
    const dlq = await openDlq()
    await expect(dlq.append({ sink: 'store', events: [], error: 'e', attempts: 1 })).rejects.toBeInstanceOf(DlqInvalidError)
    await expect(dlq.append({ sink: '', events: batch(1, 1), error: 'e', attempts: 1 })).rejects.toMatchObject({ code: 'invalid' })
    const cyclic = ev(1) as StoredEvent & { data: Record<string, unknown> }
    cyclic.data.self = cyclic
    await expect(dlq.append({ sink: 'store', events: [cyclic], error: 'e', attempts: 1 })).rejects.toMatchObject({ code: 'invalid' })
    const pending = dlq.append({ sink: 'store', events: batch(1, 1), error: 'e', attempts: 1 })
    await dlq.close()
    await expect(pending).resolves.toMatchObject({ id: 1 })
    await expect(dlq.append({ sink: 'store', events: batch(2, 1), error: 'e', attempts: 1 })).rejects.toBeInstanceOf(DlqClosedError)
    await expect(dlq.markDone(1)).rejects.toMatchObject({ code: 'closed' })
    expect(() => dlq.peekOldest('store')).toThrow(DlqClosedError)
    expect(all(await openDlq()).map((e) => e.id)).toEqual([1])
  })

  it('group-commits concurrent writes: far fewer fsyncs than appends', async () => {
    const dlq = await openDlq()
    const start = dlq.stats().fsyncs
    const entries = await Promise.all(Array.from({ length: 200 }, (_, i) => dlq.append({ sink: 'store', events: batch(i, 1), error: 'e', attempts: 1 })))
    const afterAppends = dlq.stats().fsyncs
    expect(afterAppends - start).toBeGreaterThan(0)
    expect(afterAppends - start).toBeLessThanOrEqual(10)
    expect(entries.map((e) => e.id)).toEqual(Array.from({ length: 200 }, (_, i) => i + 1))
    await Promise.all(entries.map((e) => dlq.markDone(e.id)))
    expect(dlq.stats().fsyncs - afterAppends).toBeLessThanOrEqual(10)
    expect(dlq.stats().depth).toBe(0)
  })

  it('drops a torn tail at reopen and keeps the records before it', async () => {
    const dlq = await openDlq()
    const a = await dlq.append({ sink: 'store', events: batch(1, 2), error: 'e', attempts: 1 })
    const b = await dlq.append({ sink: 'store', events: batch(3, 2), error: 'e', attempts: 1 })
    await dlq.close()
    const [segment] = await segmentFiles()
    const file = path.join(dir, segment!)
    const good = (await stat(file)).size

    // A header that promises more than follows.
    const torn = Buffer.alloc(8 + 13)
    torn.writeUInt32LE(4_000, 0)
    torn.write('{"t":"done",', 8)
    await appendFile(file, torn)
    const reopened = await openDlq()
    expect(reopened.recovery).toEqual({ truncatedBytes: torn.length, damagedSegments: [segment], removedSegments: [] })
    expect((await stat(file)).size).toBe(good)
    expect(all(reopened)).toEqual([a, b])
    await reopened.markDone(a.id)
    await reopened.close()

    // The done record cut in half: it never happened, a is live again.
    await truncate(file, (await stat(file)).size - 3)
    const cut = await openDlq()
    expect(cut.recovery.truncatedBytes).toBeGreaterThan(0)
    expect(all(cut)).toEqual([a, b])
    await cut.close()

    // Zeros after the last record (a crash after the file grew).
    await appendFile(file, Buffer.alloc(4096))
    const zeroed = await openDlq()
    expect(zeroed.recovery.truncatedBytes).toBe(4096)
    expect(all(zeroed)).toEqual([a, b])
    const c = await zeroed.append({ sink: 'store', events: batch(5, 1), error: 'e', attempts: 1 })
    expect(c.id).toBe(3)
    await zeroed.close()
    expect(all(await openDlq())).toEqual([a, b, c])
  })

  it('reports a record that went bad on disk after open instead of returning wrong events', async () => {
    const dlq = await openDlq()
    await dlq.append({ sink: 'store', events: [ev(1, 10)], error: 'e', attempts: 1 })
    await dlq.append({ sink: 'realtime', events: [{ ...ev(2), source: 'needle-in-the-file' }], error: 'e', attempts: 1 })
    const file = path.join(dir, (await segmentFiles())[0]!)
    const bytes = await readFile(file)
    const at = bytes.indexOf('needle-in-the-file')
    const fh = await open(file, 'r+')
    await fh.write(Buffer.from('N'), 0, 1, at)
    await fh.close()
    expect(dlq.peekOldest('store')?.id).toBe(1)
    expect(() => dlq.peekOldest('realtime')).toThrow(DlqCorruptError)
  })

  it('keeps disk use bounded over many append/done cycles, deleting dead segments', async () => {
    const segmentBytes = 8 * 1024
    const dlq = await openDlq({ segmentBytes })
    let maxBytes = 0
    for (let i = 0; i < 400; i++) {
      const e = await dlq.append({ sink: 'store', events: batch(i * 5, 5, 40), error: 'down', attempts: 1 })
      await dlq.markDone(e.id)
      maxBytes = Math.max(maxBytes, dlq.stats().bytes)
    }
    expect(maxBytes).toBeLessThanOrEqual(2 * segmentBytes)
    expect(dlq.stats()).toMatchObject({ depth: 0, maintenanceError: undefined })
    expect(dlq.stats().bytes).toBe(await diskBytes())
    await dlq.close()

    const again = await openDlq({ segmentBytes })
    expect(all(again)).toEqual([])
    expect((await again.append({ sink: 'store', events: batch(1, 1), error: 'e', attempts: 1 })).id).toBe(401)
  })

  it('compacts when a long-lived parked entry pins old segments; state is intact after reopen', async () => {
    const segmentBytes = 8 * 1024
    const dlq = await openDlq({ segmentBytes })
    const poison = await dlq.append({ sink: 'store', events: batch(1, 3, 200), error: 'rejected', attempts: 1 })
    await dlq.park(poison.id, 'invalid input syntax')
    await dlq.markFailed(poison.id, 'still invalid')
    const slow = await dlq.append({ sink: 'realtime', events: batch(10, 2), error: 'down', attempts: 1 })
    const [first] = await segmentFiles()
    let maxBytes = 0
    for (let i = 0; i < 400; i++) {
      const e = await dlq.append({ sink: 'store', events: batch(100 + i * 5, 5, 40), error: 'down', attempts: 1 })
      if (i % 50 === 0) await dlq.markFailed(slow.id, `down ${i}`)
      await dlq.markDone(e.id)
      maxBytes = Math.max(maxBytes, dlq.stats().bytes)
    }
    expect(maxBytes).toBeLessThanOrEqual(3 * segmentBytes)
    // The segment the poison entry was appended to has been rewritten away, more than once.
    const now = await segmentFiles()
    expect(now.length).toBeLessThanOrEqual(2)
    expect(now).not.toContain(first)
    expect(Number(now[0]!.slice(0, 20))).toBeGreaterThan(10)
    const state = all(dlq)
    expect(state.map((e) => e.id)).toEqual([poison.id, slow.id])
    expect(state[0]).toMatchObject({ parked: { reason: 'invalid input syntax' }, attempts: 2, error: 'still invalid', events: poison.events })
    expect(state[1]).toMatchObject({ attempts: 9, error: 'down 350', events: slow.events })
    expect(dlq.stats().bytes).toBe(await diskBytes())
    await dlq.close()

    const again = await openDlq({ segmentBytes })
    expect(again.recovery.removedSegments).toEqual([])
    expect(all(again)).toEqual(state)
    expect(again.peekOldest('store')).toBeUndefined()
    expect(again.peekOldest('realtime')?.id).toBe(slow.id)
    expect((await again.append({ sink: 'store', events: batch(1, 1), error: 'e', attempts: 1 })).id).toBe(403)
  })

  it('a compaction interrupted before the old segments were deleted loses and resurrects nothing', async () => {
    const segmentBytes = 4 * 1024
    const dlq = await openDlq({ segmentBytes })
    const keep = await dlq.append({ sink: 'store', events: batch(1, 2, 100), error: 'e', attempts: 1 })
    await dlq.park(keep.id, 'poison')
    const live = await dlq.append({ sink: 'store', events: batch(3, 1), error: 'e', attempts: 1 })
    // Fill segments with entries that will be done, copying every file as it appears.
    const copies = path.join(dir, 'copies')
    await rm(copies, { recursive: true, force: true })
    await mkdir(copies)
    const done: number[] = []
    for (let i = 0; i < 30; i++) done.push((await dlq.append({ sink: 'store', events: batch(10 + i, 1, 150), error: 'e', attempts: 1 })).id)
    for (const name of await segmentFiles()) await copyFile(path.join(dir, name), path.join(copies, name))
    const segmentsBefore = await segmentFiles()
    expect(segmentsBefore.length).toBeGreaterThan(2)
    for (const id of done) await dlq.markDone(id)
    const after = await segmentFiles()
    expect(after.length).toBeLessThan(segmentsBefore.length)
    const state = all(dlq)
    expect(state.map((e) => e.id)).toEqual([keep.id, live.id])
    await dlq.close()

    // Put back the pre-compaction segments next to the snapshot (as if deleting them was cut short).
    for (const name of segmentsBefore) if (!after.includes(name)) await copyFile(path.join(copies, name), path.join(dir, name))
    await rm(copies, { recursive: true })
    const again = await openDlq({ segmentBytes })
    expect(all(again)).toEqual(state)
    expect(again.recovery.removedSegments.length).toBeGreaterThan(0)
    expect(await segmentFiles()).toEqual(after)
  })

  it('matches a simple model over random operations and reopens', async () => {
    type Op =
      | { t: 'append'; sink: 'a' | 'b'; n: number; pad: number }
      | { t: 'done' | 'failed' | 'park'; pick: number }
      | { t: 'requeue'; sink: 'a' | 'b' | undefined }
      | { t: 'churn'; k: number }
      | { t: 'reopen' }
    const op: fc.Arbitrary<Op> = fc.oneof(
      { weight: 4, arbitrary: fc.record({ t: fc.constant('append' as const), sink: fc.constantFrom('a' as const, 'b' as const), n: fc.integer({ min: 1, max: 4 }), pad: fc.integer({ min: 0, max: 200 }) }) },
      { weight: 3, arbitrary: fc.record({ t: fc.constant('done' as const), pick: fc.nat() }) },
      { weight: 2, arbitrary: fc.record({ t: fc.constantFrom('failed' as const, 'park' as const), pick: fc.nat() }) },
      { weight: 1, arbitrary: fc.record({ t: fc.constant('requeue' as const), sink: fc.constantFrom('a' as const, 'b' as const, undefined) }) },
      { weight: 1, arbitrary: fc.record({ t: fc.constant('churn' as const), k: fc.integer({ min: 1, max: 12 }) }) },
      { weight: 1, arbitrary: fc.constant({ t: 'reopen' as const }) },
    )
    interface ModelEntry { id: number; sink: string; events: StoredEvent[]; attempts: number; error: string; parked: string | undefined }

    await fc.assert(
      fc.asyncProperty(fc.array(op, { maxLength: 80 }), async (ops) => {
        await rm(dir, { recursive: true, force: true })
        const options = { dir, segmentBytes: 1024, fsync: false }
        let dlq = await DeadLetterQueue.open(options)
        const model = new Map<number, ModelEntry>()
        let seq = 0
        let step = 0
        const check = () => {
          const got = all(dlq).map((e) => ({ id: e.id, sink: e.sink, events: e.events, attempts: e.attempts, error: e.error, parked: e.parked?.reason }))
          expect(got).toEqual([...model.values()])
          const live = [...model.values()].filter((e) => e.parked === undefined)
          expect(dlq.stats()).toMatchObject({ depth: live.length, events: live.reduce((n, e) => n + e.events.length, 0), parked: model.size - live.length })
          for (const sink of ['a', 'b']) expect(dlq.peekOldest(sink)?.id).toBe(live.find((e) => e.sink === sink)?.id)
        }
        try {
          for (const o of ops) {
            step++
            const ids = [...model.keys()]
            if (o.t === 'append') {
              const events = batch(seq + 1, o.n, o.pad)
              seq += o.n
              const e = await dlq.append({ sink: o.sink, events, error: 'down', attempts: 1 })
              model.set(e.id, { id: e.id, sink: o.sink, events, attempts: 1, error: 'down', parked: undefined })
            } else if (o.t === 'requeue') {
              const n = await dlq.requeue(o.sink === undefined ? {} : { sink: o.sink })
              const hits = [...model.values()].filter((e) => e.parked !== undefined && (o.sink === undefined || e.sink === o.sink))
              expect(n).toBe(hits.length)
              for (const e of hits) e.parked = undefined
            } else if (o.t === 'churn') {
              // Entries that come and go (concurrently, so grouped): dead bytes behind the long-lived ones.
              const churned = await Promise.all(Array.from({ length: o.k }, (_, i) => dlq.append({ sink: 'b', events: batch(seq + i + 1, 1, 100), error: 'blip', attempts: 1 })))
              seq += o.k
              await Promise.all(churned.map((e) => dlq.markDone(e.id)))
            } else if (o.t === 'reopen') {
              await dlq.close()
              dlq = await DeadLetterQueue.open(options)
              expect(dlq.recovery.truncatedBytes).toBe(0)
            } else if (ids.length > 0) {
              const id = ids[o.pick % ids.length]!
              const m = model.get(id)!
              if (o.t === 'done') {
                await dlq.markDone(id)
                model.delete(id)
              } else if (o.t === 'failed') {
                await dlq.markFailed(id, `failed at ${step}`)
                m.attempts++
                m.error = `failed at ${step}`
              } else {
                await dlq.park(id, `poison at ${step}`)
                m.parked = `poison at ${step}`
              }
            }
            check()
          }
          await dlq.close()
          dlq = await DeadLetterQueue.open(options)
          check()
          expect(dlq.stats().maintenanceError).toBeUndefined()
        } finally {
          await dlq.close()
        }
      }),
      { numRuns: 200 },
    )
  })
})

describe('DeadLetterQueue under process failure', () => {
  it('keeps every acknowledged append, done and park when the process is SIGKILLed', async () => {
    const appended = new Set<number>()
    const done = new Set<number>()
    const parked = new Set<number>()
    for (let round = 0; round < 3; round++) {
      const child = runChild(KILL_CHILD, { DLQ_DIR: dir })
      const target = appended.size + 300 + Math.floor(Math.random() * 500)
      await child.lines((line) => {
        const [kind, id] = line.split(' ') as [string, string]
        const set = kind === 'a' ? appended : kind === 'd' ? done : parked
        if (kind === 'a') expect(appended.has(Number(id))).toBe(false) // ids never reused across lives
        set.add(Number(id))
        return appended.size >= target
      })
      child.kill()
      await child.exited
    }
    const dlq = await openDlq({ segmentBytes: 16 * 1024 })
    const present = new Map(all(dlq).map((e) => [e.id, e]))
    // An entry whose markDone was in flight at the kill may be either; every other acked one is there.
    const missing = [...appended].filter((id) => id % 4 === 0 && !present.has(id))
    expect(missing).toEqual([])
    expect([...done].filter((id) => present.has(id))).toEqual([])
    expect([...parked].filter((id) => !done.has(id) && present.get(id)?.parked === undefined)).toEqual([])
    const maxAcked = Math.max(...appended)
    expect((await dlq.append({ sink: 'store', events: batch(1, 1), error: 'e', attempts: 1 })).id).toBeGreaterThan(maxAcked)
  }, 60_000)
})

/** Appends 16 at a time; marks 3 in 4 acked entries done (so segments are deleted and compacted) and parks half the rest, printing each ack. */
const KILL_CHILD = `
const { DeadLetterQueue } = await import(process.env.DLQ_MODULE)
const dlq = await DeadLetterQueue.open({ dir: process.env.DLQ_DIR, segmentBytes: 16 * 1024 })
const inflight = new Set()
let n = 0
const track = (p) => {
  inflight.add(p)
  p.finally(() => inflight.delete(p))
}
for (;;) {
  while (inflight.size < 16) {
    n++
    const events = Array.from({ length: 1 + (n % 3) }, (_, i) => ({ id: 'pending', seq: n * 4 + i, event_type: 'kill', timestamp: new Date().toISOString(), source: 'child', data: { pad: 'x'.repeat(n % 300) }, metadata: {} }))
    track(dlq.append({ sink: 'store', events, error: 'down', attempts: 1 }).then((e) => {
      process.stdout.write('a ' + e.id + '\\n')
      if (e.id % 4 !== 0) track(dlq.markDone(e.id).then(() => process.stdout.write('d ' + e.id + '\\n')))
      else if (e.id % 8 === 0) track(dlq.park(e.id, 'poison').then(() => process.stdout.write('p ' + e.id + '\\n')))
    }))
  }
  await Promise.race(inflight)
}
`

interface Child {
  /** Feeds stdout lines to onLine until it returns true; rejects if the child exits first. */
  lines(onLine: (line: string) => boolean, timeoutMs?: number): Promise<void>
  kill(): void
  exited: Promise<number | null>
}

function runChild(code: string, env: Record<string, string>): Child {
  const proc = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], {
    env: { ...process.env, ...env, DLQ_MODULE },
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
          try {
            for (const line of parts) if (onLine(line)) return finish()
          } catch (err) {
            finish(err as Error)
          }
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
