import { Schema } from 'effect'
import type { MonitoringEvent } from '../types.js'
import { uuidv7 } from './uuidv7.js'

/**
 * The UnifiedMonitoringEvent schema (effect Schema) and what a decoded event becomes once the
 * relay's defaults are applied. Request-body parsing and the JSON-content checks are in event.ts.
 */

export const FIELDS = ['id', 'event_type', 'timestamp', 'source', 'data', 'metadata'] as const
export type Field = (typeof FIELDS)[number]

export const EXPECTED: Record<Field, string> = {
  id: 'a UUID string (8-4-4-4-12 hex digits)',
  event_type: 'a string of 1–64 characters [a-z0-9_.:-]',
  timestamp: 'an ISO 8601 date-time with Z or a ±hh:mm offset, years 0001–9999 (e.g. "2026-11-22T10:00:00Z")',
  source: 'a string of 1–128 characters',
  data: 'a JSON object',
  metadata: 'a JSON object',
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
const EVENT_TYPE = /^[a-z0-9_.:-]{1,64}$/
const ISO_DATE_TIME = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:Z|([+-])(\d{2}):(\d{2}))$/i

const MIN_MS = -62_135_596_800_000 // 0001-01-01T00:00:00.000Z: Postgres has no year 0
const MAX_MS = 253_402_300_799_999 // 9999-12-31T23:59:59.999Z: toISOString() changes form after it

/** Epoch ms of an ISO 8601 date-time with a zone, or NaN. Fractions below 1 ms are truncated. */
export function timestampMs(s: string): number {
  const m = ISO_DATE_TIME.exec(s)
  if (m === null) return Number.NaN
  const year = +m[1], month = +m[2], day = +m[3], hour = +m[4], minute = +m[5], second = +m[6]
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth(year, month)) return Number.NaN
  if (hour > 23 || minute > 59 || second > 59) return Number.NaN
  let offsetMinutes = 0
  if (m[8] !== undefined) {
    const offsetHours = +m[9], offsetMins = +m[10]
    if (offsetHours > 23 || offsetMins > 59) return Number.NaN
    offsetMinutes = (m[8] === '-' ? -1 : 1) * (offsetHours * 60 + offsetMins)
  }
  const ms = m[7] === undefined ? 0 : +m[7].slice(0, 3).padEnd(3, '0')
  const t = daysFromCivil(year, month, day) * 86_400_000 + ((hour * 60 + minute - offsetMinutes) * 60 + second) * 1000 + ms
  return t >= MIN_MS && t <= MAX_MS ? t : Number.NaN
}

// Days since 1970-01-01 in the proleptic Gregorian calendar (H. Hinnant's days_from_civil).
function daysFromCivil(year: number, month: number, day: number): number {
  const y = month <= 2 ? year - 1 : year
  const era = Math.floor(y / 400)
  const yearOfEra = y - era * 400
  const dayOfYear = Math.floor((153 * (month > 2 ? month - 3 : month + 9) + 2) / 5) + day - 1
  return era * 146_097 + yearOfEra * 365 + Math.floor(yearOfEra / 4) - Math.floor(yearOfEra / 100) + dayOfYear - 719_468
}

function daysInMonth(year: number, month: number): number {
  if (month === 2) return (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0 ? 29 : 28
  return month === 4 || month === 6 || month === 9 || month === 11 ? 30 : 31
}

export function isPlainObject(u: unknown): u is Record<string, unknown> {
  if (typeof u !== 'object' || u === null) return false
  const proto = Object.getPrototypeOf(u)
  return proto === Object.prototype || proto === null
}

// Passed through by reference: the contents are checked by checkJsonTree, not copied.
const JsonObject = Schema.declare(isPlainObject, { expected: 'a JSON object' })

/**
 * The UnifiedMonitoringEvent as producers send it (before defaults). Decode with
 * {@link EVENT_PARSE_OPTIONS} so unknown fields are reported. Contents of data/metadata
 * (JSON-ness, depth, NUL) and size are checked by validateEvents (event.ts), not by the schema.
 */
export const UnifiedMonitoringEvent = Schema.Struct({
  id: Schema.optionalKey(Schema.String.check(Schema.isPattern(UUID, { expected: EXPECTED.id }))),
  event_type: Schema.String.check(Schema.isPattern(EVENT_TYPE, { expected: EXPECTED.event_type })),
  timestamp: Schema.optionalKey(
    Schema.String.check(Schema.makeFilter((s: string) => !Number.isNaN(timestampMs(s)), { expected: EXPECTED.timestamp })),
  ),
  source: Schema.String.check(Schema.makeFilter((s: string) => isSourceLength(s), { expected: EXPECTED.source })),
  data: Schema.optionalKey(JsonObject),
  metadata: Schema.optionalKey(JsonObject),
}).annotate({ identifier: 'UnifiedMonitoringEvent', expected: 'an event object' })

/** Parse options that make UnifiedMonitoringEvent report every problem, unknown fields included. */
export const EVENT_PARSE_OPTIONS = { errors: 'all', onExcessProperty: 'error' } as const

export const decodeEvent = Schema.decodeUnknownResult(UnifiedMonitoringEvent, EVENT_PARSE_OPTIONS)

// Counted in code points, as Postgres counts characters.
function isSourceLength(s: string): boolean {
  if (s.length === 0 || s.length > 256) return false
  if (s.length <= 128) return true
  let n = 0
  for (const _ of s) if (++n > 128) return false
  return true
}

/** The event as stored: a missing id is a fresh UUIDv7, a missing timestamp the request's time. */
export function normalise(e: typeof UnifiedMonitoringEvent.Type, defaultTimestamp: () => string): MonitoringEvent {
  return {
    id: e.id === undefined ? uuidv7() : e.id.toLowerCase(),
    event_type: e.event_type,
    timestamp: e.timestamp === undefined ? defaultTimestamp() : new Date(timestampMs(e.timestamp)).toISOString(),
    source: e.source,
    data: e.data ?? {},
    metadata: e.metadata ?? {},
  }
}
