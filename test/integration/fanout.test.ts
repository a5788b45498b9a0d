import { randomBytes } from 'node:crypto'
import { connect } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { DashboardClient, seqProblems } from '../helpers/dashboard.js'
import { startInProcessRelay, type InProcessRelay } from '../helpers/inProcessRelay.js'
import { postEvents } from '../helpers/relayProcess.js'
import { StalledDashboard } from '../helpers/stalledDashboard.js'
import { waitFor } from '../helpers/wait.js'

async function metric(url: string, pattern: RegExp): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text()
  return Number(pattern.exec(text)?.[1] ?? 0)
}

describe('WebSocket fan-out', () => {
  let r: InProcessRelay
  beforeAll(async () => {
    r = await startInProcessRelay({ WS_CLIENT_MAX_BUFFER_BYTES: '262144' })
  })
  afterAll(async () => {
    await r.stop()
  })

  it('a client that does not read is closed with 1013 at its bound while 20,000 events reach every other client', async () => {
    const bound = 262144
    const others = [new DashboardClient(r.url), new DashboardClient(r.url), new DashboardClient(r.url)]
    await Promise.all(others.map((c) => c.opened))
    const stalled = await StalledDashboard.open(r.relay.port)
    await waitFor(() => r.relay.hub.clientCount === 4, 'four clients attached')
    const droppedBefore = await metric(r.url, /relay_ws_clients_dropped_total\{reason="slow"\} (\d+)/)
    // As soon as the relay gives up on the client, read what it was sent: its last frame must be
    // a close frame with 1013 (try again later), not just a connection that goes away.
    const dropped = waitFor(() => r.logs.find((l) => l.msg === 'closing dashboard client' && l.reason === 'slow'), 'the relay to drop the stalled client', 60_000, 5)
    const outcome = dropped.then(() => stalled.readAll())
    outcome.catch(() => {})
    const padding = 'p'.repeat(1000) // ~20 MB in all: far past any socket buffer
    for (let sent = 0; sent < 20_000; sent += 500) {
      const batch = Array.from({ length: 500 }, (_, i) => ({ event_type: 'load', source: 'fanout-test', data: { i: sent + i, padding } }))
      const res = await postEvents(r.url, batch)
      expect(res.status).toBe(202)
    }
    for (const c of others) await c.waitForCount(20_000, 60_000)
    for (const c of others) {
      expect(c.events).toHaveLength(20_000)
      expect(seqProblems(c.events)).toEqual([])
      expect(c.closeCode).toBeUndefined()
    }
    const drop = await dropped
    // Dropped once its send queue passed the bound, not before.
    expect(Number(drop.buffered)).toBeGreaterThan(bound)
    const seen = await outcome
    expect(seen.closeCode).toBe(1013)
    expect(seen.textFrames).toBeGreaterThan(0) // the hello and the events it never read came first
    expect(await metric(r.url, /relay_ws_clients_dropped_total\{reason="slow"\} (\d+)/)).toBe(droppedBefore + 1)
    expect(r.logs.filter((l) => l.msg === 'closing dashboard client')).toHaveLength(1) // only the stalled one
    await waitFor(() => r.relay.hub.clientCount === 3, 'the stalled client to be gone')
    stalled.destroy()
    for (const c of others) c.close()
  })

  it('rejects a malformed ?since= with 400', async () => {
    const socket = connect(r.relay.port, '127.0.0.1')
    socket.write(`GET /ws?since=-3 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`)
    const reply = await new Promise<string>((resolve) => socket.once('data', (d) => resolve(String(d))))
    socket.destroy()
    expect(reply).toMatch(/^HTTP\/1.1 400/)
  })

  it('/healthz, /readyz and /metrics answer while running', async () => {
    expect((await fetch(`${r.url}/healthz`)).status).toBe(200)
    const ready = await fetch(`${r.url}/readyz`)
    expect(ready.status).toBe(200)
    expect(await ready.json()).toMatchObject({ status: 'ready' })
    const text = await (await fetch(`${r.url}/metrics`)).text()
    for (const name of ['relay_events_accepted_total', 'relay_events_rejected_total', 'relay_events_delivered_total', 'relay_ws_clients', 'relay_queue_depth', 'relay_flush_duration_seconds', 'relay_machine_state']) {
      expect(text).toContain(name)
    }
    expect(text).toMatch(/relay_machine_state\{machine="supervisor",state="running\.store\.healthy"\} 1/)
    // Durability costs an fsync per request (shared by concurrent ones), not per event.
    const fsyncs = Number(/relay_wal_fsyncs (\d+)/.exec(text)?.[1])
    const appended = Number(/relay_wal_appended_events (\d+)/.exec(text)?.[1])
    expect(appended).toBeGreaterThanOrEqual(20_000)
    expect(fsyncs).toBeGreaterThan(0)
    expect(appended / fsyncs).toBeGreaterThanOrEqual(100)
  })
})

describe('relay.health events', () => {
  it('the relay publishes its own health as events a dashboard receives', async () => {
    const r = await startInProcessRelay({ HEALTH_INTERVAL_MS: '200' })
    const c = new DashboardClient(r.url)
    try {
      await c.opened
      await waitFor(() => c.events.length >= 2, 'two relay.health events', 10_000)
      const health = c.events[0]!
      expect(health).toMatchObject({ event_type: 'relay.health', source: 'relay' })
      expect(health.data).toMatchObject({
        queues: { store: expect.any(Number) },
        dlq: { depth: 0, oldest_at: null },
        ws: { clients: expect.any(Number) },
        machines: { supervisor: expect.anything(), storeFlusher: expect.anything(), storeBreaker: 'closed' },
      })
      expect(r.logs.some((l) => l.msg === 'health event not published')).toBe(false)
    } finally {
      c.close()
      await r.stop()
    }
  })
})
