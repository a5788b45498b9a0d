import type { StoredEvent } from '../types.js'
import { encodeFrame } from './records.js'

export interface DlqEntry {
  /** Monotonically increasing, across restarts. */
  id: number
  /** 'store' | 'realtime' | ... */
  sink: string
  events: StoredEvent[]
  /** Last error message; callers pass it cleaned of secrets. */
  error: string
  attempts: number
  firstFailedAt: string
  lastFailedAt: string
  parked?: { reason: string; at: string }
}

/** The header of every segment: the next id, so ids keep rising after everything was deleted. */
export type SegmentRecord = { t: 'segment'; nextId: number; snapshot: boolean }
/** What an entry holds besides its events and whether it is parked. */
export type EntryFields = Pick<DlqEntry, 'id' | 'sink' | 'error' | 'attempts' | 'firstFailedAt' | 'lastFailedAt'>
export type AppendRecord = EntryFields & {
  t: 'append'
  parked?: { reason: string; at: string }
  /** Events in the record. */
  n: number
}
export type MutationRecord =
  | { t: 'done'; id: number }
  | { t: 'failed'; id: number; error: string; at: string }
  | { t: 'park'; id: number; reason: string; at: string }
  | { t: 'requeue'; id: number }
export type LogRecord = SegmentRecord | AppendRecord | MutationRecord

const NEWLINE = Buffer.from('\n')

/** A payload is one JSON line naming the record; an append's events follow it, after a newline, as a JSON array. */
export function encodeLogRecord(record: LogRecord, events?: Buffer): Buffer {
  const line = Buffer.from(JSON.stringify(record))
  return encodeFrame(events ? Buffer.concat([line, NEWLINE, events]) : line)
}

/** The events JSON of an append record's payload. */
export function eventsJsonOf(payload: Buffer): Buffer {
  return payload.subarray(payload.indexOf(NEWLINE) + 1)
}

/** The events of an append record's payload, or undefined when they do not parse as `count` of them. */
export function eventsOf(payload: Buffer, count: number): StoredEvent[] | undefined {
  let events: unknown
  try {
    events = JSON.parse(eventsJsonOf(payload).toString('utf8'))
  } catch {
    return undefined
  }
  return Array.isArray(events) && events.length === count ? (events as StoredEvent[]) : undefined
}

export function toDlqEntry(r: AppendRecord, events: StoredEvent[]): DlqEntry {
  const { id, sink, error, attempts, firstFailedAt, lastFailedAt, parked } = r
  return { id, sink, events, error, attempts, firstFailedAt, lastFailedAt, ...(parked ? { parked: { ...parked } } : {}) }
}

/** Throws when the payload is not a dead-letter record, or a segment record stands anywhere but first. */
export function decodeLogRecord(payload: Buffer, offset: number): LogRecord {
  const nl = payload.indexOf(NEWLINE)
  const r = JSON.parse(payload.subarray(0, nl === -1 ? payload.length : nl).toString('utf8')) as Record<string, unknown> | null
  if (!isLogRecord(r, nl !== -1)) throw new Error(`not a dead-letter record: ${JSON.stringify(r).slice(0, 80)}`)
  // A segment starts with its segment record, and has only that one.
  if ((offset === 0) !== (r.t === 'segment')) throw new Error('segment record out of place')
  return r
}

function isLogRecord(r: Record<string, unknown> | null, hasEvents: boolean): r is LogRecord {
  const isId = (v: unknown) => typeof v === 'number' && Number.isSafeInteger(v) && v > 0
  const isText = (v: unknown) => typeof v === 'string'
  if (r === null || typeof r !== 'object') return false
  if ((r.t === 'append') !== hasEvents) return false
  switch (r.t) {
    case 'segment':
      return isId(r.nextId) && typeof r.snapshot === 'boolean'
    case 'append': {
      const parked = r.parked as Record<string, unknown> | undefined
      return (
        isId(r.id) && isText(r.sink) && isText(r.error) && isText(r.firstFailedAt) && isText(r.lastFailedAt) &&
        typeof r.attempts === 'number' && Number.isSafeInteger(r.attempts) && isId(r.n) &&
        (parked === undefined || (typeof parked === 'object' && parked !== null && isText(parked.reason) && isText(parked.at)))
      )
    }
    case 'done':
    case 'requeue':
      return isId(r.id)
    case 'failed':
      return isId(r.id) && isText(r.error) && isText(r.at)
    case 'park':
      return isId(r.id) && isText(r.reason) && isText(r.at)
    default:
      return false
  }
}
