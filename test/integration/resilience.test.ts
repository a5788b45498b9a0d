import pg from 'pg'
import { afterAll, describe, expect, it } from 'vitest'
import { startFaultProxy, type FaultMode, type FaultProxy } from '../fixtures/faultProxy.js'
import { DashboardClient, seqProblems } from '../helpers/dashboard.js'
import { describePg, freshDatabase } from '../helpers/pg.js'
import { makeEvents, postEvents, removeDir, startRelayProcess, type RelayProcess } from '../helpers/relayProcess.js'
import { waitFor } from '../helpers/wait.js'

const ADMIN = 'admin-test-token'
const admin = { authorization: `Bearer ${ADMIN}` }

/** Relay settings for these tests: short cool-down and probes so a 30 s outage shows several cycles. */
const RELAY_ENV = {
  ADMIN_TOKEN: ADMIN,
  BREAKER_OPEN_MS: '5000',
  BREAKER_MIN_CALLS: '5',
  BREAKER_WINDOW: '10',
  BREAKER_HALF_OPEN_PROBES: '3',
  STORE_STATEMENT_TIMEOUT_MS: '1000',
  STORE_PROBE_INTERVAL_MS: '500',
  CONNECTION_BACKOFF_BASE_MS: '250',
  CONNECTION_BACKOFF_CAP_MS: '5000',
  DLQ_POLL_INTERVAL_MS: '250',
  SHUTDOWN_TIMEOUT_MS: '3000',
}

const CALL_TIMEOUT_MS = Number(RELAY_ENV.STORE_STATEMENT_TIMEOUT_MS)
const PROBE_INTERVAL_MS = Number(RELAY_ENV.STORE_PROBE_INTERVAL_MS)
const BREAKER_OPEN_MS = Number(RELAY_ENV.BREAKER_OPEN_MS)
/** The test's clock reading and the relay's log stamps are a few ms apart; a call just begun when the stall began. */
const CLOCK_TOLERANCE_MS = 100
/** How late a timer or a log line may be on these shared 2-core machines under 2,000 events/s. */
const LATENESS_MS = 1000

const logTime = (l: Record<string, unknown>): number => Date.parse(String(l.time))

/** The relay's log lines with message `msg` stamped in [t0, t1), in order. */
function logsBetween(relay: RelayProcess, msg: string, t0: number, t1: number): Array<Record<string, unknown>> {
  return relay.logs.filter((l) => l.msg === msg && logTime(l) >= t0 && logTime(l) < t1)
}

async function adminGet(relay: RelayProcess, path: string): Promise<any> {
  const res = await fetch(`${relay.url}${path}`, { headers: admin })
  return res.json()
}

/** Steady load: `perSecond` events/s in requests of 100, until stopped; records acked ids. */
function steadyLoad(url: string, perSecond: number) {
  const acked: string[] = []
  const statuses = new Map<number, number>()
  let running = true
  let sent = 0
  const started = Date.now()
  const loop = (async () => {
    while (running) {
      const due = Math.floor(((Date.now() - started) / 1000) * perSecond)
      if (sent >= due) {
        await new Promise((r) => setTimeout(r, 10))
        continue
      }
      const n = Math.min(100, due - sent)
      const events = makeEvents(n, `load-${sent}`)
      sent += n
      try {
        const res = await postEvents(url, events)
        statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1)
        if (res.status === 202) acked.push(...res.body.ids)
      } catch {
        statuses.set(0, (statuses.get(0) ?? 0) + 1)
      }
    }
  })()
  return {
    acked,
    statuses,
    async stop() {
      running = false
      await loop
    },
  }
}

async function rowsOf(url: string): Promise<Array<{ id: string; tag: string }>> {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  try {
    const r = await client.query(`select id::text as id, data->>'tag' as tag from monitoring_events`)
    return r.rows
  } finally {
    await client.end()
  }
}

async function exactlyOnce(dbUrl: string, acked: string[]): Promise<void> {
  const rows = await rowsOf(dbUrl)
  const ids = new Set(rows.map((r) => r.id))
  expect(acked.filter((id) => !ids.has(id))).toEqual([])
  const tags = rows.map((r) => r.tag).filter(Boolean)
  expect(tags.length - new Set(tags).size).toBe(0)
}

describePg('resilience against a real Postgres behind a fault proxy', () => {
  const cleanups: Array<() => Promise<unknown>> = []
  afterAll(async () => {
    for (const c of cleanups.reverse()) await c().catch(() => {})
  })

  async function setup(): Promise<{ db: { url: string }; proxy: FaultProxy }> {
    const db = await freshDatabase('resil')
    cleanups.push(() => db.drop())
    const proxy = await startFaultProxy({ host: '127.0.0.1', port: 5432 })
    cleanups.push(() => proxy.close())
    return { db, proxy }
  }

  async function outage(mode: Exclude<FaultMode, 'pass'>) {
    const { db, proxy } = await setup()
    const relay = await startRelayProcess({ ...RELAY_ENV, DATABASE_URL: proxy.url(db.url) })
    cleanups.push(async () => {
      relay.kill('SIGKILL')
      await removeDir(relay.dataDir)
    })
    const live = new DashboardClient(relay.url)
    await live.opened
    const load = steadyLoad(relay.url, 2000)
    await waitFor(() => load.acked.length >= 4000, 'load to warm up', 20_000)

    proxy.setMode(mode)
    const cutAt = Date.now()
    const duringOutage: number[] = []
    let sawOpen = false
    let sawDegraded = false
    const deliveredAtCut = live.events.length
    while (Date.now() - cutAt < 30_000) {
      const state = await adminGet(relay, '/admin/state')
      if (JSON.stringify(state.machines.storeBreaker) === '"open"') sawOpen = true
      if (JSON.stringify(state.machines.supervisor).includes('degraded')) sawDegraded = true
      duringOutage.push(live.events.length)
      await new Promise((r) => setTimeout(r, 500))
    }
    // Attempts the store saw after the breaker had time to open, until the end of the outage.
    const attempts = proxy.attemptsSince(cutAt + 5000)
    proxy.setMode('pass')
    const restoredAt = Date.now()

    expect(sawOpen).toBe(true)
    expect(sawDegraded).toBe(true)
    // Dashboards kept receiving events throughout the outage.
    expect(live.events.length).toBeGreaterThan(deliveredAtCut + 40_000)
    // Bounded by probes and backoff, not by the event rate (20 requests/s → ~500 batches in 25 s).
    expect(attempts).toBeLessThanOrEqual(40)

    await waitFor(async () => (await adminGet(relay, '/admin/dlq')).depth === 0 && (await adminGet(relay, '/admin/state')).machines.storeBreaker === 'closed', 'the DLQ to drain after recovery', 90_000, 250)
    await load.stop()
    const dlq = await adminGet(relay, '/admin/dlq')
    expect(dlq.depth).toBe(0)
    expect(load.statuses.get(202)).toBeGreaterThan(0)
    await live.waitForCount(load.acked.length)
    expect(seqProblems(live.events)).toEqual([])
    relay.kill('SIGTERM')
    expect((await relay.exited).code).toBe(0)
    await exactlyOnce(db.url, load.acked)
    return { attempts, cutAt, restoredAt, relay }
  }

  it('Postgres cut for 30 s under 2,000 events/s: breaker opens, probes only, DLQ drains, every acked event stored once, dashboards served throughout', async () => {
    const { relay, cutAt, restoredAt } = await outage('cut')
    // A refused connection is an answer: the breaker opens without waiting for any time-out.
    const lost = logsBetween(relay, 'store connection lost', cutAt, restoredAt)
    expect(lost.length).toBeGreaterThan(0)
    expect(lost[0]!.code).not.toBe('timeout')
    const opened = logsBetween(relay, 'store circuit breaker opened', cutAt, restoredAt)
    expect(opened.length).toBeGreaterThan(0)
    expect(logTime(opened[0]!) - cutAt).toBeLessThan(CALL_TIMEOUT_MS)
    expect(logsBetween(relay, 'batch moved to the dead-letter queue', cutAt, restoredAt).length).toBeGreaterThan(0)
  }, 180_000)

  it('Postgres stalled for 30 s: calls time out after STORE_STATEMENT_TIMEOUT_MS, count as failures, the breaker opens and cools down for BREAKER_OPEN_MS; same result', async () => {
    const { relay, cutAt, restoredAt } = await outage('stall')
    // A stalled network never errors by itself: every failure is the relay's own time-out, and
    // nothing fails before that time-out has run out.
    const lost = logsBetween(relay, 'store connection lost', cutAt, restoredAt)
    expect(lost.length).toBeGreaterThan(0)
    expect(lost[0]!.code).toBe('timeout') // the liveness ping's
    for (const l of lost) expect(l.message).toBe(`store call timed out after ${CALL_TIMEOUT_MS} ms`)
    const firstLost = logTime(lost[0]!) - cutAt
    expect(firstLost).toBeGreaterThanOrEqual(CALL_TIMEOUT_MS - CLOCK_TOLERANCE_MS)
    // The first ping after the stall began (within one probe interval) timed out.
    expect(firstLost).toBeLessThanOrEqual(CALL_TIMEOUT_MS + PROBE_INTERVAL_MS + LATENESS_MS)

    const opened = logsBetween(relay, 'store circuit breaker opened', cutAt, restoredAt)
    expect(opened.length).toBeGreaterThan(0)
    expect(opened[0]).toMatchObject({ name: 'store', failureRate: expect.any(Number) })
    const firstOpen = logTime(opened[0]!) - cutAt
    expect(firstOpen).toBeGreaterThanOrEqual(CALL_TIMEOUT_MS - CLOCK_TOLERANCE_MS)
    expect(firstOpen).toBeLessThanOrEqual(CALL_TIMEOUT_MS + PROBE_INTERVAL_MS + LATENESS_MS)

    // Each half-open came one cool-down after the opening before it; the probes timed out and
    // opened it again, so a 30 s stall shows several cycles of (cool-down + time-out).
    const halfOpened = logsBetween(relay, 'store circuit breaker half-open: probing', cutAt, restoredAt)
    expect(halfOpened.length).toBeGreaterThanOrEqual(2)
    for (const h of halfOpened) {
      const before = opened.filter((o) => logTime(o) <= logTime(h)).at(-1)
      expect(before, `an opening before the half-open at ${String(h.time)}`).toBeDefined()
      const coolDown = logTime(h) - logTime(before!)
      expect(coolDown).toBeGreaterThanOrEqual(BREAKER_OPEN_MS - CLOCK_TOLERANCE_MS)
      expect(coolDown).toBeLessThanOrEqual(BREAKER_OPEN_MS + LATENESS_MS)
    }
    const reopened = opened.filter((o) => logTime(o) > logTime(halfOpened[0]!))
    expect(reopened.length).toBeGreaterThanOrEqual(1)
    expect(opened.length).toBeLessThanOrEqual(Math.ceil((restoredAt - cutAt) / BREAKER_OPEN_MS) + 1)
    // The breaker never closed while the store was stalled.
    expect(logsBetween(relay, 'store circuit breaker closed', cutAt, restoredAt)).toEqual([])
  }, 180_000)

  it('SIGTERM while the store is down exits 0 within SHUTDOWN_TIMEOUT_MS; restart with the store up replays the DLQ; every acked event stored once', async () => {
    const { db, proxy } = await setup()
    const relay = await startRelayProcess({ ...RELAY_ENV, DATABASE_URL: proxy.url(db.url) })
    cleanups.push(() => removeDir(relay.dataDir))
    const load = steadyLoad(relay.url, 1000)
    await waitFor(() => load.acked.length >= 1000, 'some load', 20_000)
    proxy.setMode('cut')
    await waitFor(() => load.acked.length >= 4000, 'more load during the outage', 20_000)
    const t0 = Date.now()
    relay.kill('SIGTERM')
    const exit = await relay.exited
    const took = Date.now() - t0
    await load.stop()
    expect(exit.code).toBe(0)
    // SHUTDOWN_TIMEOUT_MS (3 s) bounds the drain; the DLQ flush has its own 5 s bound.
    expect(took).toBeLessThan(3000 + 5000 + 2000)
    const closed = relay.logs.find((l) => l.msg === 'relay closed')!
    expect(Number(closed.dlqEvents)).toBeGreaterThan(0)

    proxy.setMode('pass')
    const restarted = await startRelayProcess({ ...RELAY_ENV, DATABASE_URL: proxy.url(db.url) }, { dataDir: relay.dataDir })
    try {
      await waitFor(async () => (await adminGet(restarted, '/admin/dlq')).depth === 0, 'the DLQ to be replayed', 60_000, 250)
      restarted.kill('SIGTERM')
      expect((await restarted.exited).code).toBe(0)
    } finally {
      restarted.kill('SIGKILL')
    }
    await exactlyOnce(db.url, load.acked)
  }, 120_000)

  it('SIGKILL during DLQ replay, then restart: still exactly once', async () => {
    const { db, proxy } = await setup()
    const env = { ...RELAY_ENV, DATABASE_URL: proxy.url(db.url), BATCH_HIGH_SIZE: '20' }
    const relay = await startRelayProcess(env)
    cleanups.push(() => removeDir(relay.dataDir))
    proxy.setMode('cut')
    const acked: string[] = []
    for (let i = 0; i < 60; i++) {
      const res = await postEvents(relay.url, makeEvents(200, `replay-${i}`))
      expect(res.status).toBe(202)
      acked.push(...res.body.ids)
    }
    await waitFor(async () => (await adminGet(relay, '/admin/dlq')).events >= 12_000, 'all events dead-lettered', 60_000, 250)
    proxy.setMode('pass')
    await waitFor(() => relay.logs.some((l) => l.msg === 'dead-letter entries replayed'), 'replay to begin', 60_000)
    relay.kill('SIGKILL')
    await relay.exited
    const restarted = await startRelayProcess(env, { dataDir: relay.dataDir })
    try {
      await waitFor(async () => (await adminGet(restarted, '/admin/dlq')).depth === 0, 'the DLQ to drain', 90_000, 250)
      restarted.kill('SIGTERM')
      expect((await restarted.exited).code).toBe(0)
    } finally {
      restarted.kill('SIGKILL')
    }
    await exactlyOnce(db.url, acked)
  }, 180_000)

  it('a poison row is parked with its reason and the rest of its batch flows', async () => {
    const { db } = await setup()
    const relay = await startRelayProcess({ ...RELAY_ENV, DATABASE_URL: db.url })
    cleanups.push(async () => {
      relay.kill('SIGKILL')
      await removeDir(relay.dataDir)
    })
    const client = new pg.Client({ connectionString: db.url })
    await client.connect()
    await client.query(`ALTER TABLE monitoring_events ADD CONSTRAINT no_poison CHECK (NOT (data ? 'poison'))`)
    await client.end()
    const events = makeEvents(10, 'poison-batch')
    events[4] = { ...events[4], data: { ...(events[4]!.data as object), poison: true } }
    const res = await postEvents(relay.url, events)
    expect(res.status).toBe(202)
    const poisonId = res.body.ids[4]
    await waitFor(async () => (await adminGet(relay, '/admin/dlq')).parked === 1, 'the poison row to be parked', 30_000, 100)
    const dlq = await adminGet(relay, '/admin/dlq?parked=true')
    expect(dlq.entries).toHaveLength(1)
    expect(dlq.entries[0].events.map((e: { id: string }) => e.id)).toEqual([poisonId])
    expect(dlq.entries[0].parked.reason).toMatch(/no_poison/)
    const after = await postEvents(relay.url, makeEvents(5, 'after-poison'))
    expect(after.status).toBe(202)
    await waitFor(async () => (await rowsOf(db.url)).length === 14, 'the other 14 rows stored', 30_000, 100)
    const ids = new Set((await rowsOf(db.url)).map((r) => r.id))
    expect(ids.has(poisonId)).toBe(false)
    expect(relay.logs.some((l) => l.msg === 'poison event parked in the dead-letter queue')).toBe(true)
  }, 60_000)

  it('back-pressure: with the store down and the DLQ at its bound, ingest answers 429 with Retry-After, and every acked event is stored after recovery', async () => {
    const { db, proxy } = await setup()
    const env = { ...RELAY_ENV, DATABASE_URL: proxy.url(db.url), DLQ_MAX_BYTES: '1048576' }
    const relay = await startRelayProcess(env)
    cleanups.push(async () => {
      relay.kill('SIGKILL')
      await removeDir(relay.dataDir)
    })
    proxy.setMode('cut')
    const acked: string[] = []
    let throttled: { status: number; retryAfter: string | null; body: any } | undefined
    for (let i = 0; i < 400 && !throttled; i++) {
      const res = await postEvents(relay.url, makeEvents(100, `bp-${i}`).map((e) => ({ ...e, data: { ...(e.data as object), pad: 'x'.repeat(200) } })))
      if (res.status === 202) acked.push(...res.body.ids)
      else if (res.status === 429) throttled = { status: res.status, retryAfter: res.headers.get('retry-after'), body: res.body }
      else throw new Error(`unexpected ${res.status} ${JSON.stringify(res.body)}`)
      // Let the flusher move batches to the DLQ, as a real outage would.
      if (i % 10 === 9) await waitFor(async () => (await adminGet(relay, '/admin/state')).machines.storeFlusher.delivery !== 'flushing', 'flusher between batches', 10_000, 20)
    }
    expect(throttled).toMatchObject({ status: 429, body: { error: 'overloaded', queue: 'dead_letter_queue' } })
    expect(Number(throttled!.retryAfter)).toBeGreaterThan(0)
    expect((await fetch(`${relay.url}/readyz`)).status).toBe(200)
    proxy.setMode('pass')
    await waitFor(async () => (await adminGet(relay, '/admin/dlq')).depth === 0, 'the DLQ to drain', 60_000, 250)
    const after = await postEvents(relay.url, makeEvents(1, 'bp-after'))
    expect(after.status).toBe(202)
    acked.push(...after.body.ids)
    relay.kill('SIGTERM')
    expect((await relay.exited).code).toBe(0)
    await exactlyOnce(db.url, acked)
  }, 120_000)
})
