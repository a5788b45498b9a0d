import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startInProcessRelay, type InProcessRelay } from '../helpers/inProcessRelay.js'

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
