import pg from 'pg'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { startInProcessRelay, type InProcessRelay } from '../helpers/inProcessRelay.js'
import { describePg, freshDatabase } from '../helpers/pg.js'
import { makeEvents, postEvents, removeDir, startRelayProcess, type RelayProcess } from '../helpers/relayProcess.js'
import { waitFor } from '../helpers/wait.js'

describe('admin API', () => {
  let r: InProcessRelay
  let off: InProcessRelay
  beforeAll(async () => {
    r = await startInProcessRelay({ ADMIN_TOKEN: 'adm1n-secret' })
    off = await startInProcessRelay()
  })
  afterAll(async () => {
    await r.stop()
    await off.stop()
  })

  const get = (relay: InProcessRelay, path: string, token?: string) =>
    fetch(`${relay.url}${path}`, { headers: token ? { authorization: `Bearer ${token}` } : {} })

  it('is disabled (404) without ADMIN_TOKEN and answers 401 without or with a wrong token', async () => {
    expect((await get(off, '/admin/state', 'anything')).status).toBe(404)
    expect((await get(off, '/admin/flags', 'anything')).status).toBe(404)
    expect((await fetch(`${off.url}/admin/dlq/requeue`, { method: 'POST', headers: { authorization: 'Bearer anything' } })).status).toBe(404)
    expect((await get(r, '/admin/state')).status).toBe(401)
    expect((await get(r, '/admin/state', 'adm1n-secret-but-longer')).status).toBe(401)
  })

  it('GET /admin/state shows every machine by systemId', async () => {
    const res = await get(r, '/admin/state', 'adm1n-secret')
    expect(res.status).toBe(200)
    const body = (await res.json()) as { machines: Record<string, unknown> }
    expect(body.machines).toMatchObject({
      supervisor: { running: { store: 'healthy' } },
      storeBreaker: 'closed',
      storeConnection: 'connected',
      storeDlqReplayer: expect.any(String),
      storeFlusher: expect.objectContaining({ delivery: expect.any(String), profile: expect.any(String) }),
    })
  })

  it('GET /admin/dlq pages entries and rejects a bad query with 400; POST /admin/dlq/replay answers 202', async () => {
    const res = await get(r, '/admin/dlq?limit=10', 'adm1n-secret')
    expect(res.status).toBe(200)
    expect(await res.json()).toMatchObject({ depth: 0, parked: 0, entries: [] })
    expect((await get(r, '/admin/dlq?limit=0', 'adm1n-secret')).status).toBe(400)
    expect((await get(r, '/admin/dlq?parked=maybe', 'adm1n-secret')).status).toBe(400)
    const replay = await fetch(`${r.url}/admin/dlq/replay`, { method: 'POST', headers: { authorization: 'Bearer adm1n-secret' } })
    expect(replay.status).toBe(202)
  })

  it('exports the DLQ gauges in /metrics', async () => {
    const text = await (await fetch(`${r.url}/metrics`)).text()
    for (const name of ['relay_dlq_depth 0', 'relay_dlq_oldest_age_seconds 0', 'relay_dlq_bytes', 'relay_dependency_healthy{dependency="store"} 1']) expect(text).toContain(name)
  })

  it('never logs the admin token', () => {
    expect(JSON.stringify(r.logs)).not.toContain('adm1n-secret')
  })
})

const TOKEN = 'relay-admin-t0ken'

/** One call to a relay's own HTTP server; `token: null` sends no Authorization header. */
async function call(relay: RelayProcess, method: string, path: string, opts: { token?: string | null; body?: unknown } = {}) {
  const token = opts.token === undefined ? TOKEN : opts.token
  const res = await fetch(`${relay.url}${path}`, {
    method,
    headers: { ...(token === null ? {} : { authorization: `Bearer ${token}` }), ...(opts.body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
  })
  const text = await res.text()
  let body: any = text
  try {
    body = JSON.parse(text)
  } catch {}
  return { status: res.status, body, headers: res.headers }
}

/** The two ways of getting in without the token: none, and a wrong one (a longer one sharing its prefix). */
const BAD_TOKENS: Array<[string, string | null]> = [
  ['no token', null],
  ['a wrong token', `${TOKEN}-but-longer`],
]

async function sql<R extends pg.QueryResultRow = Record<string, unknown>>(url: string, text: string, params: unknown[] = []): Promise<R[]> {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  try {
    return (await client.query<R>(text, params)).rows
  } finally {
    await client.end()
  }
}

describePg("admin API through the relay's own HTTP server (the daemon on a random port, ADMIN_TOKEN set, its own database)", () => {
  const cleanups: Array<() => Promise<unknown>> = []
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c().catch((err: Error) => console.warn(`cleanup failed: ${err.message}`))
  })

  async function relayOnFreshDatabase(name: string, env: Record<string, string> = {}) {
    const db = await freshDatabase(name)
    cleanups.push(() => db.drop())
    const relay = await startRelayProcess({ ADMIN_TOKEN: TOKEN, DATABASE_URL: db.url, DLQ_POLL_INTERVAL_MS: '200', ...env })
    cleanups.push(async () => {
      relay.kill('SIGTERM')
      let timer: NodeJS.Timeout | undefined
      const exited = await Promise.race([relay.exited, new Promise((r) => (timer = setTimeout(r, 10_000, 'timeout')))])
      clearTimeout(timer)
      if (exited === 'timeout') relay.kill('SIGKILL')
      await removeDir(relay.dataDir)
    })
    expect(relay.port).toBeGreaterThan(0)
    return { db, relay }
  }

  it('/admin/flags: 401 without the right token (and nothing changes); with it, GET lists, PUT stores in feature_flags, DELETE removes', async () => {
    const { db, relay } = await relayOnFreshDatabase('admin_flags')
    const definition = { type: 'boolean', defaultValue: false, rules: [{ userIds: ['alice'], value: true }, { percentage: 25, value: true }] }
    const rows = () => sql<{ key: string; definition: any; updated_by: string }>(db.url, 'select key, definition, updated_by from public.feature_flags order by key')

    for (const [what, token] of BAD_TOKENS) {
      for (const [method, path, body] of [
        ['GET', '/admin/flags', undefined],
        ['GET', '/admin/flags/MONITORING_DUAL_MODE', undefined],
        ['PUT', '/admin/flags/new-dashboard', definition],
        ['DELETE', '/admin/flags/new-dashboard', undefined],
      ] as const) {
        const res = await call(relay, method, path, { token, body })
        expect({ what, method, path, status: res.status, error: res.body.error }).toEqual({ what, method, path, status: 401, error: 'unauthorized' })
        expect(res.headers.get('www-authenticate')).toBe('Bearer')
        expect(JSON.stringify(res.body)).not.toContain('MONITORING_')
      }
    }
    expect(await rows()).toEqual([]) // the refused PUTs wrote nothing

    const list = await call(relay, 'GET', '/admin/flags')
    expect(list.status).toBe(200)
    expect(list.body.flags.map((f: { key: string; tier: string }) => [f.key, f.tier])).toEqual([
      ['MONITORING_ADAPTER_TYPE', 'default'],
      ['MONITORING_DUAL_MODE', 'default'],
      ['MONITORING_USE_ADAPTER', 'default'],
    ])
    expect((await call(relay, 'GET', '/admin/flags/new-dashboard')).status).toBe(404)

    const put = await call(relay, 'PUT', '/admin/flags/new-dashboard', { body: definition })
    expect(put.status).toBe(200)
    expect(put.body).toMatchObject({ key: 'new-dashboard', definition: { key: 'new-dashboard', enabled: true, ...definition }, effective: { tier: 'database' } })
    const stored = await rows()
    expect(stored).toHaveLength(1)
    expect(stored[0]).toMatchObject({ key: 'new-dashboard', definition: { key: 'new-dashboard', type: 'boolean', defaultValue: false, enabled: true, rules: definition.rules }, updated_by: 'admin@127.0.0.1' })
    const got = await call(relay, 'GET', '/admin/flags/new-dashboard')
    expect(got.status).toBe(200)
    expect(got.body).toMatchObject({ key: 'new-dashboard', tier: 'database', definition: { rules: definition.rules } })
    expect((await call(relay, 'GET', '/admin/flags')).body.flags.map((f: { key: string }) => f.key)).toContain('new-dashboard')

    const bad = await call(relay, 'PUT', '/admin/flags/new-dashboard', { body: { type: 'boolean', defaultValue: false, rules: [{ percentage: 250, value: true }] } })
    expect(bad.status).toBe(400)
    expect(bad.body).toMatchObject({ error: 'invalid_flag', details: [{ path: 'rules.0.percentage' }] })
    expect((await rows())[0]!.definition.rules).toEqual(definition.rules) // the bad one was not kept

    const del = await call(relay, 'DELETE', '/admin/flags/new-dashboard')
    expect(del.status).toBe(200)
    expect(del.body).toMatchObject({ key: 'new-dashboard', deleted: true, effective: null })
    expect(await rows()).toEqual([])
    expect((await call(relay, 'GET', '/admin/flags/new-dashboard')).status).toBe(404)
    expect((await call(relay, 'DELETE', '/admin/flags/new-dashboard')).status).toBe(404)

    const audit = relay.logs.filter((l) => l.audit === true).map((l) => [l.action, l.flag, l.actor])
    expect(audit).toEqual([
      ['put', 'new-dashboard', 'admin@127.0.0.1'],
      ['delete', 'new-dashboard', 'admin@127.0.0.1'],
    ])
    expect(JSON.stringify(relay.logs) + relay.stderr()).not.toContain(TOKEN)
  })

  it('POST /admin/dlq/requeue: 401 without the right token (the entry stays parked); with it, the parked entry goes back, is replayed and stored once', async () => {
    const { db, relay } = await relayOnFreshDatabase('admin_requeue')
    // A row the database refuses until the constraint is dropped again.
    await sql(db.url, `alter table public.monitoring_events add constraint no_poison check (not (data ? 'poison'))`)
    const events = makeEvents(10, 'requeue')
    events[3] = { ...events[3], data: { ...(events[3]!.data as object), poison: true } }
    const posted = await postEvents(relay.url, events)
    expect(posted.status).toBe(202)
    const poisonId: string = posted.body.ids[3]
    await waitFor(async () => (await call(relay, 'GET', '/admin/dlq')).body.parked === 1, 'the poison row to be parked', 30_000, 100)
    await waitFor(async () => (await sql(db.url, 'select 1 from public.monitoring_events')).length === 9, 'the other nine rows stored', 30_000, 100)
    const parkedPage = await call(relay, 'GET', '/admin/dlq?parked=true')
    expect(parkedPage.body.entries).toHaveLength(1)
    const entry = parkedPage.body.entries[0]
    expect(entry).toMatchObject({ sink: 'store', events: [{ id: poisonId }], parked: { reason: expect.stringMatching(/no_poison/) } })

    for (const [what, token] of BAD_TOKENS) {
      const res = await call(relay, 'POST', `/admin/dlq/requeue?id=${entry.id}`, { token })
      expect({ what, status: res.status, error: res.body.error }).toEqual({ what, status: 401, error: 'unauthorized' })
      expect(res.headers.get('www-authenticate')).toBe('Bearer')
    }
    expect((await call(relay, 'POST', '/admin/dlq/requeue?id=not-a-number')).status).toBe(400)
    expect((await call(relay, 'POST', '/admin/dlq/requeue?id=0')).status).toBe(400)
    // An id that is not a parked entry requeues nothing.
    expect(await call(relay, 'POST', `/admin/dlq/requeue?id=${entry.id + 1000}`)).toMatchObject({ status: 200, body: { requeued: 0 } })
    expect(await call(relay, 'POST', '/admin/dlq/requeue?sink=realtime')).toMatchObject({ status: 200, body: { requeued: 0 } })
    const still = await call(relay, 'GET', '/admin/dlq')
    expect(still.body).toMatchObject({ parked: 1 })
    expect((await sql(db.url, 'select 1 from public.monitoring_events where id = $1', [poisonId])).length).toBe(0)

    // Fixed: the operator drops the constraint and requeues.
    await sql(db.url, 'alter table public.monitoring_events drop constraint no_poison')
    const requeued = await call(relay, 'POST', `/admin/dlq/requeue?id=${entry.id}`)
    expect(requeued).toMatchObject({ status: 200, body: { requeued: 1 } })
    await waitFor(async () => (await sql(db.url, 'select 1 from public.monitoring_events where id = $1', [poisonId])).length === 1, 'the requeued event to be stored', 30_000, 100)
    await waitFor(async () => {
      const dlq = (await call(relay, 'GET', '/admin/dlq')).body
      return dlq.depth === 0 && dlq.parked === 0
    }, 'the DLQ to be empty', 30_000, 100)
    expect(await call(relay, 'POST', `/admin/dlq/requeue?id=${entry.id}`)).toMatchObject({ status: 200, body: { requeued: 0 } })
    const stored = await sql<{ id: string; n: number }>(db.url, 'select id::text as id, count(*)::int as n from public.monitoring_events group by id')
    expect(stored.map((r) => r.id).sort()).toEqual([...posted.body.ids].sort())
    expect(stored.every((r) => r.n === 1)).toBe(true)
    expect(JSON.stringify(relay.logs) + relay.stderr()).not.toContain(TOKEN)
  })
})
