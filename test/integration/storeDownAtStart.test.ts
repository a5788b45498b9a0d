import pg from 'pg'
import { afterEach, expect, it } from 'vitest'
import { openPostgresStore } from '../../src/store/postgres.js'
import { startFaultProxy } from '../fixtures/faultProxy.js'
import { DashboardClient, seqProblems } from '../helpers/dashboard.js'
import { describePg, freshDatabase } from '../helpers/pg.js'
import { makeEvents, postEvents, removeDir, startRelayProcess, type RelayProcess } from '../helpers/relayProcess.js'
import { waitFor } from '../helpers/wait.js'

const ADMIN = 'store-down-admin'
const RELAY_ENV = {
  ADMIN_TOKEN: ADMIN,
  BREAKER_OPEN_MS: '2000',
  BREAKER_HALF_OPEN_PROBES: '2',
  STORE_STATEMENT_TIMEOUT_MS: '1000',
  STORE_PROBE_INTERVAL_MS: '500',
  CONNECTION_BACKOFF_BASE_MS: '100',
  CONNECTION_BACKOFF_CAP_MS: '1000',
  DLQ_POLL_INTERVAL_MS: '200',
  SHUTDOWN_TIMEOUT_MS: '5000',
}

async function adminGet(relay: RelayProcess, path: string): Promise<any> {
  const res = await fetch(`${relay.url}${path}`, { headers: { authorization: `Bearer ${ADMIN}` } })
  return res.json()
}

/** Straight to Postgres, never through the proxy. */
async function sql<R extends pg.QueryResultRow>(url: string, text: string): Promise<R[]> {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  try {
    return (await client.query<R>(text)).rows
  } finally {
    await client.end()
  }
}

/** Rows per id, or undefined while the table does not exist (a database never migrated). */
async function storedIds(url: string): Promise<Map<string, number> | undefined> {
  const [exists] = await sql<{ exists: boolean }>(url, "select to_regclass('public.monitoring_events') is not null as exists")
  if (!exists?.exists) return undefined
  const rows = await sql<{ id: string; n: number }>(url, 'select id::text as id, count(*)::int as n from public.monitoring_events group by id')
  return new Map(rows.map((r) => [r.id, r.n]))
}

describePg('store down at start: the real daemon, DATABASE_URL through a fault proxy that refuses connections', () => {
  const cleanups: Array<() => Promise<unknown>> = []
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c().catch((err: Error) => console.warn(`cleanup failed: ${err.message}`))
  })

  it.each([
    ['a database migrated before', true],
    ['a brand-new database (migrations not yet applied)', false],
  ])('%s: starts, acknowledges and serves dashboards live; once the store passes, every acked event is stored exactly once', async (_what, premigrated) => {
    const db = await freshDatabase('store_down_start')
    cleanups.push(() => db.drop())
    if (premigrated) {
      const store = await openPostgresStore(db.url)
      try {
        await store.migrate()
      } finally {
        await store.close()
      }
    }
    const proxy = await startFaultProxy({ host: '127.0.0.1', port: 5432 })
    cleanups.push(() => proxy.close())
    proxy.setMode('refuse')

    const relay = await startRelayProcess({ ...RELAY_ENV, DATABASE_URL: proxy.url(db.url) })
    cleanups.push(async () => {
      relay.kill('SIGKILL')
      await removeDir(relay.dataDir)
    })
    // It started (startRelayProcess waited for /readyz 200) although every connection was refused.
    expect(relay.logs.some((l) => typeof l.msg === 'string' && l.msg.startsWith('store unavailable at start'))).toBe(true)
    expect(relay.logs.some((l) => l.msg === 'store ready')).toBe(false)
    expect(proxy.stats().refused).toBeGreaterThan(0)
    expect(proxy.stats().forwarded).toBe(0)

    const live = new DashboardClient(relay.url)
    await live.opened
    const acked: string[] = []
    for (let i = 0; i < 20; i++) {
      const res = await postEvents(relay.url, makeEvents(50, `down-${i}`))
      expect(res.status).toBe(202)
      expect(res.body).toMatchObject({ accepted: 50, first_seq: i * 50 + 1, last_seq: i * 50 + 50 })
      acked.push(...res.body.ids)
    }
    // Delivered live while the store is still down.
    await live.waitForCount(acked.length, 30_000)
    expect(live.events.map((e) => e.id)).toEqual(acked)
    expect(seqProblems(live.events)).toEqual([])
    expect(live.events[0]!.seq).toBe(1)
    expect((await fetch(`${relay.url}/readyz`)).status).toBe(200)
    expect(proxy.stats().forwarded).toBe(0)
    expect(await storedIds(db.url)).toEqual(premigrated ? new Map() : undefined) // nothing reached Postgres
    const state = await adminGet(relay, '/admin/state')
    expect(state.machines.storeBreaker).not.toBe('closed')

    proxy.setMode('pass')
    // Until every acked event is stored, or the relay parks one of these valid events as poison
    // (which it would never retry by itself): then fail at once, saying why.
    const recovered = await waitFor(
      async () => {
        const dlq = await adminGet(relay, '/admin/dlq?parked=true&limit=1')
        if (dlq.parked > 0) return { parked: dlq.parked as number, reason: String(dlq.entries[0]?.parked?.reason) }
        const stored = await storedIds(db.url)
        return stored !== undefined && acked.every((id) => stored.has(id)) ? { parked: 0, reason: '' } : undefined
      },
      'every event acknowledged during the outage to be stored',
      60_000,
      250,
    )
    expect(recovered, 'valid acknowledged events parked as poison instead of stored').toEqual({ parked: 0, reason: '' })
    // New events after recovery flow straight through, live and stored.
    const after = await postEvents(relay.url, makeEvents(10, 'after'))
    expect(after.status).toBe(202)
    acked.push(...after.body.ids)
    await live.waitForCount(acked.length, 30_000)
    expect(live.events.map((e) => e.id)).toEqual(acked)
    await waitFor(async () => {
      const stored = await storedIds(db.url)
      return stored !== undefined && acked.every((id) => stored.has(id))
    }, 'the events posted after recovery to be stored', 30_000, 250)
    await waitFor(async () => (await adminGet(relay, '/admin/dlq')).depth === 0, 'the DLQ to drain', 30_000, 250)
    const dlq = await adminGet(relay, '/admin/dlq')
    expect(dlq).toMatchObject({ depth: 0, parked: 0 })
    expect((await adminGet(relay, '/admin/state')).machines.storeBreaker).toBe('closed')

    live.close()
    relay.kill('SIGTERM')
    expect((await relay.exited).code).toBe(0)
    // Exactly once: every acknowledged id one row, nothing else stored.
    const stored = (await storedIds(db.url))!
    expect([...stored.keys()].sort()).toEqual([...acked].sort())
    expect([...stored.values()].filter((n) => n !== 1)).toEqual([])
    const seqs = await sql<{ min: number; max: number; n: number }>(db.url, 'select min(seq)::int as min, max(seq)::int as max, count(distinct seq)::int as n from public.monitoring_events')
    expect(seqs).toEqual([{ min: 1, max: acked.length, n: acked.length }])
  }, 150_000)
})
