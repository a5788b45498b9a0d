import { Result } from 'effect'
import type { MonitoringEvent } from '../types.js'
import { decodeEvent, isPlainObject, normalise } from './eventSchema.js'
import { addSchemaIssues, describe, errorMessage, IssueList, type ValidationIssue } from './validationIssues.js'

/**
 * Request-body validation: JSON and NDJSON bodies, the request and event limits, and the checks
 * on event contents (plain JSON Postgres can store). The schema is in eventSchema.ts, the wording
 * of problems in validationIssues.ts.
 */

/**
 * Ingest limits. maxEventBytes is Supabase Realtime's free-plan broadcast payload limit,
 * measured on the event's UTF-8 JSON after defaults are applied. maxDepth counts nesting of
 * objects and arrays: the event object is level 1, `data` level 2, `data.a` (if an object or
 * array) level 3; an object or array deeper than maxDepth is rejected.
 */
export const LIMITS: Readonly<{ maxEventBytes: number; maxEventsPerRequest: number; maxRequestBytes: number; maxDepth: number }> =
  Object.freeze({ maxEventBytes: 262_144, maxEventsPerRequest: 1_000, maxRequestBytes: 4_194_304, maxDepth: 32 })

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

function fail(status: 400 | 413, error: Failure['error'], index: number, message: string): Failure {
  return { ok: false, status, error, details: [{ index, path: '', message }] }
}

function tooMany(count: number): Failure {
  return fail(413, 'too_many_events', -1, `Expected at most ${LIMITS.maxEventsPerRequest} events per request, got ${count}`)
}
