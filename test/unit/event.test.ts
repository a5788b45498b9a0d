import { describe, expect, it } from 'vitest'
import fc from 'fast-check'
import { Result, Schema } from 'effect'
import { LIMITS, bodyKindOf, parseEventsBody, validateEvents, type ParseOutcome } from '../../src/ingest/event.js'
import { EVENT_PARSE_OPTIONS, UnifiedMonitoringEvent } from '../../src/ingest/eventSchema.js'
import type { ValidationIssue } from '../../src/ingest/validationIssues.js'
import type { MonitoringEvent } from '../../src/types.js'

const NOW = new Date('2026-11-22T10:00:00.000Z')
const clock = (): Date => NOW
const UUIDV7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/

const valid = (over: Record<string, unknown> = {}): Record<string, unknown> => ({ event_type: 'cpu.high', source: 'host-1', ...over })

const parseJson = (value: unknown): ParseOutcome => parseEventsBody(JSON.stringify(value), 'json', clock)

function eventsOf(outcome: ParseOutcome): MonitoringEvent[] {
  if (!outcome.ok) throw new Error(`expected ok, got ${outcome.error}: ${JSON.stringify(outcome.details)}`)
  return outcome.events
}

function failure(outcome: ParseOutcome, status: 400 | 413, error: string): ValidationIssue[] {
  if (outcome.ok) throw new Error(`expected ${error}, got ok`)
  expect({ status: outcome.status, error: outcome.error }).toEqual({ status, error })
  expect(outcome.details.length).toBeGreaterThanOrEqual(1)
  return outcome.details
}

/** The single issue of a one-event request that fails content validation. */
function issueOf(item: unknown): ValidationIssue {
  const details = failure(parseJson(item), 400, 'invalid_events')
  expect(details).toHaveLength(1)
  return details[0]
}

const passesSchema = (event: unknown): boolean =>
  Result.isSuccess(Schema.decodeUnknownResult(UnifiedMonitoringEvent)(event, EVENT_PARSE_OPTIONS))

describe('LIMITS', () => {
  it('match Supabase Realtime and Postgres constraints', () => {
    expect(LIMITS).toEqual({ maxEventBytes: 262_144, maxEventsPerRequest: 1_000, maxRequestBytes: 4_194_304, maxDepth: 32 })
  })
})

describe('defaults and normalisation', () => {
  it('fills id (UUIDv7), timestamp (the injected clock), data and metadata', () => {
    const [event] = eventsOf(parseJson(valid()))
    expect(event.id).toMatch(UUIDV7)
    expect(event).toEqual({ id: event.id, event_type: 'cpu.high', timestamp: NOW.toISOString(), source: 'host-1', data: {}, metadata: {} })
    expect(Object.keys(event)).toEqual(['id', 'event_type', 'timestamp', 'source', 'data', 'metadata'])
  })

  it('assigns unique, increasing ids within a request', () => {
    const events = eventsOf(parseJson(Array.from({ length: 1_000 }, () => valid())))
    const ids = events.map((e) => e.id)
    expect(new Set(ids).size).toBe(1_000)
    expect([...ids].sort()).toEqual(ids)
  })

  it('defaults the timestamp to the real clock when none is injected', () => {
    const before = Date.now()
    const outcome = parseEventsBody(JSON.stringify(valid()), 'json')
    const t = Date.parse(eventsOf(outcome)[0].timestamp)
    expect(t).toBeGreaterThanOrEqual(before)
    expect(t).toBeLessThanOrEqual(Date.now())
  })

  it('keeps a given id, lowercased', () => {
    const [event] = eventsOf(parseJson(valid({ id: 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11' })))
    expect(event.id).toBe('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11')
  })

  it('normalises timestamps to ISO UTC with milliseconds', () => {
    const [event] = eventsOf(parseJson(valid({ timestamp: '2026-11-22T12:30:00.123456+02:30' })))
    expect(event.timestamp).toBe('2026-11-22T10:00:00.123Z')
  })

  it('keeps data and metadata as sent, and events in request order', () => {
    const data = { cpu: 0.93, tags: ['a', 'b'], nested: { ok: true, none: null } }
    const events = eventsOf(parseJson([valid({ source: 'a', data }), valid({ source: 'b', metadata: { region: 'eu' } })]))
    expect(events.map((e) => e.source)).toEqual(['a', 'b'])
    expect(events[0].data).toEqual(data)
    expect(events[1].metadata).toEqual({ region: 'eu' })
  })
})

describe('id', () => {
  it.each([
    'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
    '01890a5d-ac96-774b-bcce-b302099a8057',
    '00000000-0000-0000-0000-000000000000',
    'FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF',
    '6ba7b810-9dad-11d1-80b4-00c04fd430c8',
  ])('accepts the UUID %s', (id) => {
    expect(eventsOf(parseJson(valid({ id })))[0].id).toBe(id.toLowerCase())
  })

  it.each([
    ['not a uuid', 'x'],
    ['no dashes', 'a0eebc999c0b4ef8bb6d6bb9bd380a11'],
    ['braces', '{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}'],
    ['non-hex digit', 'g0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'],
    ['too short', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1'],
    ['a number', 42],
    ['null', null],
    ['empty', ''],
  ])('rejects %s', (_, id) => {
    const issue = issueOf(valid({ id }))
    expect(issue).toMatchObject({ index: 0, path: 'id' })
    expect(issue.message).toMatch(/^Expected a UUID string/)
  })
})

describe('event_type', () => {
  it.each(['a', 'x'.repeat(64), 'cpu.high', 'disk_full', 'net:down', 'a-b', '0.9'])('accepts %j', (eventType) => {
    expect(eventsOf(parseJson(valid({ event_type: eventType })))[0].event_type).toBe(eventType)
  })

  it('names what was expected and what was sent', () => {
    expect(issueOf(valid({ event_type: 'Bad Type' }))).toEqual({
      index: 0,
      path: 'event_type',
      message: 'Expected a string of 1–64 characters [a-z0-9_.:-], got "Bad Type"',
    })
  })

  it.each([
    ['empty', '', '""'],
    ['65 characters', 'x'.repeat(65), '"xxxx'],
    ['uppercase', 'CPU', '"CPU"'],
    ['a slash', 'a/b', '"a/b"'],
    ['a number', 42, '42'],
    ['an array', ['a'], 'an array of 1 item'],
  ])('rejects %s', (_, eventType, shown) => {
    const issue = issueOf(valid({ event_type: eventType }))
    expect(issue.path).toBe('event_type')
    expect(issue.message).toContain(`got ${shown}`)
  })

  it('is required', () => {
    expect(issueOf({ source: 's' })).toEqual({
      index: 0,
      path: 'event_type',
      message: 'Missing required field: expected a string of 1–64 characters [a-z0-9_.:-]',
    })
  })
})

describe('timestamp', () => {
  it.each([
    ['2026-11-22T10:00:00Z', '2026-11-22T10:00:00.000Z'],
    ['2026-11-22T10:00:00.5Z', '2026-11-22T10:00:00.500Z'],
    ['2026-11-22T10:00:00.123456789Z', '2026-11-22T10:00:00.123Z'],
    ['2026-11-22T10:00:00-05:00', '2026-11-22T15:00:00.000Z'],
    ['2026-11-22t10:00:00z', '2026-11-22T10:00:00.000Z'],
    ['2024-02-29T00:00:00Z', '2024-02-29T00:00:00.000Z'],
    ['0001-01-01T00:00:00Z', '0001-01-01T00:00:00.000Z'],
    ['0099-06-01T00:00:00Z', '0099-06-01T00:00:00.000Z'],
    ['9999-12-31T23:59:59.999Z', '9999-12-31T23:59:59.999Z'],
    ['1969-12-31T23:59:59Z', '1969-12-31T23:59:59.000Z'],
  ])('accepts %s as %s', (timestamp, normalised) => {
    expect(eventsOf(parseJson(valid({ timestamp })))[0].timestamp).toBe(normalised)
  })

  it.each([
    ['no zone', '2026-11-22T10:00:00'],
    ['a date only', '2026-11-22'],
    ['a space separator', '2026-11-22 10:00:00Z'],
    ['February 30', '2026-02-30T00:00:00Z'],
    ['February 29 of a common year', '2023-02-29T00:00:00Z'],
    ['month 13', '2026-13-01T00:00:00Z'],
    ['hour 24', '2026-11-22T24:00:00Z'],
    ['a leap second', '2026-12-31T23:59:60Z'],
    ['an offset of 24 hours', '2026-11-22T10:00:00+24:00'],
    ['an offset without a colon', '2026-11-22T10:00:00+0100'],
    ['year 0000', '0000-06-01T00:00:00Z'],
    ['a UTC time before year 0001', '0001-01-01T00:00:00+00:01'],
    ['a UTC time after year 9999', '9999-12-31T23:59:59-00:01'],
    ['a 5-digit year', '+10000-01-01T00:00:00Z'],
    ['epoch milliseconds', 1_700_000_000_000],
    ['an empty string', ''],
  ])('rejects %s', (_, timestamp) => {
    const issue = issueOf(valid({ timestamp }))
    expect(issue.path).toBe('timestamp')
    expect(issue.message).toMatch(/^Expected an ISO 8601 date-time with Z or a ±hh:mm offset, years 0001–9999/)
  })
})

describe('source', () => {
  it.each([
    ['1 character', 'a'],
    ['128 characters', 'x'.repeat(128)],
    ['128 emoji (256 UTF-16 units): counted in characters', '😀'.repeat(128)],
  ])('accepts %s', (_, source) => {
    expect(eventsOf(parseJson(valid({ source })))[0].source).toBe(source)
  })

  it.each([
    ['empty', ''],
    ['129 characters', 'x'.repeat(129)],
    ['129 emoji', '😀'.repeat(129)],
    ['not a string', { host: 'a' }],
  ])('rejects %s', (_, source) => {
    const issue = issueOf(valid({ source }))
    expect(issue.path).toBe('source')
    expect(issue.message).toMatch(/^Expected a string of 1–128 characters, got /)
  })

  it('is required', () => {
    expect(issueOf({ event_type: 'a' })).toMatchObject({ path: 'source', message: expect.stringMatching(/^Missing required field/) })
  })

  it('shortens long values in messages', () => {
    const issue = issueOf(valid({ source: 'y'.repeat(10_000) }))
    expect(issue.message.length).toBeLessThan(200)
    expect(issue.message).toContain('(10000 characters)')
  })
})

describe('data and metadata', () => {
  it.each([
    ['an array', [], 'an array of 0 items'],
    ['null', null, 'null'],
    ['a string', 'x', '"x"'],
    ['a number', 1, '1'],
  ])('must be JSON objects, not %s', (_, value, shown) => {
    for (const field of ['data', 'metadata']) {
      expect(issueOf(valid({ [field]: value }))).toEqual({ index: 0, path: field, message: `Expected a JSON object, got ${shown}` })
    }
  })

  it('keeps a "__proto__" key inside data as data, without polluting any prototype', () => {
    const body = '{"event_type":"a","source":"s","data":{"__proto__":{"polluted":true},"constructor":{"prototype":{"polluted":true}}}}'
    const [event] = eventsOf(parseEventsBody(body, 'json', clock))
    expect(Object.hasOwn(event.data, '__proto__')).toBe(true)
    expect(Object.getPrototypeOf(event.data)).toBe(Object.prototype)
    expect(JSON.stringify(event.data)).toBe('{"__proto__":{"polluted":true},"constructor":{"prototype":{"polluted":true}}}')
    expect(({} as Record<string, unknown>).polluted).toBeUndefined()
    expect(passesSchema(event)).toBe(true)
  })
})

describe('unknown fields', () => {
  it('rejects a producer typo, naming the field', () => {
    const issue = issueOf(valid({ severty: 'high' }))
    expect(issue.path).toBe('severty')
    expect(issue.message).toMatch(/^unknown field/)
  })

  it('rejects seq: the relay assigns it', () => {
    expect(issueOf(valid({ seq: 7 }))).toEqual({ index: 0, path: 'seq', message: 'seq is assigned by the relay; do not send it' })
  })

  it('rejects a top-level "__proto__" key without polluting', () => {
    const details = failure(parseEventsBody('{"event_type":"a","source":"s","__proto__":{"polluted":true}}', 'json', clock), 400, 'invalid_events')
    expect(details).toEqual([{ index: 0, path: '__proto__', message: expect.stringMatching(/^unknown field/) }])
    expect(({} as Record<string, unknown>).polluted).toBeUndefined()
  })

  it('reports every problem of an event at once', () => {
    const details = failure(parseJson({ event_type: 'Bad', source: '', extra: 1, seq: 2, data: [] }), 400, 'invalid_events')
    expect(details.map((d) => d.path).sort()).toEqual(['data', 'event_type', 'extra', 'seq', 'source'])
  })
})

describe('NUL characters and lone surrogates', () => {
  it('rejects NUL in a string, at its path', () => {
    expect(issueOf(valid({ data: { s: 'a\u0000b' } }))).toEqual({
      index: 0,
      path: 'data.s',
      message: 'Strings must not contain the NUL character (\\u0000)',
    })
  })

  it('rejects NUL deep in arrays, with array indexes as path segments', () => {
    expect(issueOf(valid({ data: { items: [0, 1, 2, { name: '\u0000' }] } })).path).toBe('data.items.3.name')
  })

  it('rejects NUL in keys', () => {
    const issue = issueOf(valid({ metadata: { 'a\u0000b': 1 } }))
    expect(issue.path).toBe('metadata.a\u0000b')
    expect(issue.message).toBe('Keys must not contain the NUL character (\\u0000)')
  })

  it('rejects NUL in top-level strings', () => {
    expect(issueOf(valid({ source: 'host\u0000' })).path).toBe('source')
    expect(issueOf(valid({ event_type: 'a\u0000' })).path).toBe('event_type')
  })

  it('rejects lone surrogates, which Postgres cannot store', () => {
    expect(issueOf(valid({ data: { s: 'x\ud800y' } }))).toMatchObject({ path: 'data.s', message: expect.stringMatching(/surrogate/) })
    expect(issueOf(valid({ data: { '\udc00': 1 } }))).toMatchObject({ path: 'data.\udc00', message: expect.stringMatching(/surrogate/) })
  })

  it('accepts other control characters and paired surrogates', () => {
    expect(eventsOf(parseJson(valid({ data: { s: '\u0001\t\n😀' } })))[0].data).toEqual({ s: '\u0001\t\n😀' })
  })
})

/** An event whose deepest object or array sits at `level` ≥ 3 (the event is level 1, data level 2, data.a level 3). */
function eventAtDepth(level: number, wrap: (inner: unknown) => unknown = (inner) => ({ a: inner })): Record<string, unknown> {
  let inner: unknown = {}
  for (let l = level; l > 3; l--) inner = wrap(inner)
  return valid({ data: { a: inner } })
}

describe('nesting depth', () => {
  it('accepts objects nested 32 levels (the event is level 1, data level 2)', () => {
    expect(eventsOf(parseJson(eventAtDepth(32)))).toHaveLength(1)
    expect(eventsOf(parseJson([eventAtDepth(32)]))).toHaveLength(1) // the request's array is not a level
  })

  it('rejects level 33, pointing at the object that is too deep', () => {
    const issue = issueOf(eventAtDepth(33))
    expect(issue.path).toBe('data' + '.a'.repeat(31))
    expect(issue.message).toMatch(/at most 32 levels/)
  })

  it('counts arrays as levels too', () => {
    const wrapInArray = (inner: unknown): unknown => [inner]
    expect(eventsOf(parseJson(eventAtDepth(32, wrapInArray)))).toHaveLength(1)
    expect(issueOf(eventAtDepth(33, wrapInArray)).path).toBe('data.a' + '.0'.repeat(30))
  })

  it('does not count scalars as levels', () => {
    let inner: unknown = 'leaf'
    for (let l = 32; l > 2; l--) inner = { a: inner }
    expect(eventsOf(parseJson(valid({ data: { a: inner } })))).toHaveLength(1)
  })

  it('applies to metadata as well', () => {
    const deep = eventAtDepth(33)
    expect(issueOf(valid({ metadata: deep.data })).path).toBe('metadata' + '.a'.repeat(31))
  })
})

describe('event size', () => {
  const base = {
    id: '01890a5d-ac96-774b-bcce-b302099a8057',
    event_type: 'big',
    timestamp: '2026-11-22T10:00:00.000Z',
    source: 's',
    data: { s: '' },
    metadata: {},
  }
  const overhead = Buffer.byteLength(JSON.stringify(base))
  /** An event whose JSON is exactly `bytes` long, padded with 2-byte characters so bytes ≠ characters. */
  const eventOfBytes = (bytes: number): typeof base => {
    const pad = bytes - overhead
    return { ...base, data: { s: 'é'.repeat(Math.floor(pad / 2)) + 'x'.repeat(pad % 2) } }
  }

  it('accepts an event of exactly 256 KiB of UTF-8 JSON', () => {
    const event = eventOfBytes(LIMITS.maxEventBytes)
    expect(Buffer.byteLength(JSON.stringify(event))).toBe(262_144)
    expect(eventsOf(parseJson(event))).toHaveLength(1)
  })

  it('rejects one byte more with 413, naming the event', () => {
    const details = failure(parseJson([valid(), eventOfBytes(LIMITS.maxEventBytes + 1)]), 413, 'event_too_large')
    expect(details).toEqual([{ index: 1, path: '', message: 'Event is 262145 bytes as JSON; the limit is 262144 bytes (256 KiB)' }])
  })

  it('measures the event after defaults are filled in', () => {
    const { id: _id, timestamp: _timestamp, ...withoutDefaults } = eventOfBytes(LIMITS.maxEventBytes + 1)
    expect(Buffer.byteLength(JSON.stringify(withoutDefaults))).toBeLessThan(LIMITS.maxEventBytes)
    failure(parseJson(withoutDefaults), 413, 'event_too_large')
  })

  it('still reports other items’ problems alongside a too-large event', () => {
    const details = failure(parseJson([eventOfBytes(LIMITS.maxEventBytes + 1), valid({ event_type: 'BAD' })]), 413, 'event_too_large')
    expect(details.map((d) => [d.index, d.path])).toEqual([
      [0, ''],
      [1, 'event_type'],
    ])
  })
})

describe('events per request', () => {
  const many = (n: number): Record<string, unknown>[] => Array.from({ length: n }, (_, i) => valid({ source: `host-${i}` }))

  it('accepts 1,000 events', () => {
    expect(eventsOf(parseJson(many(1_000)))).toHaveLength(1_000)
    expect(eventsOf(parseEventsBody(many(1_000).map((e) => JSON.stringify(e)).join('\n'), 'ndjson', clock))).toHaveLength(1_000)
    expect(eventsOf(validateEvents(many(1_000), clock))).toHaveLength(1_000)
  })

  it('rejects 1,001 with 413', () => {
    const message = 'Expected at most 1000 events per request, got 1001'
    expect(failure(parseJson(many(1_001)), 413, 'too_many_events')).toEqual([{ index: -1, path: '', message }])
    expect(failure(parseEventsBody(many(1_001).map((e) => JSON.stringify(e)).join('\n'), 'ndjson', clock), 413, 'too_many_events')).toEqual([
      { index: -1, path: '', message },
    ])
    expect(failure(validateEvents(many(1_001), clock), 413, 'too_many_events')).toEqual([{ index: -1, path: '', message }])
  })
})

describe('request body size', () => {
  const event = JSON.stringify([valid()])
  const padded = (bytes: number): string => event + ' '.repeat(bytes - event.length)

  it('accepts exactly 4 MiB', () => {
    expect(eventsOf(parseEventsBody(padded(LIMITS.maxRequestBytes), 'json', clock))).toHaveLength(1)
    expect(eventsOf(parseEventsBody(Buffer.from(padded(LIMITS.maxRequestBytes)), 'json', clock))).toHaveLength(1)
  })

  it('rejects one byte more with 413', () => {
    const details = failure(parseEventsBody(padded(LIMITS.maxRequestBytes + 1), 'json', clock), 413, 'body_too_large')
    expect(details).toEqual([{ index: -1, path: '', message: 'Body is 4194305 bytes; the limit is 4194304 bytes (4 MiB)' }])
    failure(parseEventsBody(Buffer.from(padded(LIMITS.maxRequestBytes + 1)), 'ndjson', clock), 413, 'body_too_large')
  })

  it('counts UTF-8 bytes, not characters, of a string body', () => {
    const body = JSON.stringify([valid({ data: { s: 'é'.repeat(LIMITS.maxRequestBytes / 2) } })])
    expect(body.length).toBeLessThan(LIMITS.maxRequestBytes)
    failure(parseEventsBody(body, 'json', clock), 413, 'body_too_large')
  })
})

describe('JSON bodies', () => {
  it('takes a single object as one event and an array as many', () => {
    expect(eventsOf(parseEventsBody(JSON.stringify(valid()), 'json', clock))).toHaveLength(1)
    expect(eventsOf(parseEventsBody(JSON.stringify([valid(), valid(), valid()]), 'json', clock))).toHaveLength(3)
  })

  it.each([
    ['an empty body', ''],
    ['a whitespace-only body', ' \r\n\t '],
    ['an empty array', '[]'],
    ['an empty array with whitespace', ' [ ] '],
  ])('rejects %s as empty_body', (_, body) => {
    failure(parseEventsBody(body, 'json', clock), 400, 'empty_body')
    failure(parseEventsBody(Buffer.from(body), 'json', clock), 400, 'empty_body')
  })

  it.each([
    ['a number', '42', '42'],
    ['a string', '"event"', '"event"'],
    ['null', 'null', 'null'],
    ['a boolean', 'true', 'true'],
  ])('rejects %s as invalid_events at index 0', (_, body, shown) => {
    expect(failure(parseEventsBody(body, 'json', clock), 400, 'invalid_events')).toEqual([
      { index: 0, path: '', message: `Expected an event object or an array of event objects, got ${shown}` },
    ])
  })

  it('rejects non-object items of an array at their index', () => {
    const details = failure(parseJson([valid(), 5, null, [valid()]]), 400, 'invalid_events')
    expect(details).toEqual([
      { index: 1, path: '', message: 'Expected an event object, got 5' },
      { index: 2, path: '', message: 'Expected an event object, got null' },
      { index: 3, path: '', message: 'Expected an event object, got an array of 1 item' },
    ])
  })

  it('rejects malformed JSON', () => {
    const [detail] = failure(parseEventsBody('[{"event_type": "a",', 'json', clock), 400, 'invalid_json')
    expect(detail).toMatchObject({ index: -1, path: '', message: expect.stringMatching(/^Body is not valid JSON: /) })
  })

  it('rejects bytes that are not UTF-8', () => {
    const body = Buffer.concat([Buffer.from('{"event_type":"a","source":"'), Buffer.from([0xff, 0xfe]), Buffer.from('"}')])
    expect(failure(parseEventsBody(body, 'json', clock), 400, 'invalid_json')).toEqual([{ index: -1, path: '', message: 'Body is not valid UTF-8' }])
  })

  it('accepts a UTF-8 byte order mark', () => {
    expect(eventsOf(parseEventsBody(Buffer.from('\ufeff' + JSON.stringify(valid())), 'json', clock))).toHaveLength(1)
    expect(eventsOf(parseEventsBody('\ufeff' + JSON.stringify(valid()), 'json', clock))).toHaveLength(1)
  })
})

describe('NDJSON bodies', () => {
  it('takes one event per non-blank line, LF or CRLF', () => {
    const body = `${JSON.stringify(valid({ source: 'a' }))}\r\n\n  \n${JSON.stringify(valid({ source: 'b' }))}\n${JSON.stringify(valid({ source: 'c' }))}\n`
    expect(eventsOf(parseEventsBody(body, 'ndjson', clock)).map((e) => e.source)).toEqual(['a', 'b', 'c'])
  })

  it('reports a malformed line by its event index and line number', () => {
    const body = [JSON.stringify(valid()), '', '{"event_type": oops}', JSON.stringify(valid())].join('\n')
    const details = failure(parseEventsBody(body, 'ndjson', clock), 400, 'invalid_json')
    expect(details).toHaveLength(1)
    expect(details[0]).toMatchObject({ index: 1, path: '', message: expect.stringMatching(/^Line 3 is not valid JSON: /) })
  })

  it('reports malformed lines together with other lines’ problems', () => {
    const body = ['{', JSON.stringify(valid({ event_type: 'BAD' })), '[1,2'].join('\n')
    const details = failure(parseEventsBody(body, 'ndjson', clock), 400, 'invalid_json')
    expect(details.map((d) => [d.index, d.path])).toEqual([
      [0, ''],
      [1, 'event_type'],
      [2, ''],
    ])
    expect(details[2].message).toMatch(/^Line 3 /)
  })

  it('does not flatten a line holding an array', () => {
    const details = failure(parseEventsBody(`${JSON.stringify([valid()])}\n`, 'ndjson', clock), 400, 'invalid_events')
    expect(details).toEqual([{ index: 0, path: '', message: 'Expected an event object, got an array of 1 item' }])
  })

  it('rejects a blank body as empty_body', () => {
    failure(parseEventsBody('\n\n  \r\n', 'ndjson', clock), 400, 'empty_body')
  })
})

describe('atomicity and the details list', () => {
  it('accepts nothing when one item is bad, and points at it', () => {
    const items = [valid(), valid(), valid(), valid({ data: { items: [{}, {}, {}, { name: 7, bad: '\u0000' }] } }), valid()]
    const outcome = parseJson(items)
    expect(outcome.ok).toBe(false)
    expect(outcome).not.toHaveProperty('events')
    expect(failure(outcome, 400, 'invalid_events')).toEqual([
      { index: 3, path: 'data.items.3.bad', message: 'Strings must not contain the NUL character (\\u0000)' },
    ])
  })

  it('reports every problem of every item, in item order', () => {
    const details = failure(parseJson([valid({ source: '' }), valid(), valid({ event_type: 'X', seq: 1 })]), 400, 'invalid_events')
    expect(details.map((d) => `${d.index}:${d.path}`)).toEqual(['0:source', '2:seq', '2:event_type'])
  })

  it('caps the details at 100 entries and says how many were left out', () => {
    const details = failure(parseJson(Array.from({ length: 150 }, () => valid({ event_type: 'BAD' }))), 400, 'invalid_events')
    expect(details).toHaveLength(100)
    expect(details[98]).toMatchObject({ index: 98, path: 'event_type' })
    expect(details[99]).toEqual({ index: -1, path: '', message: '…and 51 more problems not shown (details are capped at 100 entries)' })
  })

  it('returns exactly 100 problems without a note', () => {
    const details = failure(parseJson(Array.from({ length: 100 }, () => valid({ event_type: 'BAD' }))), 400, 'invalid_events')
    expect(details).toHaveLength(100)
    expect(details.every((d) => d.index >= 0)).toBe(true)
  })
})

describe('validateEvents (in-process publish)', () => {
  it('validates and normalises already-parsed items', () => {
    const [event] = eventsOf(validateEvents([valid({ id: 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11' })], clock))
    expect(event).toMatchObject({ id: 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', timestamp: NOW.toISOString() })
  })

  it('rejects an empty list', () => {
    failure(validateEvents([], clock), 400, 'empty_body')
  })

  it('rejects a non-array without throwing', () => {
    failure(validateEvents('nope' as unknown as unknown[], clock), 400, 'invalid_events')
  })

  it.each([
    ['undefined', undefined, 'undefined'],
    ['NaN', Number.NaN, 'NaN'],
    ['Infinity', Number.POSITIVE_INFINITY, 'Infinity'],
    ['a Date', new Date(0), 'a Date'],
    ['a Map', new Map(), 'a Map'],
    ['a class instance', new (class Probe {})(), 'a Probe'],
    ['a function', () => 1, 'a function'],
    ['a bigint', 10n, '10n (a bigint)'],
    ['a symbol', Symbol('s'), 'a symbol'],
  ])('rejects non-JSON values: %s', (_, value, shown) => {
    const details = failure(validateEvents([valid({ data: { v: value } })], clock), 400, 'invalid_events')
    expect(details).toEqual([{ index: 0, path: 'data.v', message: expect.stringContaining(shown) }])
  })

  it('rejects a cyclic object without overflowing the stack', () => {
    const data: Record<string, unknown> = {}
    data.self = data
    const [detail] = failure(validateEvents([valid({ data })], clock), 400, 'invalid_events')
    expect(detail.message).toMatch(/at most 32 levels/)
  })

  it('reports a getter that throws instead of throwing', () => {
    const item = valid()
    Object.defineProperty(item, 'data', {
      enumerable: true,
      get() {
        throw new Error('boom')
      },
    })
    expect(failure(validateEvents([item], clock), 400, 'invalid_events')).toEqual([
      { index: 0, path: '', message: expect.stringMatching(/^Event could not be read: /) },
    ])
  })

  it('accepts objects without a prototype', () => {
    const item = Object.assign(Object.create(null) as Record<string, unknown>, valid({ data: Object.assign(Object.create(null), { a: 1 }) }))
    expect(eventsOf(validateEvents([item], clock))[0].data).toEqual({ a: 1 })
  })
})

describe('bodyKindOf', () => {
  it.each([
    ['application/json', 'json'],
    ['application/json; charset=utf-8', 'json'],
    ['Application/JSON;charset=UTF-8', 'json'],
    ['application/vnd.monitoring+json', 'json'],
    ['application/cloudevents-batch+json; charset=utf-8', 'json'],
    ['application/x-ndjson', 'ndjson'],
    ['application/ndjson', 'ndjson'],
    ['application/jsonl; charset=utf-8', 'ndjson'],
    [' application/x-ndjson ', 'ndjson'],
  ])('%s → %s', (contentType, kind) => {
    expect(bodyKindOf(contentType)).toBe(kind)
  })

  it.each([undefined, '', 'text/plain', 'application/xml', 'multipart/form-data', 'application/jsonx', 'text/json', '+json'])(
    '%j is unsupported',
    (contentType) => {
      expect(bodyKindOf(contentType)).toBeUndefined()
    },
  )
})

describe('property: any input gives a well-formed outcome', () => {
  // Strings that now and then hold NUL, lone surrogates and any other code point.
  const unit = fc.oneof(
    { weight: 200, arbitrary: fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }) },
    { weight: 1, arbitrary: fc.constantFrom('\u0000', '\ud800', '\udfff', '.', 'A') },
  )
  const json = fc.jsonValue({ stringUnit: unit, maxDepth: 6 })
  const orJunk = <T>(good: fc.Arbitrary<T>): fc.Arbitrary<unknown> => fc.oneof({ weight: 5, arbitrary: good }, { weight: 1, arbitrary: json })
  const jsonObject = fc.dictionary(fc.string({ unit }), json, { maxKeys: 5 })
  const mutatedEvent = fc
    .tuple(
      fc.record(
        {
          id: orJunk(fc.tuple(fc.uuid(), fc.boolean()).map(([u, upper]) => (upper ? u.toUpperCase() : u))),
          event_type: orJunk(fc.stringMatching(/^[a-z0-9_.:-]{1,64}$/)),
          timestamp: orJunk(
            fc
              .date({ min: new Date('0001-01-01T00:00:00Z'), max: new Date('9999-12-31T23:59:59.999Z'), noInvalidDate: true })
              .map((d) => d.toISOString()),
          ),
          source: orJunk(fc.string({ unit, minLength: 1, maxLength: 128 })),
          data: orJunk(jsonObject),
          metadata: orJunk(jsonObject),
        },
        { requiredKeys: ['event_type', 'source'] },
      ),
      // Now and then, fields the schema does not know.
      fc.oneof(
        { weight: 5, arbitrary: fc.constant({}) },
        { weight: 1, arbitrary: fc.dictionary(fc.oneof(fc.string(), fc.constantFrom('seq', '__proto__', 'Event_type')), json, { minKeys: 1, maxKeys: 2 }) },
      ),
    )
    .map(([event, extra]) => ({ ...event, ...extra }))
  const items = fc.oneof(json, fc.array(fc.oneof(mutatedEvent, json), { maxLength: 8 }), mutatedEvent)

  function assertWellFormed(outcome: ParseOutcome): void {
    if (outcome.ok) {
      expect(outcome.events.length).toBeGreaterThanOrEqual(1)
      for (const event of outcome.events) {
        expect(passesSchema(event)).toBe(true)
        expect(Object.keys(event)).toEqual(['id', 'event_type', 'timestamp', 'source', 'data', 'metadata'])
        expect(event.id).toBe(event.id.toLowerCase())
        expect(new Date(event.timestamp).toISOString()).toBe(event.timestamp)
      }
      // Accepted events are stable: validating them again changes nothing.
      expect(validateEvents(outcome.events, clock)).toEqual(outcome)
    } else {
      expect([400, 413]).toContain(outcome.status)
      expect(outcome.details.length).toBeGreaterThanOrEqual(1)
      expect(outcome.details.length).toBeLessThanOrEqual(100)
      for (const d of outcome.details) {
        expect(Number.isInteger(d.index) && d.index >= -1).toBe(true)
        expect(typeof d.path).toBe('string')
        expect(d.message.length).toBeGreaterThan(0)
      }
    }
  }

  it('as a JSON body', () => {
    fc.assert(
      fc.property(items, (value) => {
        assertWellFormed(parseEventsBody(JSON.stringify(value), 'json', clock))
      }),
      { numRuns: 500 },
    )
  })

  it('as an NDJSON body', () => {
    fc.assert(
      fc.property(fc.array(fc.oneof(mutatedEvent, json), { minLength: 0, maxLength: 8 }), (values) => {
        assertWellFormed(parseEventsBody(Buffer.from(values.map((v) => JSON.stringify(v)).join('\n')), 'ndjson', clock))
      }),
      { numRuns: 300 },
    )
  })

  it('as raw text of either kind', () => {
    fc.assert(
      fc.property(fc.string({ unit }), fc.constantFrom('json' as const, 'ndjson' as const), (text, kind) => {
        assertWellFormed(parseEventsBody(text, kind, clock))
      }),
      { numRuns: 300 },
    )
  })

  it('for in-process items of any shape', () => {
    const anything = fc.anything({ withBoxedValues: true, withMap: true, withSet: true, withNullPrototype: true, withSparseArray: true, withTypedArray: true, maxDepth: 4 })
    fc.assert(
      fc.property(fc.array(fc.oneof(mutatedEvent, anything), { maxLength: 5 }), (values) => {
        assertWellFormed(validateEvents(values, clock))
      }),
      { numRuns: 300 },
    )
  })

  it('accepts every well-formed event', () => {
    const wellFormed = fc.record(
      {
        id: fc.uuid(),
        event_type: fc.stringMatching(/^[a-z0-9_.:-]{1,64}$/),
        timestamp: fc.date({ min: new Date('0001-01-01T00:00:00Z'), max: new Date('9999-12-31T23:59:59.999Z'), noInvalidDate: true }).map((d) => d.toISOString()),
        source: fc.string({ minLength: 1, maxLength: 128 }),
        data: fc.dictionary(fc.string(), fc.jsonValue({ maxDepth: 6 })),
        metadata: fc.dictionary(fc.string(), fc.jsonValue({ maxDepth: 6 })),
      },
      { requiredKeys: ['event_type', 'source'] },
    )
    fc.assert(
      fc.property(fc.array(wellFormed, { minLength: 1, maxLength: 5 }), (events) => {
        const outcome = parseEventsBody(JSON.stringify(events), 'json', clock)
        expect(outcome.ok).toBe(true)
        assertWellFormed(outcome)
      }),
      { numRuns: 300 },
    )
  })
})
