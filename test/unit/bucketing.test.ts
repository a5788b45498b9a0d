import fc from 'fast-check'
import { describe, expect, it, vi } from 'vitest'
import { BUCKETS, bucketOf, inRollout, murmur3_32, variantBucketOf } from '../../src/migration/bucketing.js'

// MurmurHash3_x86_32 vectors from SMHasher's verification set (as collected by Ian Boyd) and
// common references ('hello', the quick brown fox).
const MURMUR_VECTORS: Array<[string, number, number]> = [
  ['', 0, 0],
  ['', 1, 0x514e28b7],
  ['', 0xffffffff, 0x81f16f39],
  ['\0\0\0\0', 0, 0x2362f9de],
  ['a', 0x9747b28c, 0x7fa09ea6],
  ['ab', 0x9747b28c, 0x74875592],
  ['abc', 0x9747b28c, 0xc84a62dd],
  ['abcd', 0x9747b28c, 0xf0478627],
  ['aaaa', 0x9747b28c, 0x5a97808a],
  ['Hello, world!', 0x9747b28c, 0x24884cba],
  ['ππππππππ', 0x9747b28c, 0xd58063c1], // UTF-8: 16 bytes
  ['abc', 0, 0xb3dd93fa],
  ['hello', 0, 0x248bfa47],
  ['The quick brown fox jumps over the lazy dog', 0, 0x2e4ff723],
  ['The quick brown fox jumps over the lazy dog', 0x9747b28c, 0x2fa826cd],
]

// [flag key, client id, bucketOf, variantBucketOf], computed by an independent implementation
// (Python, over the UTF-8 bytes). A change here moves real dashboards between transports.
const BUCKET_VECTORS: Array<[string, string, number, number]> = [
  ['rollout', 'dashboard-1', 7762, 3906],
  ['rollout', 'dashboard-2', 7900, 6771],
  ['rollout', '0190b1e4-7c2a-7d3e-9f10-2b3c4d5e6f70', 6014, 8369],
  ['MONITORING_USE_ADAPTER', 'client-1', 7270, 5352],
  ['MONITORING_DUAL_MODE', 'anon-5f2c', 3459, 9139],
  ['checkout', 'alice', 3009, 8478],
  ['checkout', 'bob', 6439, 8171],
  ['checkout', 'ü-émoji-🚀', 503, 4319],
  ['checkout', '', 2472, 3236],
  ['', 'x', 4973, 1164],
]

const ids = (n: number, seed: number): string[] => [...new Set(fc.sample(fc.uuid(), { numRuns: n, seed }))]

describe('murmur3_32', () => {
  it.each(MURMUR_VECTORS)('murmur3_32(%j, %i) is the reference value', (key, seed, expected) => {
    expect(murmur3_32(key, seed)).toBe(expected)
  })

  it('is an unsigned 32-bit integer for any string', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme' }), fc.integer({ min: 0, max: 0xffffffff }), (key, seed) => {
        const h = murmur3_32(key, seed)
        return Number.isInteger(h) && h >= 0 && h <= 0xffffffff
      }),
    )
  })
})

describe('bucketOf', () => {
  it.each(BUCKET_VECTORS)('bucketOf(%j, %j) is %i (variant bucket %i), as precomputed', (flag, client, bucket, variantBucket) => {
    expect(bucketOf(flag, client)).toBe(bucket)
    expect(variantBucketOf(flag, client)).toBe(variantBucket)
  })

  it('is murmur3_32(`${flagKey}:${clientId}`) mod 10,000, in 0..9999', () => {
    fc.assert(
      fc.property(fc.string(), fc.string(), (flag, client) => {
        const b = bucketOf(flag, client)
        return b === murmur3_32(`${flag}:${client}`) % BUCKETS && b >= 0 && b < BUCKETS
      }),
    )
  })

  it('is stable for a client across calls', () => {
    fc.assert(fc.property(fc.string(), fc.string(), (flag, client) => bucketOf(flag, client) === bucketOf(flag, client)))
  })

  it('is stable across a fresh import of the module (a restart)', async () => {
    const sample = ids(1000, 7)
    const before = sample.map((id) => bucketOf('rollout', id))
    vi.resetModules()
    const fresh = await import('../../src/migration/bucketing.js')
    expect(sample.map((id) => fresh.bucketOf('rollout', id))).toEqual(before)
  })
})

describe('inRollout', () => {
  const percent = fc.double({ min: 0, max: 100, noNaN: true })

  it('is monotone in percent: in at p means in at every q ≥ p', () => {
    fc.assert(
      fc.property(fc.string(), fc.string(), percent, percent, (flag, client, a, b) => {
        const [p, q] = a <= b ? [a, b] : [b, a]
        return !inRollout(flag, client, p) || inRollout(flag, client, q)
      }),
    )
  })

  it('is bucket < percent × 100: nobody at 0, everybody at 100, 0.01 % resolution', () => {
    fc.assert(
      fc.property(fc.string(), fc.string(), (flag, client) => {
        const bucket = bucketOf(flag, client)
        return (
          !inRollout(flag, client, 0) &&
          inRollout(flag, client, 100) &&
          inRollout(flag, client, (bucket + 1) / 100) &&
          !inRollout(flag, client, bucket / 100)
        )
      }),
    )
  })

  it('counts binary-rounded percentages as meant (0.07 % is 7 buckets)', () => {
    for (const client of ['a', 'b', 'c', 'd']) expect(inRollout('f', client, 0.07)).toBe(bucketOf('f', client) < 7)
    const client = 'client-1'
    expect(inRollout('f', client, Number.NaN)).toBe(false)
    expect(inRollout('f', client, -5)).toBe(false)
    expect(inRollout('f', client, 250)).toBe(true)
  })

  it('is uniform: over 100,000 random ids, 25/50/75 % put that share in within ±1 point', () => {
    const sample = ids(100_000, 42)
    expect(sample.length).toBeGreaterThan(99_990)
    for (const p of [25, 50, 75]) {
      const share = sample.filter((id) => inRollout('rollout', id, p)).length / sample.length
      expect(Math.abs(share - p / 100)).toBeLessThan(0.01)
    }
    // and each tenth of the buckets holds a tenth of the clients, within ±1 point
    const deciles = new Array<number>(10).fill(0)
    for (const id of sample) deciles[Math.floor(bucketOf('rollout', id) / 1000)]!++
    for (const n of deciles) expect(Math.abs(n / sample.length - 0.1)).toBeLessThan(0.01)
  })

  it('raising the percent only ever adds clients (the rollout never moves one back)', () => {
    const sample = ids(10_000, 3)
    let previous = new Set<string>()
    for (const p of [0, 1, 5, 25, 50, 75, 99.99, 100]) {
      const now = new Set(sample.filter((id) => inRollout('rollout', id, p)))
      for (const id of previous) expect(now.has(id)).toBe(true)
      previous = now
    }
    expect(previous.size).toBe(sample.length)
  })
})
