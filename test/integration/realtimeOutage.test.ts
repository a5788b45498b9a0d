import { afterAll, beforeAll, expect, it } from 'vitest'
import { startRealtimePeer, type RealtimePeer } from '../fixtures/realtimePeer.js'
import { seqProblems } from '../helpers/dashboard.js'
import { startInProcessRelay, type InProcessRelay } from '../helpers/inProcessRelay.js'
import { describePg, freshDatabase } from '../helpers/pg.js'
import { RealtimeDashboard } from '../helpers/realtimeDashboard.js'
import { makeEvents, postEvents } from '../helpers/relayProcess.js'
import { waitFor } from '../helpers/wait.js'

const ADMIN = 'outage-admin'

async function machines(r: InProcessRelay): Promise<Record<string, any>> {
  const res = await fetch(`${r.url}/admin/state`, { headers: { authorization: `Bearer ${ADMIN}` } })
  return ((await res.json()) as { machines: Record<string, any> }).machines
}

/** Posts 100 events every 50 ms (2,000 events/s) until stopped. */
function load(r: InProcessRelay, prefix: string) {
  let running = true
  const loop = (async () => {
    const started = Date.now()
    for (let i = 0; running; i++) {
      const due = started + i * 50
      if (Date.now() < due) await new Promise((resolve) => setTimeout(resolve, due - Date.now()))
      const res = await postEvents(r.url, makeEvents(100, `${prefix}-${i}`))
      expect(res.status).toBe(202)
    }
  })()
  return {
    stop: async () => {
      running = false
      await loop
    },
  }
}

describePg('a Realtime outage costs subscribers as little as possible', () => {
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
    REALTIME_ACK_TIMEOUT_MS: '1000',
    // The cool-down is far longer than the wait the test allows: recovery must not wait it out.
    BREAKER_OPEN_MS: '60000',
    REALTIME_MAX_MESSAGES_PER_SECOND: '100',
  })

  beforeAll(async () => {
    peer = await startRealtimePeer()
    db = await freshDatabase('rtoutage')
  })
  afterAll(async () => {
    await peer?.close()
    await db?.drop()
  })

  it('joins refused and sockets dropped for 15 s under 2,000 events/s, then healed: an event published 1 s after the channel is back reaches a supabase-js subscriber within 2 s', async () => {
    const r = await startInProcessRelay(env())
    const dashboard = new RealtimeDashboard(peer.url, peer.keys.anon)
    try {
      await dashboard.subscribe()
      await waitFor(async () => (await machines(r)).realtimeConnection === 'connected', 'the relay to join', 15_000)
      const traffic = load(r, 'outage')
      peer.refuseJoins('realtime unavailable')
      peer.dropSockets()
      await waitFor(async () => JSON.stringify((await machines(r)).supervisor).includes('failedOver'), 'failover', 15_000, 100)
      // Keep the outage up for 15 s, dropping whatever socket reconnects.
      const outageEnds = Date.now() + 15_000
      while (Date.now() < outageEnds) {
        peer.dropSockets()
        await new Promise((resolve) => setTimeout(resolve, Math.min(3_000, Math.max(0, outageEnds - Date.now()))))
      }
      peer.refuseJoins(false)
      const subscribedBefore = dashboard.statuses.filter((s) => s === 'SUBSCRIBED').length
      await waitFor(async () => (await machines(r)).realtimeConnection === 'connected', "the relay's channel to rejoin", 30_000, 50)
      const back = Date.now()
      await waitFor(() => dashboard.statuses.filter((s) => s === 'SUBSCRIBED').length > subscribedBefore && dashboard.statuses.at(-1) === 'SUBSCRIBED', 'the dashboard to rejoin', 30_000)
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, back + 1_000 - Date.now())))
      const marker = await postEvents(r.url, makeEvents(1, 'marker'))
      expect(marker.status).toBe(202)
      const markerId = marker.body.ids[0] as string
      const publishedAt = Date.now()
      await waitFor(() => dashboard.events.some((e) => e.id === markerId), 'the marker on Realtime', 2_000, 10)
      expect(Date.now() - publishedAt).toBeLessThanOrEqual(2_000)
      // The breaker did not sit out its 60 s cool-down: it probed as soon as the channel was back.
      await waitFor(async () => (await machines(r)).realtimeBreaker === 'closed', 'the breaker to close', 5_000, 50)
      await traffic.stop()
    } finally {
      peer.clearFaults()
      await dashboard.close()
      await r.stop()
    }
  }, 120_000)

  it('while Realtime is unhealthy, accepted events wait in the backlog and go out first on recovery, once, in seq order', async () => {
    const r = await startInProcessRelay({ ...env(), BREAKER_MIN_CALLS: '2' })
    const dashboard = new RealtimeDashboard(peer.url, peer.keys.anon)
    try {
      await dashboard.subscribe()
      await waitFor(async () => (await machines(r)).realtimeConnection === 'connected', 'the relay to join', 15_000)
      expect((await postEvents(r.url, makeEvents(10, 'before'))).status).toBe(202)
      await dashboard.waitForCount(10, 10_000)
      // Joins refused and the relay's socket dropped: the channel is down; the dashboard's rejoins fail too.
      peer.refuseJoins('realtime unavailable')
      peer.dropSockets()
      await waitFor(async () => JSON.stringify((await machines(r)).supervisor).includes('failedOver'), 'failover', 15_000, 100)
      for (let i = 0; i < 20; i++) expect((await postEvents(r.url, makeEvents(50, `during-${i}`))).status).toBe(202)
      // All 1,000 held in the Realtime backlog, none dropped.
      await waitFor(async () => /relay_queue_depth\{queue="realtime"\} 1000\b/.test(await (await fetch(`${r.url}/metrics`)).text()), 'the backlog to hold 1,000', 5_000, 50)
      peer.refuseJoins(false)
      await dashboard.waitForCount(10 + 1000, 60_000)
      const seqs = dashboard.events.map((e) => e.seq)
      expect(new Set(seqs).size).toBe(seqs.length)
      expect(seqProblems(dashboard.events)).toEqual([])
      expect(seqs).toHaveLength(1010)
      expect(seqs[1009]! - seqs[0]!).toBe(1009)
      const dropped = (await (await fetch(`${r.url}/metrics`)).text()).match(/relay_events_dropped_total\{sink="realtime"[^}]*\} (\d+)/g) ?? []
      expect(dropped).toEqual([])
    } finally {
      peer.clearFaults()
      await dashboard.close()
      await r.stop()
    }
  }, 120_000)

  it("with only the relay's pushes stalled for 10 s (the subscriber stays joined), every event accepted meanwhile reaches the subscriber after recovery, once, in seq order", async () => {
    const r = await startInProcessRelay({ ...env(), BREAKER_MIN_CALLS: '3', BREAKER_OPEN_MS: '2000' })
    const dashboard = new RealtimeDashboard(peer.url, peer.keys.anon)
    try {
      await dashboard.subscribe()
      await waitFor(async () => (await machines(r)).realtimeConnection === 'connected', 'the relay to join', 15_000)
      expect((await postEvents(r.url, makeEvents(10, 'pre'))).status).toBe(202)
      await dashboard.waitForCount(10, 10_000)
      peer.swallowBroadcastsFrom(peer.keys.serviceRole)
      const acked: string[] = []
      const stallEnds = Date.now() + 10_000
      for (let i = 0; Date.now() < stallEnds; i++) {
        const res = await postEvents(r.url, makeEvents(50, `stalled-${i}`))
        expect(res.status).toBe(202)
        acked.push(...(res.body.ids as string[]))
        await new Promise((resolve) => setTimeout(resolve, 250))
      }
      const swallowed = peer.swallowBroadcastsFrom(false)
      expect(swallowed).toBeGreaterThan(0)
      // The dashboard never left its channel: only the relay's pushes were stalled.
      expect(dashboard.statuses.filter((st) => st !== 'SUBSCRIBED')).toEqual([])
      await dashboard.waitForCount(10 + acked.length, 60_000)
      const ids = dashboard.events.map((e) => e.id)
      expect(new Set(ids).size).toBe(ids.length)
      for (const id of acked) expect(ids).toContain(id)
      expect(seqProblems(dashboard.events)).toEqual([])
      expect(dashboard.events).toHaveLength(10 + acked.length)
    } finally {
      peer.clearFaults()
      await dashboard.close()
      await r.stop()
    }
  }, 120_000)
})
