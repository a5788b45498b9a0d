import fc from 'fast-check'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { DashboardClient } from '../helpers/dashboard.js'
import { startInProcessRelay, type InProcessRelay } from '../helpers/inProcessRelay.js'
import { makeEvents, postEvents } from '../helpers/relayProcess.js'

const ok = { event_type: 'deploy.finished', source: 'ci', data: { ok: true } }

async function raw(url: string, init: RequestInit & { path?: string } = {}) {
  const res = await fetch(`${url}${init.path ?? '/events'}`, { method: 'POST', ...init })
  const text = await res.text()
  let body: any = text
  try {
    body = JSON.parse(text)
  } catch {}
  return { status: res.status, body, headers: res.headers }
}

describe('POST /events', () => {
  let r: InProcessRelay
  beforeAll(async () => {
    r = await startInProcessRelay()
  })
  afterAll(async () => {
    expect(await r.stop()).toBe(0)
  })

  /** The next seq the relay will hand out: proves a rejected request consumed nothing. */
  async function nextSeq(): Promise<number> {
    const res = await postEvents(r.url, ok)
    expect(res.status).toBe(202)
    return res.body.first_seq + 1
  }

  it('accepts one event, an array and NDJSON with 202, ids and seqs', async () => {
    const one = await postEvents(r.url, ok)
    expect(one.status).toBe(202)
    expect(one.body).toMatchObject({ accepted: 1, first_seq: one.body.last_seq })
    expect(one.body.ids[0]).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
    const many = await postEvents(r.url, makeEvents(3))
    expect(many.body).toMatchObject({ accepted: 3, first_seq: one.body.last_seq + 1, last_seq: one.body.last_seq + 3 })
    const nd = await raw(r.url, { headers: { 'content-type': 'application/x-ndjson' }, body: `${JSON.stringify(ok)}\n\n${JSON.stringify(ok)}\n` })
    expect(nd.status).toBe(202)
    expect(nd.body.accepted).toBe(2)
    const given = '0190f5c3-7a2b-7c3d-8e4f-5a6b7c8d9e0f'
    const withId = await postEvents(r.url, { ...ok, id: given.toUpperCase() })
    expect(withId.body.ids).toEqual([given])
  })

  const bad: Array<[string, RequestInit, number, string, RegExp?]> = [
    ['malformed JSON', { headers: { 'content-type': 'application/json' }, body: '{"event_type": ' }, 400, 'invalid_json'],
    ['an empty body', { headers: { 'content-type': 'application/json' }, body: '' }, 400, 'empty_body'],
    ['an empty array', { headers: { 'content-type': 'application/json' }, body: '[]' }, 400, 'empty_body'],
    ['a bad event_type', { headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ...ok, event_type: 'Bad Type' }) }, 400, 'invalid_events', /event_type/],
    ['a missing source', { headers: { 'content-type': 'application/json' }, body: JSON.stringify({ event_type: 'a' }) }, 400, 'invalid_events', /source/],
    ['a bad timestamp', { headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ...ok, timestamp: 'yesterday' }) }, 400, 'invalid_events', /timestamp/],
    ['a bad id', { headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ...ok, id: 'not-a-uuid' }) }, 400, 'invalid_events', /id/],
    ['data that is not an object', { headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ...ok, data: [1] }) }, 400, 'invalid_events', /data/],
    ['a NUL character', { headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ...ok, data: { s: 'a\u0000b' } }) }, 400, 'invalid_events', /data\.s/],
    ['nesting deeper than 32', { headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ...ok, data: nest(40) }) }, 400, 'invalid_events', /depth|nest/i],
    ['more than 1,000 events', { headers: { 'content-type': 'application/json' }, body: JSON.stringify(makeEvents(1001)) }, 413, 'too_many_events'],
    ['an event over 256 KiB', { headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ...ok, data: { blob: 'x'.repeat(262_144) } }) }, 413, 'event_too_large'],
    ['a body over 4 MiB', { headers: { 'content-type': 'application/json' }, body: JSON.stringify(Array.from({ length: 20 }, () => ({ ...ok, data: { blob: 'x'.repeat(250_000) } }))) }, 413, 'body_too_large'],
    ['another content type', { headers: { 'content-type': 'text/plain' }, body: JSON.stringify(ok) }, 415, 'unsupported_media_type'],
  ]

  it.each(bad)('rejects %s with its 4xx and a reason, keeping nothing', async (_name, init, status, error, detail) => {
    const before = await nextSeq()
    const res = await raw(r.url, init)
    expect(res.status).toBe(status)
    expect(res.body.error).toBe(error)
    if (detail) expect(JSON.stringify(res.body.details)).toMatch(detail)
    expect(await nextSeq()).toBe(before + 1)
    expect((await fetch(`${r.url}/readyz`)).status).toBe(200)
  })

  it('is atomic: one bad item in a batch keeps nothing and points at it', async () => {
    const before = await nextSeq()
    const events = makeEvents(10)
    events[7] = { ...events[7], data: { s: 'nul\u0000' } }
    const res = await postEvents(r.url, events)
    expect(res.status).toBe(400)
    expect(res.body.details).toEqual([expect.objectContaining({ index: 7, path: 'data.s' })])
    expect(await nextSeq()).toBe(before + 1)
  })

  it('answers 405 to GET /events and 404 to unknown paths', async () => {
    expect((await fetch(`${r.url}/events`)).status).toBe(405)
    expect((await fetch(`${r.url}/nope`)).status).toBe(404)
  })

  it('property: random JSON bodies never get a 5xx, and only 202 answers store anything', async () => {
    const live = new DashboardClient(r.url)
    await live.opened
    let acceptedByRelay = 0
    const validish = fc.record({
      event_type: fc.oneof(fc.constantFrom('a', 'b.c', 'x:y-z_1'), fc.string()),
      source: fc.oneof(fc.constant('s'), fc.string({ maxLength: 200 })),
      data: fc.oneof(fc.dictionary(fc.string(), fc.jsonValue({ maxDepth: 3 })), fc.jsonValue({ maxDepth: 2 })),
    }, { requiredKeys: [] })
    const body = fc.oneof(fc.jsonValue({ maxDepth: 4 }), validish, fc.array(validish, { maxLength: 5 }))
    await fc.assert(
      fc.asyncProperty(body, async (value) => {
        const res = await postEvents(r.url, JSON.stringify(value))
        expect(res.status).toBeLessThan(500)
        if (res.status === 202) acceptedByRelay += res.body.accepted
        else expect(res.status).toBeGreaterThanOrEqual(400)
      }),
      { numRuns: 300 },
    )
    // Everything that reached dashboards came from a 202.
    await new Promise((resolve) => setTimeout(resolve, 0))
    const marker = await postEvents(r.url, { event_type: 'marker', source: 'test' })
    await live.waitForCount(acceptedByRelay + 1)
    expect(live.events.at(-1)!.id).toBe(marker.body.ids[0])
    expect(live.events).toHaveLength(acceptedByRelay + 1)
    live.close()
  })
})

describe('POST /events with INGEST_TOKEN', () => {
  let r: InProcessRelay
  beforeAll(async () => {
    r = await startInProcessRelay({ INGEST_TOKEN: 's3cret-token' })
  })
  afterAll(async () => {
    await r.stop()
  })

  it('answers 401 without or with a wrong token, 202 with the right one', async () => {
    expect((await postEvents(r.url, ok)).status).toBe(401)
    expect((await postEvents(r.url, ok, { authorization: 'Bearer nope' })).status).toBe(401)
    expect((await postEvents(r.url, ok, { authorization: 'Bearer s3cret-token-longer' })).status).toBe(401)
    expect((await postEvents(r.url, ok, { authorization: 'Bearer s3cret-token' })).status).toBe(202)
  })

  it('never logs the token', () => {
    expect(JSON.stringify(r.logs)).not.toContain('s3cret-token')
  })
})

function nest(depth: number): Record<string, unknown> {
  let v: Record<string, unknown> = { leaf: 1 }
  for (let i = 0; i < depth; i++) v = { n: v }
  return v
}
