import { randomFillSync } from 'node:crypto'

// RFC 9562 §6.2 method 1: rand_a (12 bits) is a counter, so ids made in the same
// millisecond still sort in creation order. It is seeded randomly in its lower half
// each new millisecond, leaving at least 2,048 increments before it overflows.
const COUNTER_SEED_MASK = 0x7ff
const COUNTER_MAX = 0xfff

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'))

// One randomFillSync call per 256 ids instead of one per id.
const POOL_IDS = 256
const pool = Buffer.alloc(POOL_IDS * 10)
let poolOffset = pool.length

let lastMs = -1
let counter = 0

function takeRandom(): number {
  if (poolOffset >= pool.length) {
    randomFillSync(pool)
    poolOffset = 0
  }
  const offset = poolOffset
  poolOffset += 10
  return offset
}

/** A new UUIDv7 (RFC 9562): 48-bit unix ms timestamp, version 7, variant 10; strictly increasing within this process. */
export function uuidv7(): string {
  const r = takeRandom()
  let ms = Date.now()
  if (ms > lastMs) {
    lastMs = ms
    counter = ((pool[r] << 8) | pool[r + 1]) & COUNTER_SEED_MASK
  } else {
    // Same millisecond, or the clock stepped back: stay monotonic on the last timestamp,
    // borrowing the next millisecond when the counter runs out.
    ms = lastMs
    counter++
    if (counter > COUNTER_MAX) {
      ms = ++lastMs
      counter = ((pool[r] << 8) | pool[r + 1]) & COUNTER_SEED_MASK
    }
  }
  const hi = Math.floor(ms / 0x1000000) // top 24 of the 48 timestamp bits
  const lo = ms % 0x1000000
  return (
    HEX[(hi >>> 16) & 0xff] + HEX[(hi >>> 8) & 0xff] + HEX[hi & 0xff] +
    HEX[(lo >>> 16) & 0xff] + '-' + HEX[(lo >>> 8) & 0xff] + HEX[lo & 0xff] + '-' +
    HEX[0x70 | (counter >>> 8)] + HEX[counter & 0xff] + '-' +
    HEX[0x80 | (pool[r + 2] & 0x3f)] + HEX[pool[r + 3]] + '-' +
    HEX[pool[r + 4]] + HEX[pool[r + 5]] + HEX[pool[r + 6]] + HEX[pool[r + 7]] + HEX[pool[r + 8]] + HEX[pool[r + 9]]
  )
}
