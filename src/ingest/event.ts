import { Result, Schema, type SchemaIssue } from 'effect'
import type { MonitoringEvent } from '../types.js'
import { uuidv7 } from './uuidv7.js'

/**
 * Ingest limits. maxEventBytes is Supabase Realtime's free-plan broadcast payload limit,
 * measured on the event's UTF-8 JSON after defaults are applied. maxDepth counts nesting of
 * objects and arrays: the event object is level 1, `data` level 2, `data.a` (if an object or
 * array) level 3; an object or array deeper than maxDepth is rejected.
 */
export const LIMITS: Readonly<{ maxEventBytes: number; maxEventsPerRequest: number; maxRequestBytes: number; maxDepth: number }> =
  Object.freeze({ maxEventBytes: 262_144, maxEventsPerRequest: 1_000, maxRequestBytes: 4_194_304, maxDepth: 32 })

/**
 * One problem with a request. `index` is the event's 0-based position in the request, or -1
 * when the issue concerns the request as a whole. `path` is dotted (`data.items.3.name`), '' for
 * the event itself.
 */
export interface ValidationIssue {
  index: number
  path: string
  message: string
}

/** How a request body is framed: one JSON value, or one JSON value per line. */
export type BodyKind = 'json' | 'ndjson'

/** The result of parsing a request body: every event, or every problem (nothing is accepted). */
export type ParseOutcome =
  | { ok: true; events: MonitoringEvent[] }
  | {
      ok: false
      status: 400 | 413
      error: 'invalid_json' | 'empty_body' | 'invalid_events' | 'too_many_events' | 'event_too_large' | 'body_too_large'
      details: ValidationIssue[]
    }

type Failure = Extract<ParseOutcome, { ok: false }>

/** At most this many details are returned; the last one says how many were left out. */
const MAX_DETAILS = 100

const FIELDS = ['id', 'event_type', 'timestamp', 'source', 'data', 'metadata'] as const
type Field = (typeof FIELDS)[number]

const EXPECTED: Record<Field, string> = {
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
function timestampMs(s: string): number {
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

function isPlainObject(u: unknown): u is Record<string, unknown> {
  if (typeof u !== 'object' || u === null) return false
  const proto = Object.getPrototypeOf(u)
  return proto === Object.prototype || proto === null
}

// Passed through by reference: the contents are checked by checkJsonTree, not copied.
const JsonObject = Schema.declare(isPlainObject, { expected: 'a JSON object' })

/**
 * The UnifiedMonitoringEvent as producers send it (before defaults). Decode with
 * {@link EVENT_PARSE_OPTIONS} so unknown fields are reported. Contents of data/metadata
 * (JSON-ness, depth, NUL) and size are checked by {@link validateEvents}, not by the schema.
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

const decodeEvent = Schema.decodeUnknownResult(UnifiedMonitoringEvent, EVENT_PARSE_OPTIONS)

// Counted in code points, as Postgres counts characters.
function isSourceLength(s: string): boolean {
  if (s.length === 0 || s.length > 256) return false
  if (s.length <= 128) return true
  let n = 0
  for (const _ of s) if (++n > 128) return false
  return true
}

/** Content-type header → BodyKind, or undefined when unsupported (415). */
export function bodyKindOf(contentType: string | undefined): BodyKind | undefined {
  if (typeof contentType !== 'string') return undefined
  const mediaType = contentType.split(';', 1)[0].trim().toLowerCase()
  if (mediaType === 'application/json' || /^application\/[^/\s]+\+json$/.test(mediaType)) return 'json'
  if (mediaType === 'application/x-ndjson' || mediaType === 'application/ndjson' || mediaType === 'application/jsonl') return 'ndjson'
  return undefined
}

const utf8 = new TextDecoder('utf-8', { fatal: true })

/**
 * Parses and validates a whole request body; atomic: any bad item → ok:false, with every problem.
 * Events without a timestamp all get the same one, read once from `now`.
 */
export function parseEventsBody(body: Buffer | string, kind: BodyKind, now: () => Date = () => new Date()): ParseOutcome {
  const bytes = typeof body === 'string' ? Buffer.byteLength(body, 'utf8') : body instanceof Uint8Array ? body.byteLength : -1
  if (bytes < 0) return fail(400, 'invalid_json', -1, 'Expected the request body as bytes or a string')
  if (bytes > LIMITS.maxRequestBytes) {
    return fail(413, 'body_too_large', -1, `Body is ${bytes} bytes; the limit is ${LIMITS.maxRequestBytes} bytes (4 MiB)`)
  }
  let text: string
  if (typeof body === 'string') {
    text = body.charCodeAt(0) === 0xfeff ? body.slice(1) : body
  } else {
    try {
      text = utf8.decode(body) // also drops a leading BOM
    } catch {
      return fail(400, 'invalid_json', -1, 'Body is not valid UTF-8')
    }
  }
  if (!/\S/.test(text)) return fail(400, 'empty_body', -1, 'Body is empty: no events')
  return kind === 'ndjson' ? parseNdjson(text, now) : parseJson(text, now)
}

function parseJson(text: string, now: () => Date): ParseOutcome {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (e) {
    return fail(400, 'invalid_json', -1, `Body is not valid JSON: ${errorMessage(e)}`)
  }
  if (Array.isArray(value)) return validateEvents(value, now)
  if (isPlainObject(value)) return validateEvents([value], now)
  return fail(400, 'invalid_events', 0, `Expected an event object or an array of event objects, got ${describe(value)}`)
}

function parseNdjson(text: string, now: () => Date): ParseOutcome {
  const lines = text.split('\n')
  const lineNumbers: number[] = []
  for (let i = 0; i < lines.length; i++) if (/\S/.test(lines[i])) lineNumbers.push(i + 1)
  if (lineNumbers.length > LIMITS.maxEventsPerRequest) return tooMany(lineNumbers.length)

  const items: unknown[] = new Array(lineNumbers.length)
  const syntaxErrors = new Map<number, string>()
  for (let index = 0; index < lineNumbers.length; index++) {
    const line = lineNumbers[index]
    try {
      items[index] = JSON.parse(lines[line - 1])
    } catch (e) {
      syntaxErrors.set(index, `Line ${line} is not valid JSON: ${errorMessage(e)}`)
    }
  }
  return checkItems(items, now, syntaxErrors)
}

/** Validates already-parsed items (used by in-process publish()). */
export function validateEvents(items: readonly unknown[], now: () => Date = () => new Date()): ParseOutcome {
  if (!Array.isArray(items)) return fail(400, 'invalid_events', 0, `Expected an array of events, got ${describe(items)}`)
  if (items.length === 0) return fail(400, 'empty_body', -1, 'No events: the array is empty')
  if (items.length > LIMITS.maxEventsPerRequest) return tooMany(items.length)
  return checkItems(items, now, undefined)
}

/**
 * Validates every item and reports every problem. The error code follows the earliest
 * stage that failed: JSON syntax (NDJSON lines), then event size, then event content.
 */
function checkItems(items: readonly unknown[], now: () => Date, syntaxErrors: Map<number, string> | undefined): ParseOutcome {
  const issues = new IssueList()
  const events: MonitoringEvent[] = []
  let nowIso: string | undefined
  const defaultTimestamp = (): string => (nowIso ??= now().toISOString())
  let tooLarge = false

  for (let index = 0; index < items.length; index++) {
    const syntaxError = syntaxErrors?.get(index)
    if (syntaxError !== undefined) {
      issues.add(index, '', syntaxError)
      continue
    }
    try {
      const result = checkItem(items[index], index, issues, defaultTimestamp)
      if (result === 'too_large') tooLarge = true
      else if (result !== undefined && issues.total === 0) events.push(result)
    } catch (e) {
      // Only reachable from in-process callers (getters, proxies); JSON input cannot throw here.
      issues.add(index, '', `Event could not be read: ${errorMessage(e)}`)
    }
  }

  if (issues.total === 0) return { ok: true, events }
  if (syntaxErrors !== undefined && syntaxErrors.size > 0) return { ok: false, status: 400, error: 'invalid_json', details: issues.details() }
  if (tooLarge) return { ok: false, status: 413, error: 'event_too_large', details: issues.details() }
  return { ok: false, status: 400, error: 'invalid_events', details: issues.details() }
}

const NO_PATHS: ReadonlySet<string> = new Set()

/** The normalised event, 'too_large', or undefined when it has other problems (added to issues). */
function checkItem(
  item: unknown,
  index: number,
  issues: IssueList,
  defaultTimestamp: () => string,
): MonitoringEvent | 'too_large' | undefined {
  if (!isPlainObject(item)) {
    issues.add(index, '', `Expected an event object, got ${describe(item)}`)
    return undefined
  }
  const before = issues.total
  const decoded = decodeEvent(item)
  const schemaPaths = Result.isFailure(decoded) ? addSchemaIssues(decoded.failure.issue, item, index, issues) : NO_PATHS
  let jsonSafe = true
  for (const key of Object.keys(item)) {
    if (!checkKey(key, key, index, issues, schemaPaths)) jsonSafe = false
    if (!checkJsonTree(item[key], key, 2, index, issues, schemaPaths)) jsonSafe = false
  }
  if (!jsonSafe) return undefined

  const event = Result.isSuccess(decoded) ? normalise(decoded.success, defaultTimestamp) : undefined
  const bytes = Buffer.byteLength(JSON.stringify(event ?? item), 'utf8')
  if (bytes > LIMITS.maxEventBytes) {
    issues.add(index, '', `Event is ${bytes} bytes as JSON; the limit is ${LIMITS.maxEventBytes} bytes (256 KiB)`)
    return 'too_large'
  }
  return issues.total === before ? event : undefined
}

function normalise(e: typeof UnifiedMonitoringEvent.Type, defaultTimestamp: () => string): MonitoringEvent {
  return {
    id: e.id === undefined ? uuidv7() : e.id.toLowerCase(),
    event_type: e.event_type,
    timestamp: e.timestamp === undefined ? defaultTimestamp() : new Date(timestampMs(e.timestamp)).toISOString(),
    source: e.source,
    data: e.data ?? {},
    metadata: e.metadata ?? {},
  }
}

/** Adds one issue per path (the first wins) and returns the paths reported. */
function addSchemaIssues(issue: SchemaIssue.Issue, item: Record<string, unknown>, index: number, issues: IssueList): ReadonlySet<string> {
  const paths = new Set<string>()
  for (const leaf of flattenIssue(issue, [])) {
    const path = leaf.path.map(String).join('.')
    if (paths.has(path)) continue
    paths.add(path)
    issues.add(index, path, schemaMessage(leaf, item))
  }
  return paths
}

interface LeafIssue {
  path: readonly PropertyKey[]
  issue: SchemaIssue.Issue
}

function flattenIssue(issue: SchemaIssue.Issue, path: readonly PropertyKey[]): LeafIssue[] {
  switch (issue._tag) {
    case 'Pointer':
      return flattenIssue(issue.issue, [...path, ...issue.path])
    case 'Composite':
      return issue.issues.flatMap((child) => flattenIssue(child, path))
    case 'AnyOf':
      return issue.issues.length === 0 ? [{ path, issue }] : issue.issues.flatMap((child) => flattenIssue(child, path))
    default:
      // Filter, Encoding and the leaves: the field's own "expected" text says it best.
      return [{ path, issue }]
  }
}

function schemaMessage({ path, issue }: LeafIssue, item: Record<string, unknown>): string {
  const field = path.length === 1 && typeof path[0] === 'string' ? path[0] : undefined
  if (issue._tag === 'UnexpectedKey') {
    return field === 'seq' ? 'seq is assigned by the relay; do not send it' : `unknown field (expected only ${FIELDS.join(', ')})`
  }
  const expected = field !== undefined && (FIELDS as readonly string[]).includes(field) ? EXPECTED[field as Field] : 'a valid value'
  if (issue._tag === 'MissingKey') return `Missing required field: expected ${expected}`
  const value = field === undefined ? item : item[field]
  return `Expected ${expected}, got ${describe(value)}`
}

function checkKey(key: string, path: string, index: number, issues: IssueList, skip: ReadonlySet<string>): boolean {
  if (key.includes('\u0000')) return report(issues, skip, index, path, 'Keys must not contain the NUL character (\\u0000)')
  if (!isWellFormed(key)) return report(issues, skip, index, path, 'Keys must not contain lone UTF-16 surrogates')
  return true
}

/**
 * Checks that a value is plain JSON Postgres can store: null, booleans, finite numbers,
 * strings without NUL or lone surrogates, arrays and plain objects, nested at most
 * LIMITS.maxDepth levels (depth is the level of `value` itself). Returns false on any problem.
 */
function checkJsonTree(value: unknown, path: string, depth: number, index: number, issues: IssueList, skip: ReadonlySet<string>): boolean {
  switch (typeof value) {
    case 'boolean':
      return true
    case 'string':
      if (value.includes('\u0000')) return report(issues, skip, index, path, 'Strings must not contain the NUL character (\\u0000)')
      if (!isWellFormed(value)) return report(issues, skip, index, path, 'Strings must not contain lone UTF-16 surrogates')
      return true
    case 'number':
      return Number.isFinite(value) || report(issues, skip, index, path, `Expected a finite number, got ${describe(value)}`)
    case 'object': {
      if (value === null) return true
      const isArray = Array.isArray(value)
      if (!isArray && !isPlainObject(value)) return report(issues, skip, index, path, `Expected a JSON value, got ${describe(value)}`)
      if (depth > LIMITS.maxDepth) {
        return report(issues, skip, index, path, `Nested too deeply: objects and arrays may nest at most ${LIMITS.maxDepth} levels (the event is level 1, data level 2)`)
      }
      let ok = true
      if (isArray) {
        for (let i = 0; i < value.length; i++) {
          if (!checkJsonTree(value[i], `${path}.${i}`, depth + 1, index, issues, skip)) ok = false
        }
      } else {
        const record = value as Record<string, unknown>
        for (const key of Object.keys(record)) {
          const childPath = `${path}.${key}`
          if (!checkKey(key, childPath, index, issues, skip)) ok = false
          if (!checkJsonTree(record[key], childPath, depth + 1, index, issues, skip)) ok = false
        }
      }
      return ok
    }
    default:
      return report(issues, skip, index, path, `Expected a JSON value, got ${describe(value)}`)
  }
}

function report(issues: IssueList, skip: ReadonlySet<string>, index: number, path: string, message: string): false {
  if (!skip.has(path)) issues.add(index, path, message)
  return false
}

function isWellFormed(s: string): boolean {
  // String.prototype.isWellFormed is in Node ≥ 20 but not in the ES2023 lib typings.
  return (s as unknown as { isWellFormed(): boolean }).isWellFormed()
}

/** Keeps the first MAX_DETAILS issues and counts the rest. */
class IssueList {
  private readonly kept: ValidationIssue[] = []
  total = 0

  add(index: number, path: string, message: string): void {
    if (this.kept.length < MAX_DETAILS) this.kept.push({ index, path, message })
    this.total++
  }

  /** At most MAX_DETAILS entries; when some were left out, the last entry says how many. */
  details(): ValidationIssue[] {
    if (this.total <= MAX_DETAILS) return this.kept
    const shown = this.kept.slice(0, MAX_DETAILS - 1)
    const notShown = this.total - shown.length
    return [...shown, { index: -1, path: '', message: `…and ${notShown} more problems not shown (details are capped at ${MAX_DETAILS} entries)` }]
  }
}

function fail(status: 400 | 413, error: Failure['error'], index: number, message: string): Failure {
  return { ok: false, status, error, details: [{ index, path: '', message }] }
}

function tooMany(count: number): Failure {
  return fail(413, 'too_many_events', -1, `Expected at most ${LIMITS.maxEventsPerRequest} events per request, got ${count}`)
}

/** A short, safe rendering of a value for messages. */
function describe(value: unknown): string {
  if (value === null) return 'null'
  switch (typeof value) {
    case 'string':
      return value.length > 64 ? `${JSON.stringify(value.slice(0, 64))}… (${value.length} characters)` : JSON.stringify(value)
    case 'number':
    case 'boolean':
      return String(value)
    case 'bigint':
      return `${value}n (a bigint)`
    case 'undefined':
      return 'undefined'
    case 'object': {
      if (Array.isArray(value)) return value.length === 1 ? 'an array of 1 item' : `an array of ${value.length} items`
      if (isPlainObject(value)) return 'an object'
      const name = (Object.getPrototypeOf(value) as { constructor?: { name?: unknown } } | null)?.constructor?.name
      return typeof name === 'string' && name !== '' ? `a ${name}` : 'a non-plain object'
    }
    default:
      return `a ${typeof value}`
  }
}

function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e)
}
