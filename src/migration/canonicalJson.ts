import { createHash } from 'node:crypto'

/**
 * How the consistency validator compares payloads: canonical JSON (sorted keys), fingerprints of
 * it, and field-level diffs for mismatch samples.
 */

/** Diff entries kept per mismatch sample. */
export const MAX_DIFF_ENTRIES = 50

export interface DiffEntry {
  /** e.g. "data.cpu", "metadata.tags[2]", "$" for the whole value; undefined = absent. */
  path: string
  expected: unknown
  actual: unknown
}

/**
 * JSON with object keys sorted (recursively), otherwise exactly JSON.stringify's rules: toJSON is
 * honoured, undefined/functions/symbols are dropped from objects and null in arrays, non-finite
 * numbers are null. So an event and its JSON round trip (any key order) serialise identically.
 */
export function canonicalJson(value: unknown): string {
  return serialize(value) ?? 'null'
}

function serialize(value: unknown): string | undefined {
  if (value !== null && (typeof value === 'object' || typeof value === 'function') && typeof (value as { toJSON?: unknown }).toJSON === 'function') {
    value = (value as { toJSON(): unknown }).toJSON()
  }
  switch (typeof value) {
    case 'string':
      return JSON.stringify(value)
    case 'number':
      return Number.isFinite(value) ? JSON.stringify(value) : 'null'
    case 'boolean':
      return value ? 'true' : 'false'
    case 'bigint':
      return value.toString()
    case 'object': {
      if (value === null) return 'null'
      if (Array.isArray(value)) return `[${value.map((v) => serialize(v) ?? 'null').join(',')}]`
      const parts: string[] = []
      for (const key of Object.keys(value).sort()) {
        const s = serialize((value as Record<string, unknown>)[key])
        if (s !== undefined) parts.push(`${JSON.stringify(key)}:${s}`)
      }
      return `{${parts.join(',')}}`
    }
    default:
      return undefined
  }
}

/** sha1 of the canonical JSON, base64 (27 characters). Not a security boundary: a fingerprint. */
export function hashEvent(value: unknown): string {
  return sha1(canonicalJson(value))
}

/** sha1 of a value's plain JSON (key order kept), base64: the cheap first equality check. */
export function fingerprint(value: unknown): string | null {
  try {
    return sha1(JSON.stringify(value) ?? 'undefined')
  } catch {
    return null // not plain JSON (a BigInt): the canonical comparison decides
  }
}

function sha1(text: string): string {
  return createHash('sha1').update(text).digest('base64')
}

/** Field-level differences of two JSON values, like GitHub Scientist's mismatch reports; at most `limit`. */
export function diffJson(expected: unknown, actual: unknown, limit = MAX_DIFF_ENTRIES): DiffEntry[] {
  const out: DiffEntry[] = []
  walk(normalize(expected), normalize(actual), '', out, limit)
  return out
}

function normalize(value: unknown): unknown {
  const s = serialize(value)
  return s === undefined ? undefined : JSON.parse(s)
}

function walk(a: unknown, b: unknown, path: string, out: DiffEntry[], limit: number): void {
  if (out.length >= limit) return
  if (isRecord(a) && isRecord(b)) {
    for (const key of [...new Set([...Object.keys(a), ...Object.keys(b)])].sort()) {
      walk(a[key], b[key], path + keySegment(key, path === ''), out, limit)
    }
    return
  }
  if (Array.isArray(a) && Array.isArray(b)) {
    for (let i = 0; i < Math.max(a.length, b.length); i++) walk(a[i], b[i], `${path}[${i}]`, out, limit)
    return
  }
  if (serialize(a) !== serialize(b)) out.push({ path: path || '$', expected: a, actual: b })
}

function keySegment(key: string, first: boolean): string {
  if (/^[A-Za-z_$][\w$]*$/.test(key)) return first ? key : `.${key}`
  return `[${JSON.stringify(key)}]`
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}
