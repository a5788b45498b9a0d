/**
 * The one backoff rule, against tables worked out by hand: ceiling = min(cap, base · factor^attempt),
 * jitter = ceiling · (1 − spread) + r · ceiling · spread. Rows are labelled with the call site whose
 * settings they use; randoms are dyadic fractions so every expected value is exact.
 */
import { describe, expect, it } from 'vitest'
import { backoffCeilingMs, jitteredBackoffMs, type BackoffSettings } from '../../machines/backoff.js'
import { fullJitterBackoffMs } from '../../machines/connection.js'

describe('backoffCeilingMs', () => {
  const rows: Array<[string, BackoffSettings, number, number]> = [
    ['base at attempt 0', { baseMs: 100, capMs: 5_000 }, 0, 100],
    ['doubles per attempt', { baseMs: 100, capMs: 5_000 }, 1, 200],
    ['batch flusher, 6th failure (attempt 5)', { baseMs: 100, capMs: 5_000 }, 5, 3_200],
    ['capped: 6,400 > 5,000', { baseMs: 100, capMs: 5_000 }, 6, 5_000],
    ['redis retryStrategy, times = 1', { baseMs: 100, capMs: 5_000 }, 1, 200],
    ['redis retryStrategy, times = 8 (12,800 before the cap)', { baseMs: 100, capMs: 5_000 }, 8, 5_000],
    ['a huge attempt overflows to Infinity: the cap wins', { baseMs: 250, capMs: 30_000 }, 10_000, 30_000],
    ['connection machine, attempt 3', { baseMs: 250, capMs: 30_000 }, 3, 2_000],
    ['factor 3', { baseMs: 250, capMs: 10_000, factor: 3 }, 2, 2_250],
    ['factor 3, capped: 20,250 > 10,000', { baseMs: 250, capMs: 10_000, factor: 3 }, 4, 10_000],
    ['factor 1.5', { baseMs: 1_000, capMs: 30_000, factor: 1.5 }, 2, 2_250],
    ['a cap below the base caps attempt 0 too', { baseMs: 500, capMs: 400 }, 0, 400],
  ]
  it.each(rows)('%s', (_, settings, attempt, expected) => {
    expect(backoffCeilingMs(settings, attempt)).toBe(expected)
  })
})

describe('jitteredBackoffMs', () => {
  // [label, settings, attempt, random, spread, expected]
  const rows: Array<[string, BackoffSettings, number, number, number | undefined, number]> = [
    ['full jitter (default), r = 0: no wait', { baseMs: 100, capMs: 5_000 }, 3, 0, undefined, 0],
    ['full jitter, r = 0.5 of ceiling 800', { baseMs: 100, capMs: 5_000 }, 3, 0.5, undefined, 400],
    ['full jitter, r = 0.25 of ceiling 800', { baseMs: 100, capMs: 5_000 }, 3, 0.25, 1, 200],
    ['equal jitter, r = 0: half the ceiling', { baseMs: 100, capMs: 5_000 }, 3, 0, 0.5, 400],
    ['equal jitter, r = 0.5', { baseMs: 100, capMs: 5_000 }, 3, 0.5, 0.5, 600],
    ['equal jitter, r = 0.75', { baseMs: 100, capMs: 5_000 }, 3, 0.75, 0.5, 700],
    ['no jitter (spread 0) whatever r', { baseMs: 100, capMs: 5_000 }, 3, 0.875, 0, 800],
    ['spread 0.25 of ceiling 1,000, r = 0.5', { baseMs: 250, capMs: 10_000 }, 2, 0.5, 0.25, 875],
    ['the cap comes before the jitter', { baseMs: 100, capMs: 5_000 }, 20, 0.5, 0.5, 3_750],
    ['flags LISTEN reconnect, failure 0, r = 0.5', { baseMs: 250, capMs: 10_000 }, 0, 0.5, 0.5, 187.5],
    ['flags LISTEN reconnect, capped (16,000), r = 0.5', { baseMs: 250, capMs: 10_000 }, 6, 0.5, 0.5, 7_500],
    ['/ws shadow, attempt 0, r = 0.25', { baseMs: 100, capMs: 5_000 }, 0, 0.25, 0.5, 62.5],
  ]
  it.each(rows)('%s', (_, settings, attempt, r, spread, expected) => {
    expect(jitteredBackoffMs(settings, attempt, () => r, spread)).toBe(expected)
  })

  it('draws the random once per delay', () => {
    let calls = 0
    jitteredBackoffMs({ baseMs: 100, capMs: 5_000 }, 2, () => (calls++, 0.5), 0.5)
    expect(calls).toBe(1)
  })
})

describe('fullJitterBackoffMs (the connection machine)', () => {
  const backoff = { baseMs: 250, capMs: 30_000 }
  // ceiling 2,000 at attempt 3
  const rows: Array<[number, number]> = [
    [0, 0],
    [0.375, 750],
    [0.3749, 749], // 749.8, floored to a whole ms
    [0.5, 1_000],
    [0.9999, 1_999],
  ]
  it.each(rows)('r = %s at attempt 3 waits %s ms', (r, expected) => {
    expect(fullJitterBackoffMs(backoff, 3, () => r)).toBe(expected)
  })

  it('stays within [0, ceiling] even for a random outside [0, 1)', () => {
    expect(fullJitterBackoffMs(backoff, 3, () => 1.5)).toBe(2_000)
    expect(fullJitterBackoffMs(backoff, 3, () => -0.5)).toBe(0)
  })
})
