import { afterEach, describe, expect, it, vi } from 'vitest'
import { uuidv7 } from '../../src/ingest/uuidv7.js'

const UUIDV7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/

const timestampOf = (id: string): number => parseInt(id.slice(0, 8) + id.slice(9, 13), 16)

afterEach(() => {
  vi.restoreAllMocks()
})

describe('uuidv7', () => {
  it('is a canonical lowercase UUID with version 7 and variant 10', () => {
    for (let i = 0; i < 1_000; i++) {
      const id = uuidv7()
      expect(id).toMatch(UUIDV7)
      expect(id).toHaveLength(36)
    }
  })

  it('carries the current unix time in milliseconds in its first 48 bits', () => {
    const before = Date.now()
    const id = uuidv7()
    const after = Date.now()
    expect(timestampOf(id)).toBeGreaterThanOrEqual(before)
    // Ids made earlier in the same millisecond may have borrowed a few ms ahead.
    expect(timestampOf(id)).toBeLessThanOrEqual(after + 5)
  })

  it('gives 10,000 unique ids that sort in creation order', () => {
    const ids = Array.from({ length: 10_000 }, () => uuidv7())
    expect(new Set(ids).size).toBe(ids.length)
    for (let i = 1; i < ids.length; i++) expect(ids[i] > ids[i - 1]).toBe(true)
  })

  it('stays increasing within one millisecond, borrowing the next one when its counter runs out', () => {
    const frozen = Date.now() + 60_000 // ahead of any id made so far in this process
    vi.spyOn(Date, 'now').mockReturnValue(frozen)
    const ids = Array.from({ length: 5_000 }, () => uuidv7())
    for (let i = 1; i < ids.length; i++) expect(ids[i] > ids[i - 1]).toBe(true)
    expect(timestampOf(ids[0])).toBe(frozen)
    // 5,000 ids cannot fit one millisecond's 12-bit counter (seeded at or below 2,047).
    expect(timestampOf(ids[ids.length - 1])).toBeGreaterThan(frozen)
    for (const id of ids) expect(id).toMatch(UUIDV7)
  })

  it('stays increasing when the clock steps back', () => {
    const first = uuidv7()
    vi.spyOn(Date, 'now').mockReturnValue(timestampOf(first) - 10_000)
    const second = uuidv7()
    expect(second > first).toBe(true)
    expect(timestampOf(second)).toBeGreaterThanOrEqual(timestampOf(first))
  })

  it('has random low bits: ids of one millisecond differ beyond the counter', () => {
    const frozen = Date.now() + 120_000
    vi.spyOn(Date, 'now').mockReturnValue(frozen)
    const tails = new Set(Array.from({ length: 1_000 }, () => uuidv7().slice(19)))
    expect(tails.size).toBe(1_000)
  })
})
