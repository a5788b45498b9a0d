/**
 * Sticky assignment of clients to buckets, as Unleash's stickiness does it (murmur3 of
 * `${groupId}:${userId}`), with 10,000 buckets instead of 100: a percentage has a resolution of
 * 0.01 %. The same (flag key, client id) lands in the same bucket on every call, in every process
 * and on every relay, so raising a percentage only ever adds clients.
 */

/** Buckets per flag: 0..9999. A percentage p covers buckets [0, p × 100). */
export const BUCKETS = 10_000

/**
 * Seed of the hash that splits clients between A/B variants, as Unleash's variant seed. A
 * different seed from the rollout's keeps the two assignments independent: otherwise everyone
 * outside a 25 % rollout rule (buckets ≥ 2500) would fall into the variants whose weight ranges
 * start past 2500.
 */
export const VARIANT_SEED = 86_028_157

const C1 = 0xcc9e2d51
const C2 = 0x1b873593

/** MurmurHash3 x86 32-bit of the UTF-8 bytes of `key`, as an unsigned 32-bit integer. */
export function murmur3_32(key: string, seed = 0): number {
  const data = Buffer.from(key, 'utf8')
  const length = data.length
  const tailStart = length & ~3
  let h = seed | 0
  for (let i = 0; i < tailStart; i += 4) {
    const k = data[i]! | (data[i + 1]! << 8) | (data[i + 2]! << 16) | (data[i + 3]! << 24)
    h ^= scramble(k)
    h = (h << 13) | (h >>> 19)
    h = (Math.imul(h, 5) + 0xe6546b64) | 0
  }
  let k = 0
  const rest = length & 3
  if (rest === 3) k ^= data[tailStart + 2]! << 16
  if (rest >= 2) k ^= data[tailStart + 1]! << 8
  if (rest >= 1) {
    k ^= data[tailStart]!
    h ^= scramble(k)
  }
  h ^= length
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

function scramble(k: number): number {
  k = Math.imul(k, C1)
  k = (k << 15) | (k >>> 17)
  return Math.imul(k, C2)
}

/** The client's bucket for a flag: murmur3_32(`${flagKey}:${clientId}`) mod 10,000. */
export function bucketOf(flagKey: string, clientId: string): number {
  return murmur3_32(`${flagKey}:${clientId}`) % BUCKETS
}

/** The client's bucket for a flag's A/B variant split (same key, {@link VARIANT_SEED}). */
export function variantBucketOf(flagKey: string, clientId: string): number {
  return murmur3_32(`${flagKey}:${clientId}`, VARIANT_SEED) % BUCKETS
}

/**
 * Whether the client is in a rollout of `percent` (0–100, fractional allowed): bucket < percent ×
 * 100. Monotone in percent. Values outside 0–100 are clamped, NaN is 0. The tiny epsilon absorbs
 * binary rounding (0.07 × 100 = 7.000000000000001 must mean 7 buckets, not 8).
 */
export function inRollout(flagKey: string, clientId: string, percent: number): boolean {
  if (!(percent > 0)) return false
  if (percent >= 100) return true
  return bucketOf(flagKey, clientId) < percent * 100 - 1e-9
}
