import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { canonicalJson, diffJson, hashEvent } from '../../src/migration/canonicalJson.js'
import { ConsistencyValidator, type PathName, type ValidatorOptions } from '../../src/migration/consistency.js'
import { LatencyHistogram } from '../../src/migration/latencyHistogram.js'
import type { PathStats } from '../../src/migration/pathCounts.js'
import type { StoredEvent } from '../../src/types.js'

const DEADLINE = 5_000

function event(seq: number, data: Record<string, unknown> = {}): StoredEvent {
  return {
    id: `00000000-0000-7000-8000-${String(seq).padStart(12, '0')}`,
    seq,
    event_type: 'test.event',
    timestamp: new Date(1_700_000_000_000 + seq).toISOString(),
    source: 'test',
    data: { i: seq, ...data },
    metadata: {},
  }
}

function events(from: number, count: number): StoredEvent[] {
  return Array.from({ length: count }, (_, i) => event(from + i))
}

/** A JSON round trip with the keys in another order: what a subscriber really receives. */
function wire(e: StoredEvent): StoredEvent {
  const reversed = (v: unknown): unknown =>
    v && typeof v === 'object' && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).reverse().map(([k, x]) => [k, reversed(x)])) : v
  return JSON.parse(JSON.stringify(reversed(e))) as StoredEvent
}

function setup(paths: PathName[] = ['realtime'], opts: Partial<ValidatorOptions> = {}) {
  const clock = { t: 1_000_000 }
  const v = new ConsistencyValidator({ deadlineMs: DEADLINE, windowMs: 300_000, sampleLimit: 20, now: () => clock.t, ...opts }, paths)
  return { v, clock }
}

const ZERO = { missing: 0, duplicated: 0, reordered: 0, mismatched: 0, late: 0, unexpected: 0 }

function counters(s: PathStats | undefined) {
  if (!s) throw new Error('no stats for the path')
  const { latencyMs: _latency, ...rest } = s
  return rest
}

describe('ConsistencyValidator', () => {
  it('a clean run reads exactly 100 % with every fault counter at zero', () => {
    const { v, clock } = setup()
    const sent = events(1, 1000)
    for (let i = 0; i < sent.length; i += 100) {
      v.sent(sent.slice(i, i + 100))
      clock.t += 10
      v.arrived('realtime', sent.slice(i, i + 100).map(wire))
    }
    clock.t += DEADLINE * 3
    const r = v.snapshot()
    expect(counters(r.sinceStart.realtime)).toEqual({ sent: 1000, matched: 1000, ...ZERO, consistencyPct: 100 })
    expect(counters(r.window.realtime)).toEqual({ sent: 1000, matched: 1000, ...ZERO, consistencyPct: 100 })
    expect(r.sinceStart.realtime!.latencyMs).toEqual({ p50: 10, p95: 10, p99: 10, samples: 1000 })
    expect(r.samples).toEqual([])
    expect(r.noiseFloorPct).toBeNull()
    expect(r.sinceStart.websocket).toBeUndefined()
  })

  it('dropped events: missing = k once their deadline passes; pending ones are not counted before', () => {
    const { v, clock } = setup()
    const sent = events(1, 500)
    v.sent(sent)
    const dropped = new Set([3, 99, 100, 250, 251, 252, 499])
    clock.t += 20
    v.arrived('realtime', sent.filter((e) => !dropped.has(e.seq)))
    clock.t += DEADLINE - 20 // exactly at the deadline: still within it
    v.tick()
    expect(v.snapshot().sinceStart.realtime).toMatchObject({ matched: 493, missing: 0, consistencyPct: 100 })
    clock.t += 1
    v.tick()
    const r = v.snapshot().sinceStart.realtime!
    expect(counters(r)).toEqual({ sent: 500, matched: 493, ...ZERO, missing: 7, consistencyPct: (493 * 100) / 500 })
    // Ticking again never counts them twice.
    clock.t += DEADLINE
    v.tick()
    expect(v.snapshot().sinceStart.realtime!.missing).toBe(7)
  })

  it('duplicates: every arrival after the first counts once; matched is unchanged', () => {
    const { v, clock } = setup()
    const sent = events(1, 200)
    v.sent(sent)
    clock.t += 5
    v.arrived('realtime', sent)
    v.arrived('realtime', [sent[10]!, sent[20]!, sent[20]!])
    v.arrived('realtime', [sent[199]!])
    clock.t += DEADLINE + 1
    expect(counters(v.snapshot().sinceStart.realtime)).toEqual({ sent: 200, matched: 200, ...ZERO, duplicated: 4, consistencyPct: (200 * 100) / 204 })
  })

  it('altered payloads: mismatched = k, with both versions and a field-level diff in the samples', () => {
    const { v, clock } = setup()
    const sent = events(1, 100)
    v.sent(sent)
    clock.t += 7
    const altered = new Set([10, 40, 70])
    v.arrived('realtime', sent.map((e) => (altered.has(e.seq) ? { ...wire(e), data: { ...e.data, i: -1, extra: true } } : wire(e))))
    const r = v.snapshot()
    expect(counters(r.sinceStart.realtime)).toEqual({ sent: 100, matched: 97, ...ZERO, mismatched: 3, consistencyPct: 97 })
    expect(r.samples.map((s) => [s.seq, s.path])).toEqual([[10, 'realtime'], [40, 'realtime'], [70, 'realtime']])
    const s = r.samples[0]!
    expect(s.id).toBe(sent[9]!.id)
    expect(s.expected).toEqual(sent[9])
    expect(s.actual).toMatchObject({ data: { i: -1, extra: true } })
    expect(s.diff).toEqual([
      { path: 'data.extra', expected: undefined, actual: true },
      { path: 'data.i', expected: 10, actual: -1 },
    ])
    expect(s.at).toBe(clock.t)
  })

  it('samples are bounded to the latest sampleLimit', () => {
    const { v, clock } = setup(['realtime'], { sampleLimit: 5 })
    const sent = events(1, 50)
    v.sent(sent)
    clock.t += 1
    v.arrived('realtime', sent.map((e) => ({ ...e, source: 'changed' })))
    const r = v.snapshot()
    expect(r.sinceStart.realtime!.mismatched).toBe(50)
    expect(r.samples.map((s) => s.seq)).toEqual([46, 47, 48, 49, 50])
  })

  it('two batches swapped: reordered = the events of the batch that arrived second', () => {
    const { v, clock } = setup()
    const a = events(1, 10)
    const b = events(11, 15)
    v.sent(a)
    v.sent(b)
    clock.t += 3
    v.arrived('realtime', b)
    v.arrived('realtime', a)
    clock.t += DEADLINE + 1
    expect(counters(v.snapshot().sinceStart.realtime)).toEqual({ sent: 25, matched: 15, ...ZERO, reordered: 10, consistencyPct: 60 })
  })

  it('a window of w messages released in reverse: (w − 1) reordered per window', () => {
    const { v, clock } = setup()
    const sent = events(1, 100)
    v.sent(sent)
    clock.t += 1
    for (let i = 0; i < 100; i += 4) v.arrived('realtime', sent.slice(i, i + 4).reverse())
    expect(v.snapshot().sinceStart.realtime).toMatchObject({ matched: 25, reordered: 75 })
  })

  it('delay beyond the deadline: missing at the deadline, then late on arrival, never matched', () => {
    const { v, clock } = setup()
    const sent = events(1, 30)
    v.sent(sent)
    clock.t += DEADLINE + 1
    v.tick()
    expect(v.snapshot().sinceStart.realtime).toMatchObject({ matched: 0, missing: 30, late: 0, consistencyPct: 0 })
    clock.t += 500
    v.arrived('realtime', sent.slice(0, 20))
    // Arriving late before any tick noticed the deadline counts the same.
    const { v: v2, clock: c2 } = setup()
    v2.sent(sent)
    c2.t += DEADLINE + 501
    v2.arrived('realtime', sent.slice(0, 20))
    for (const r of [v.snapshot(), v2.snapshot()]) {
      expect(counters(r.sinceStart.realtime)).toEqual({ sent: 30, matched: 0, ...ZERO, missing: 30, late: 20, consistencyPct: 0 })
      expect(r.sinceStart.realtime!.latencyMs).toEqual({ p50: DEADLINE + 501, p95: DEADLINE + 501, p99: DEADLINE + 501, samples: 20 })
    }
  })

  it('arrivals of unknown ids and of forgotten ids count as unexpected only', () => {
    const { v, clock } = setup()
    const sent = events(1, 10)
    v.sent(sent)
    clock.t += 1
    v.arrived('realtime', [event(999), { nope: true } as unknown as StoredEvent, ...sent.slice(0, 5)])
    clock.t += 2 * DEADLINE + 1
    v.arrived('realtime', sent.slice(5))
    expect(counters(v.snapshot().sinceStart.realtime)).toEqual({ sent: 10, matched: 5, ...ZERO, missing: 5, unexpected: 7, consistencyPct: 50 })
  })

  it('rejects a path it does not validate', () => {
    const { v } = setup(['realtime'])
    expect(() => v.arrived('websocket', [])).toThrow(/not validated/)
  })

  it('calibration: the websocket path gives the noise floor; each path is counted on its own', () => {
    const { v, clock } = setup(['realtime', 'websocket'])
    const sent = events(1, 100)
    v.sent(sent)
    clock.t += 2
    v.arrived('websocket', sent)
    v.arrived('realtime', sent.filter((e) => e.seq % 10 !== 0))
    clock.t += DEADLINE + 1
    let r = v.snapshot()
    expect(r.noiseFloorPct).toBe(0)
    expect(r.window.websocket).toMatchObject({ sent: 100, matched: 100, consistencyPct: 100 })
    expect(r.window.realtime).toMatchObject({ sent: 100, matched: 90, missing: 10, consistencyPct: 90 })
    const more = events(101, 100)
    v.sent(more)
    clock.t += 2
    v.arrived('websocket', more.slice(0, 98))
    v.arrived('realtime', more)
    clock.t += DEADLINE + 1
    r = v.snapshot()
    expect(r.window.websocket!.consistencyPct).toBe((198 * 100) / 200)
    expect(r.noiseFloorPct).toBe(100 - (198 * 100) / 200)
  })

  it('the sliding window forgets old buckets; since start keeps everything', () => {
    const { v, clock } = setup(['realtime'], { windowMs: 60_000, bucketMs: 10_000 })
    clock.t = 0
    v.sent(events(1, 10))
    clock.t = 35_000
    v.sent(events(11, 5))
    v.arrived('realtime', events(11, 5))
    let r = v.snapshot()
    expect(r.window.realtime).toMatchObject({ sent: 15, matched: 5, missing: 10, consistencyPct: (5 * 100) / 15 })
    // Bucket [0, 10 s) leaves the window when the bucket [60 s, 70 s) begins.
    clock.t = 59_999
    expect(v.snapshot().window.realtime!.sent).toBe(15)
    clock.t = 60_000
    r = v.snapshot()
    expect(counters(r.window.realtime)).toEqual({ sent: 5, matched: 5, ...ZERO, consistencyPct: 100 })
    expect(r.window.realtime!.latencyMs).toEqual({ p50: 0, p95: 0, p99: 0, samples: 5 })
    expect(r.sinceStart.realtime).toMatchObject({ sent: 15, matched: 5, missing: 10 })
    clock.t = 1_000_000
    r = v.snapshot()
    expect(r.window.realtime).toMatchObject({ sent: 0, matched: 0, consistencyPct: null, latencyMs: { p50: null, p95: null, p99: null, samples: 0 } })
    expect(r.sinceStart.realtime!.sent).toBe(15)
  })

  it('an outcome whose bucket has left the window counts since start only', () => {
    const { v, clock } = setup(['realtime'], { windowMs: 20_000, bucketMs: 10_000, deadlineMs: 60_000 })
    clock.t = 0
    v.sent(events(1, 3))
    clock.t = 30_000
    v.arrived('realtime', events(1, 3))
    const r = v.snapshot()
    expect(r.window.realtime).toMatchObject({ sent: 0, matched: 0 })
    expect(r.sinceStart.realtime).toMatchObject({ sent: 3, matched: 3 })
  })

  it('latency percentiles are nearest-rank on a known distribution (≤ 0.8 % histogram error)', () => {
    const { v, clock } = setup(['realtime'], { deadlineMs: 10_000 })
    const sent = events(1, 1000)
    v.sent(sent)
    const start = clock.t
    // Arrivals 1 ms .. 1000 ms after sending, in a scrambled order of ids but increasing time.
    const order = sent.map((_, i) => (i * 7919) % 1000)
    for (let ms = 1; ms <= 1000; ms++) {
      clock.t = start + ms
      v.arrived('realtime', [sent[order[ms - 1]!]!])
    }
    const { latencyMs } = v.snapshot().sinceStart.realtime!
    expect(latencyMs.samples).toBe(1000)
    expect(Math.abs(latencyMs.p50! - 500) / 500).toBeLessThan(0.008)
    expect(Math.abs(latencyMs.p95! - 950) / 950).toBeLessThan(0.008)
    expect(Math.abs(latencyMs.p99! - 990) / 990).toBeLessThan(0.008)
  })

  it('the histogram is exact below 128 µs and for a constant latency', () => {
    const h = new LatencyHistogram()
    for (let us = 1; us <= 100; us++) h.record(us / 1000)
    expect(h.percentile(0.5)).toBe(0.05)
    expect(h.percentile(0.99)).toBe(0.099)
    const c = new LatencyHistogram()
    for (let i = 0; i < 10; i++) c.record(123.456)
    expect([c.percentile(0.5), c.percentile(0.99)]).toEqual([123.456, 123.456])
    const huge = new LatencyHistogram()
    huge.record(1e12)
    huge.record(0)
    expect(huge.percentile(1)).toBe(1e12)
    expect(new LatencyHistogram().percentile(0.5)).toBeNull()
  })

  it('memory stays bounded: a million events with no arrivals, on an advancing clock and on a frozen one', () => {
    const { v, clock } = setup(['realtime', 'websocket'])
    let maxTracked = 0
    let maxPending = 0
    const batch = 1000
    for (let seq = 1; seq <= 1_000_000; seq += batch) {
      v.sent(events(seq, batch))
      clock.t += 50 // 20,000 events/s
      v.tick()
      if (seq % 50_000 === 1) {
        const m = v.snapshot().memory
        maxTracked = Math.max(maxTracked, m.tracked)
        maxPending = Math.max(maxPending, m.pending)
      }
    }
    // Tracked for 2 × deadline (200,000 events at this rate, the default maxTracked), pending for one deadline.
    expect(maxTracked).toBeLessThanOrEqual(200_000)
    expect(maxPending).toBeLessThanOrEqual(101_000)
    const r = v.snapshot()
    expect(r.sinceStart.realtime!.missing + r.memory.pending).toBe(1_000_000)
    expect(r.samples).toHaveLength(0)

    const frozen = setup(['realtime'], { maxTracked: 10_000 })
    for (let seq = 1; seq <= 50_000; seq += batch) frozen.v.sent(events(seq, batch))
    const f = frozen.v.snapshot()
    expect(f.memory).toEqual({ tracked: 10_000, pending: 10_000, maxTracked: 10_000, evicted: 40_000 })
    expect(f.sinceStart.realtime).toMatchObject({ sent: 50_000, missing: 40_000, matched: 0 })
  }, 60_000)
})

describe('canonical JSON', () => {
  it('is independent of key order and equal across a JSON round trip', () => {
    const e = { ...event(7, { nested: { b: [1, { y: 2, x: null }], a: 'é' } }), metadata: { z: 1, a: undefined } }
    expect(canonicalJson(e)).toBe(canonicalJson(wire(e)))
    expect(hashEvent(e)).toBe(hashEvent(wire(e)))
    expect(canonicalJson({ b: 1, a: [undefined, NaN, new Date(0)] })).toBe('{"a":[null,null,"1970-01-01T00:00:00.000Z"],"b":1}')
    expect(hashEvent({ ...e, seq: 8 })).not.toBe(hashEvent(e))
  })

  it('diffs nested objects and arrays by path', () => {
    expect(diffJson({ a: { b: [1, 2, 3] }, 'k-x': 1, same: true }, { a: { b: [1, 5] }, 'k-x': 2, same: true })).toEqual([
      { path: 'a.b[1]', expected: 2, actual: 5 },
      { path: 'a.b[2]', expected: 3, actual: undefined },
      { path: '["k-x"]', expected: 1, actual: 2 },
    ])
    expect(diffJson(1, 'one')).toEqual([{ path: '$', expected: 1, actual: 'one' }])
    expect(diffJson({ list: Array.from({ length: 100 }, (_, i) => i) }, { list: [] }, 5)).toHaveLength(5)
  })
})

// --- property: the optimised validator agrees with a naive reading of the definitions -----------

type Op =
  | { kind: 'send'; n: number }
  | { kind: 'arrive'; path: PathName; picks: Array<{ index: number; alter: boolean }> }
  | { kind: 'unexpected'; path: PathName }
  | { kind: 'advance'; ms: number }
  | { kind: 'tick' }

const PATHS: PathName[] = ['realtime', 'websocket']
const D = 100

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ kind: fc.constant('send' as const), n: fc.integer({ min: 1, max: 5 }) }),
  fc.record({
    kind: fc.constant('arrive' as const),
    path: fc.constantFrom(...PATHS),
    picks: fc.array(fc.record({ index: fc.nat(), alter: fc.boolean() }), { minLength: 1, maxLength: 6 }),
  }),
  fc.record({ kind: fc.constant('unexpected' as const), path: fc.constantFrom(...PATHS) }),
  fc.record({ kind: fc.constant('advance' as const), ms: fc.integer({ min: 0, max: 3 * D }) }),
  fc.record({ kind: fc.constant('tick' as const) }),
)

/** The definitions, computed the slow way from the whole history. */
function oracle(ops: Op[], faultFree: (p: PathName) => void) {
  let t = 0
  const sent: Array<{ e: StoredEvent; t: number }> = []
  const arrivals: Record<PathName, Array<{ e: StoredEvent; t: number }>> = { realtime: [], websocket: [] }
  for (const op of ops) {
    if (op.kind === 'advance') t += op.ms
    if (op.kind === 'send') for (let i = 0; i < op.n; i++) sent.push({ e: event(sent.length + 1), t })
    if (op.kind === 'unexpected') arrivals[op.path].push({ e: event(1_000_000 + t), t })
    if (op.kind === 'arrive' && sent.length > 0) {
      for (const pick of op.picks) {
        const e = sent[pick.index % sent.length]!.e
        arrivals[op.path].push({ e: pick.alter ? { ...e, data: { altered: true } } : e, t })
      }
    }
  }
  const out = {} as Record<PathName, Omit<PathStats, 'latencyMs' | 'consistencyPct'>>
  for (const path of PATHS) {
    const c = { sent: sent.length, matched: 0, missing: 0, duplicated: 0, reordered: 0, mismatched: 0, late: 0, unexpected: 0 }
    const first = new Set<string>()
    let maxSeq = -Infinity
    for (const a of arrivals[path]) {
      const ref = sent.find((s) => s.e.id === a.e.id)
      if (!ref || a.t - ref.t > 2 * D) {
        c.unexpected++
        continue
      }
      if (first.has(ref.e.id)) {
        c.duplicated++
        continue
      }
      first.add(ref.e.id)
      if (a.t - ref.t > D) c.late++
      else if (canonicalJson(a.e) !== canonicalJson(ref.e)) c.mismatched++
      else if (ref.e.seq < maxSeq) c.reordered++
      else c.matched++
      maxSeq = Math.max(maxSeq, ref.e.seq)
    }
    for (const s of sent) {
      const inTime = arrivals[path].some((a) => a.e.id === s.e.id && a.t - s.t <= D)
      if (!inTime && t - s.t > D) c.missing++
    }
    out[path] = c
    if (c.missing + c.duplicated + c.reordered + c.mismatched === 0) faultFree(path)
  }
  return { counts: out, end: t }
}

describe('ConsistencyValidator (property)', () => {
  it('for random interleavings of sent/arrived/tick the counters equal the definitions and stay consistent', () => {
    fc.assert(
      fc.property(fc.array(opArb, { maxLength: 60 }), (ops) => {
        const clock = { t: 0 }
        const v = new ConsistencyValidator({ deadlineMs: D, windowMs: 1e9, bucketMs: 1e8, now: () => clock.t }, PATHS)
        const sent: StoredEvent[] = []
        for (const op of ops) {
          if (op.kind === 'advance') clock.t += op.ms
          if (op.kind === 'tick') v.tick()
          if (op.kind === 'send') {
            const batch = Array.from({ length: op.n }, (_, i) => event(sent.length + i + 1))
            sent.push(...batch)
            v.sent(batch)
          }
          if (op.kind === 'unexpected') v.arrived(op.path, [event(1_000_000 + clock.t)])
          if (op.kind === 'arrive' && sent.length > 0) {
            v.arrived(
              op.path,
              op.picks.map((p) => {
                const e = sent[p.index % sent.length]!
                return p.alter ? { ...e, data: { altered: true } } : wire(e)
              }),
            )
          }
        }
        const clean = new Set<PathName>()
        const expected = oracle(ops, (p) => clean.add(p))
        expect(clock.t).toBe(expected.end)
        const r = v.snapshot()
        for (const path of PATHS) {
          const s = r.sinceStart[path]!
          expect(counters(s)).toEqual({ ...expected.counts[path], consistencyPct: s.consistencyPct })
          expect(counters(r.window[path])).toEqual(counters(s))
          expect(s.matched + s.missing + s.reordered + s.mismatched).toBeLessThanOrEqual(s.sent)
          expect(s.late).toBeLessThanOrEqual(s.missing)
          expect(s.latencyMs.samples).toBe(s.matched + s.mismatched + s.reordered + s.late)
          const decided = s.matched + s.missing + s.reordered + s.mismatched + s.duplicated
          if (decided === 0) expect(s.consistencyPct).toBeNull()
          else expect(s.consistencyPct === 100).toBe(clean.has(path))
        }
      }),
      { numRuns: 500 },
    )
  })
})
