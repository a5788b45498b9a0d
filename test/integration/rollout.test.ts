import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { startRealtimePeer, type RealtimePeer } from '../fixtures/realtimePeer.js'
import { DashboardClient } from '../helpers/dashboard.js'
import { startInProcessRelay, type InProcessRelay } from '../helpers/inProcessRelay.js'
import { describePg, freshDatabase } from '../helpers/pg.js'
import { makeEvents, postEvents } from '../helpers/relayProcess.js'
import { waitFor } from '../helpers/wait.js'

const ADMIN = 'rollout-admin'
const auth = { authorization: `Bearer ${ADMIN}` }

async function admin(r: InProcessRelay, method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> {
  const res = await fetch(`${r.url}${path}`, { method, headers: { ...auth, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) })
  return { status: res.status, body: await res.json() }
}

async function transportOf(r: InProcessRelay, client: string): Promise<string> {
  return ((await (await fetch(`${r.url}/config?client=${client}`)).json()) as { transport: string }).transport
}

/** Steady traffic so the validator has samples; stops when told. */
function traffic(r: InProcessRelay) {
  let running = true
  const loop = (async () => {
    let i = 0
    while (running) {
      await postEvents(r.url, makeEvents(20, `roll-${i++}`))
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
  })()
  return async () => {
    running = false
    await loop
  }
}

describePg('gated rollout in dual mode (validator + rollout controller + /config)', () => {
  let peer: RealtimePeer
  let db: { url: string; drop(): Promise<void> }
  const dbs: Array<{ drop(): Promise<void> }> = []
  /** Each test gets its own database: rollout_state is one row per database. */
  async function freshDb(): Promise<void> {
    db = await freshDatabase('rollout')
    dbs.push(db)
  }
  const env = (extra: Record<string, string> = {}) => ({
    DATABASE_URL: db.url,
    ADMIN_TOKEN: ADMIN,
    MONITORING_DUAL_MODE: 'true',
    SUPABASE_URL: peer.url,
    SUPABASE_SERVICE_ROLE_KEY: peer.keys.serviceRole,
    SUPABASE_ANON_KEY: peer.keys.anon,
    ROLLOUT_SOAK_MS: '1500',
    ROLLOUT_MIN_SAMPLES: '50',
    ROLLOUT_MAX_P99_MS: '2000',
    VALIDATOR_DEADLINE_MS: '1000',
    BATCH_LOW_SIZE: '1',
    BATCH_MEDIUM_SIZE: '1',
    BATCH_HIGH_SIZE: '1',
    ...extra,
  })

  beforeAll(async () => {
    peer = await startRealtimePeer()
  })
  beforeEach(freshDb)
  afterAll(async () => {
    await peer?.close()
    for (const d of dbs) await d.drop()
  })

  it('a healthy run goes 0 → 25 → 50 → 75 → 100 and /config moves clients accordingly', async () => {
    const r = await startInProcessRelay(env())
    const stop = traffic(r)
    try {
      expect((await admin(r, 'GET', '/admin/rollout')).body).toMatchObject({ state: 'inactive', percent: 0 })
      expect(await transportOf(r, 'client-a')).toBe('websocket')
      expect((await admin(r, 'POST', '/admin/rollout/start')).status).toBe(202)
      let last: unknown
      await waitFor(async () => {
        last = (await admin(r, 'GET', '/admin/rollout')).body
        return JSON.stringify((last as { state: unknown }).state).startsWith('{"complete"')
      }, 'the rollout to complete', 60_000, 200).catch((err: Error) => {
        throw new Error(`${err.message}; last: ${JSON.stringify(last)}`)
      })
      const done = (await admin(r, 'GET', '/admin/rollout')).body
      expect(done.percent).toBe(100)
      expect(done.history.map((h: { percent: number }) => h.percent)).toEqual(expect.arrayContaining([25, 50, 75, 100]))
      expect(await transportOf(r, 'client-a')).toBe('realtime')
      const consistency = await (await fetch(`${r.url}/admin/consistency`, { headers: auth })).json()
      expect(consistency.window.realtime.consistencyPct).toBe(100)
    } finally {
      await stop()
      await r.stop()
    }
  }, 90_000)

  it('consistency drops (1 in 20 broadcasts lost) → rolled back to 0 with the reason, clients back on /ws', async () => {
    const r = await startInProcessRelay(env())
    const stop = traffic(r)
    try {
      expect((await admin(r, 'POST', '/admin/rollout/start')).status).toBe(202)
      await waitFor(async () => (await admin(r, 'GET', '/admin/rollout')).body.percent >= 25, 'the first stage', 30_000, 100)
      peer.dropEvery(20)
      await waitFor(async () => JSON.stringify((await admin(r, 'GET', '/admin/rollout')).body.state).includes('rolledBack'), 'the rollback', 60_000, 200)
      const rolled = (await admin(r, 'GET', '/admin/rollout')).body
      expect(rolled.percent).toBe(0)
      expect(rolled.reason).toMatch(/consistency/)
      for (const c of ['a', 'b', 'c', 'd']) expect(await transportOf(r, `client-${c}`)).toBe('websocket')
    } finally {
      peer.clearFaults()
      await stop()
      await r.stop()
    }
  }, 90_000)

  // Each stage is judged on a report obtained at the end of its soak, whatever the validator's own
  // report interval: a soak far shorter than it is never judged on "no health report".
  describe('a soak (300 ms) shorter than the validator report interval (5 s)', () => {
    const short = () => env({ ROLLOUT_SOAK_MS: '300', VALIDATOR_REPORT_INTERVAL_MS: '5000' })

    it('a healthy run reaches 100 %, every stage judged on a fresh report', async () => {
      const r = await startInProcessRelay(short())
      const stop = traffic(r)
      try {
        // Enough compared events for the samples gate before the first judgement.
        await waitFor(async () => (await (await fetch(`${r.url}/admin/consistency`, { headers: auth })).json()).window.realtime.matched >= 50, 'validator samples', 30_000, 100)
        expect((await admin(r, 'POST', '/admin/rollout/start')).status).toBe(202)
        let last: any
        await waitFor(async () => {
          last = (await admin(r, 'GET', '/admin/rollout')).body
          return JSON.stringify(last.state).startsWith('{"complete"') || JSON.stringify(last.state).includes('rolledBack')
        }, 'the rollout to settle', 60_000, 100)
        expect(last.percent, JSON.stringify(last)).toBe(100)
        // The 100 % stage soaks, then completes: two entries at 100.
        expect([...new Set(last.history.map((h: { percent: number }) => h.percent))]).toEqual([25, 50, 75, 100])
        expect(JSON.stringify(last.history)).not.toMatch(/no health report/)
      } finally {
        await stop()
        await r.stop()
      }
    }, 90_000)

    it('a lossy run (1 in 10 broadcasts lost) still rolls back, on the consistency gate', async () => {
      const r = await startInProcessRelay(short())
      peer.dropEvery(10)
      const stop = traffic(r)
      try {
        // Losses past the validator's deadline are on record before the rollout starts.
        await waitFor(async () => (await (await fetch(`${r.url}/admin/consistency`, { headers: auth })).json()).window.realtime.missing > 0, 'missing events counted', 30_000, 100)
        expect((await admin(r, 'POST', '/admin/rollout/start')).status).toBe(202)
        await waitFor(async () => JSON.stringify((await admin(r, 'GET', '/admin/rollout')).body.state).includes('rolledBack'), 'the rollback', 30_000, 100)
        const rolled = (await admin(r, 'GET', '/admin/rollout')).body
        expect(rolled.percent).toBe(0)
        expect(rolled.reason).toMatch(/consistency/)
        expect(rolled.reason).not.toMatch(/no health report/)
      } finally {
        peer.clearFaults()
        await stop()
        await r.stop()
      }
    }, 90_000)
  })

  it('a manual percent survives a restart: the rollout resumes its stage, never silently at 0 or 100', async () => {
    const first = await startInProcessRelay(env({ ROLLOUT_SOAK_MS: '600000' }))
    try {
      expect((await admin(first, 'PUT', '/admin/rollout', { percent: 150 })).status).toBe(400)
      expect((await admin(first, 'PUT', '/admin/rollout', { percent: 50 })).status).toBe(202)
      await waitFor(async () => (await admin(first, 'GET', '/admin/rollout')).body.percent === 50, 'percent 50', 10_000)
      expect((await admin(first, 'GET', '/admin/rollout')).body.manual).toBe(true)
    } finally {
      await first.stop()
    }
    const second = await startInProcessRelay(env({ ROLLOUT_SOAK_MS: '600000' }))
    try {
      const resumed = (await admin(second, 'GET', '/admin/rollout')).body
      expect(resumed.percent).toBe(50)
      expect(JSON.stringify(resumed.state)).toContain('soaking')
      // About half of the dashboards are on Realtime, each one stably.
      const ids = Array.from({ length: 400 }, (_, i) => `dash-${i}`)
      const first400 = await Promise.all(ids.map((id) => transportOf(second, id)))
      const share = first400.filter((t) => t === 'realtime').length / ids.length
      expect(share).toBeGreaterThan(0.4)
      expect(share).toBeLessThan(0.6)
      expect(await Promise.all(ids.map((id) => transportOf(second, id)))).toEqual(first400)
    } finally {
      await second.stop()
    }
  }, 60_000)

  it('dashboards on /ws whose assignment changes get a reassign control frame; the others do not', async () => {
    const r = await startInProcessRelay(env({ ROLLOUT_SOAK_MS: '600000' }))
    const ids = Array.from({ length: 40 }, (_, i) => `ws-dash-${i}`)
    const clients = ids.map((id) => new DashboardClient(r.url, undefined, id))
    try {
      await Promise.all(clients.map((c) => c.opened))
      await waitFor(() => r.relay.hub.clientCount >= 40, 'forty dashboards attached')
      expect((await admin(r, 'PUT', '/admin/rollout', { percent: 50 })).status).toBe(202)
      const moved = await Promise.all(ids.map(async (id) => (await transportOf(r, id)) === 'realtime'))
      expect(moved.some(Boolean)).toBe(true)
      expect(moved.every(Boolean)).toBe(false)
      await waitFor(() => clients.filter((_, i) => moved[i]).every((c) => c.frames.some((f) => f.type === 'control' && f.action === 'reassign')), 'reassign frames', 10_000)
      expect(clients.filter((_, i) => !moved[i]).every((c) => !c.frames.some((f) => f.type === 'control'))).toBe(true)
    } finally {
      for (const c of clients) c.close()
      await r.stop()
    }
  })

  it('answers 409 to a command the current state does not accept', async () => {
    const r = await startInProcessRelay(env())
    try {
      expect((await admin(r, 'POST', '/admin/rollout/resume')).status).toBe(409)
    } finally {
      await r.stop()
    }
  })
})
