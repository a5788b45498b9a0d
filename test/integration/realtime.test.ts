import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRealtimePeer, type RealtimePeer } from '../fixtures/realtimePeer.js'
import { DashboardClient, seqProblems } from '../helpers/dashboard.js'
import { startInProcessRelay, type InProcessRelay } from '../helpers/inProcessRelay.js'
import { describePg, freshDatabase } from '../helpers/pg.js'
import { RealtimeDashboard } from '../helpers/realtimeDashboard.js'
import { makeEvents, postEvents } from '../helpers/relayProcess.js'
import { waitFor } from '../helpers/wait.js'

const TOPIC = 'realtime:monitoring'
const ADMIN = 'rt-admin'

/** Publishes `total` events at about `perSecond`, in requests of 100; returns the acked ids in order. */
async function publishSteadily(url: string, total: number, perSecond: number, prefix: string): Promise<string[]> {
  const acked: string[] = []
  const started = Date.now()
  for (let sent = 0; sent < total; sent += 100) {
    const due = started + (sent / perSecond) * 1000
    if (Date.now() < due) await new Promise((r) => setTimeout(r, due - Date.now()))
    const res = await postEvents(url, makeEvents(Math.min(100, total - sent), `${prefix}-${sent}`))
    expect(res.status).toBe(202)
    acked.push(...res.body.ids)
  }
  return acked
}

async function state(r: InProcessRelay): Promise<Record<string, any>> {
  const res = await fetch(`${r.url}/admin/state`, { headers: { authorization: `Bearer ${ADMIN}` } })
  return ((await res.json()) as { machines: Record<string, any> }).machines
}

describePg('Supabase Realtime transport (against the protocol peer)', () => {
  let peer: RealtimePeer
  let db: { url: string; drop(): Promise<void> }
  const env = () => ({
    DATABASE_URL: db.url,
    ADMIN_TOKEN: ADMIN,
    MONITORING_USE_ADAPTER: 'true',
    MONITORING_ADAPTER_TYPE: 'realtime',
    SUPABASE_URL: peer.url,
    SUPABASE_SERVICE_ROLE_KEY: peer.keys.serviceRole,
    SUPABASE_ANON_KEY: peer.keys.anon,
    BREAKER_OPEN_MS: '2000',
    BREAKER_MIN_CALLS: '3',
    BREAKER_HALF_OPEN_PROBES: '2',
    REALTIME_ACK_TIMEOUT_MS: '1000',
    STORE_PROBE_INTERVAL_MS: '500',
  })

  beforeAll(async () => {
    peer = await startRealtimePeer()
    db = await freshDatabase('rt')
  })
  afterAll(async () => {
    await peer?.close()
    await db?.drop()
  })

  it('10,000 events reach a supabase-js dashboard in seq order, ≤ 1 message per 50 events, within the message rate and payload limits', async () => {
    const r = await startInProcessRelay(env())
    const dashboard = new RealtimeDashboard(peer.url, peer.keys.anon)
    const ws = new DashboardClient(r.url)
    try {
      await dashboard.subscribe()
      await ws.opened
      peer.resetCounters()
      const acked = await publishSteadily(r.url, 10_000, 2000, 'rt')
      await dashboard.waitForCount(10_000)
      await ws.waitForCount(10_000)
      expect(dashboard.events.map((e) => e.id)).toEqual(acked)
      expect(seqProblems(dashboard.events)).toEqual([])
      expect(seqProblems(ws.events)).toEqual([])
      const relayMessages = peer.topicCounters(TOPIC).events.monitoring_events!
      expect(relayMessages.count).toBeLessThanOrEqual(10_000 / 50)
      expect(peer.topicCounters(TOPIC).maxMessagesPerSecond).toBeLessThanOrEqual(100)
      expect(relayMessages.maxBytes).toBeLessThanOrEqual(250_000)
      expect(peer.counters().restRequests).toBe(0)
      // The relay joined with acks on, using the service-role key; the dashboard with the anon key.
      const keys = peer.sockets().map((s) => s.apikey)
      expect(keys).toContain(peer.keys.serviceRole)
      expect(keys).toContain(peer.keys.anon)
      expect(JSON.stringify(r.logs)).not.toContain(peer.keys.serviceRole)
      const config = await (await fetch(`${r.url}/config?client=dash-1`)).json()
      expect(config).toMatchObject({ client: 'dash-1', transport: 'realtime', realtime: { url: peer.url, anon_key: peer.keys.anon, channel: 'monitoring' } })
      expect(JSON.stringify(config)).not.toContain(peer.keys.serviceRole)
    } finally {
      ws.close()
      await dashboard.close()
      await r.stop()
    }
  }, 120_000)

  it('a tighter payload limit splits batches and no message exceeds it', async () => {
    const r = await startInProcessRelay({ ...env(), REALTIME_MAX_PAYLOAD_BYTES: '20000' })
    const dashboard = new RealtimeDashboard(peer.url, peer.keys.anon)
    try {
      await dashboard.subscribe()
      peer.resetCounters()
      const big = makeEvents(500, 'big').map((e) => ({ ...e, data: { ...(e.data as object), pad: 'é'.repeat(300) } }))
      for (let i = 0; i < big.length; i += 100) expect((await postEvents(r.url, big.slice(i, i + 100))).status).toBe(202)
      await dashboard.waitForCount(500)
      expect(peer.topicCounters(TOPIC).events.monitoring_events!.maxBytes).toBeLessThanOrEqual(20_000)
      expect(seqProblems(dashboard.events)).toEqual([])
    } finally {
      await dashboard.close()
      await r.stop()
    }
  }, 60_000)

  const faults: Array<[string, (p: RealtimePeer) => void, (p: RealtimePeer) => void]> = [
    ['dropped sockets', (p) => void p.dropSockets(), () => {}],
    ['refused joins', (p) => (p.refuseJoins('realtime unavailable'), p.dropSockets()), (p) => p.refuseJoins(false)],
    ['a stalled server', (p) => p.stall(true), (p) => p.stall(false)],
    ['rate-limit errors', (p) => p.rateLimit({ perSecond: 1, mode: 'reply' }), (p) => p.rateLimit(false)],
  ]

  it.each(faults)('%s: the breaker opens, the relay fails over (/config → websocket), /ws misses nothing, recovery returns to healthy without a join storm', async (_name, inject, heal) => {
    const r = await startInProcessRelay(env())
    const ws = new DashboardClient(r.url)
    try {
      await ws.opened
      await waitFor(async () => (await state(r)).realtimeConnection === 'connected', 'the Realtime channel to join', 15_000)
      peer.resetCounters()
      let sent = 0
      let running = true
      const load = (async () => {
        while (running) {
          const res = await postEvents(r.url, makeEvents(50, `fault-${sent}`))
          expect(res.status).toBe(202)
          sent += 50
          await new Promise((resolve) => setTimeout(resolve, 25))
        }
      })()
      inject(peer)
      await waitFor(async () => JSON.stringify((await state(r)).supervisor).includes('failedOver'), 'failover', 30_000, 100)
      expect(((await (await fetch(`${r.url}/config?client=c1`)).json()) as { transport: string }).transport).toBe('websocket')
      heal(peer)
      await waitFor(async () => {
        const s = await state(r)
        return s.realtimeBreaker === 'closed' && JSON.stringify(s.supervisor).includes('"realtime":{"healthy"')
      }, 'recovery to healthy', 60_000, 100)
      expect(((await (await fetch(`${r.url}/config?client=c1`)).json()) as { transport: string }).transport).toBe('realtime')
      running = false
      await load
      await ws.waitForCount(sent)
      expect(ws.events).toHaveLength(sent)
      expect(seqProblems(ws.events)).toEqual([])
      // supabase-js rejoins by itself with backoff; the relay adds no joins of its own.
      expect(peer.counters().joins).toBeLessThanOrEqual(10)
      expect(r.logs.some((l) => l.msg === 'state changed' && l.machine === 'supervisor' && String(l.to).includes('realtime.failedOver'))).toBe(true)
    } finally {
      peer.clearFaults()
      ws.close()
      await r.stop()
    }
  }, 120_000)
})

describePg('adapter modes', () => {
  let peer: RealtimePeer
  let db: { url: string; drop(): Promise<void> }
  beforeAll(async () => {
    peer = await startRealtimePeer()
    db = await freshDatabase('modes')
  })
  afterAll(async () => {
    await peer?.close()
    await db?.drop()
  })

  const modes: Array<[string, Record<string, string>, boolean]> = [
    ['MONITORING_USE_ADAPTER=false (the default)', {}, false],
    ['adapter on, type websocket', { MONITORING_USE_ADAPTER: 'true', MONITORING_ADAPTER_TYPE: 'websocket' }, false],
    ['adapter on, type realtime', { MONITORING_USE_ADAPTER: 'true', MONITORING_ADAPTER_TYPE: 'realtime' }, true],
    ['adapter on, type auto with SUPABASE_URL', { MONITORING_USE_ADAPTER: 'true', MONITORING_ADAPTER_TYPE: 'auto' }, true],
    ['MONITORING_DUAL_MODE=true', { MONITORING_DUAL_MODE: 'true' }, true],
  ]

  it.each(modes)('%s delivers where it should and nowhere else', async (_name, modeEnv, realtime) => {
    const r = await startInProcessRelay({
      DATABASE_URL: db.url,
      SUPABASE_URL: peer.url,
      SUPABASE_SERVICE_ROLE_KEY: peer.keys.serviceRole,
      SUPABASE_ANON_KEY: peer.keys.anon,
      ...modeEnv,
    })
    const ws = new DashboardClient(r.url)
    try {
      await ws.opened
      peer.resetCounters()
      expect((await postEvents(r.url, makeEvents(20, 'mode'))).status).toBe(202)
      await ws.waitForCount(20)
      if (realtime) await waitFor(() => (peer.topicCounters(TOPIC).events.monitoring_events?.count ?? 0) > 0, 'a broadcast', 10_000)
      else {
        // Give a Realtime path time to show itself if it (wrongly) existed: the store flush proves the pipeline ran.
        await waitFor(async () => (await fetch(`${r.url}/metrics`).then((x) => x.text())).includes('relay_events_stored_total 20'), 'the store flush', 10_000)
        expect(peer.counters().connections).toBe(0)
      }
      expect(ws.events).toHaveLength(20)
    } finally {
      ws.close()
      await r.stop()
    }
  }, 60_000)

  it('adapter on, type auto without SUPABASE_URL: WebSocket only, no error', async () => {
    const r = await startInProcessRelay({ DATABASE_URL: db.url, MONITORING_USE_ADAPTER: 'true', MONITORING_ADAPTER_TYPE: 'auto' })
    try {
      expect(r.relay.realtimeOn).toBe(false)
    } finally {
      await r.stop()
    }
  })
})
