/**
 * The consistency validator end to end: real supabase-js on both sides of the Realtime protocol
 * peer (the relay's RealtimeTransport sending, the Realtime shadow receiving) with the peer's
 * faults injected one at a time; the /ws shadow against a real relay (calibration); report rows
 * written into a fresh Postgres database and into PGlite.
 */
import { readFile } from 'node:fs/promises'
import { PGlite } from '@electric-sql/pglite'
import pg from 'pg'
import { pino, type Logger } from 'pino'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { DEFAULT_MIGRATIONS_DIR, openPostgresStore } from '../../src/store/index.js'
import { createPgliteStore } from '../../src/store/pglite.js'
import { RealtimeTransport } from '../../src/realtime/transport.js'
import type { StoredEvent } from '../../src/types.js'
import { ConsistencyValidator, type ConsistencyReport, type PathName } from '../../src/migration/consistency.js'
import type { PathStats } from '../../src/migration/pathCounts.js'
import { insertReportSql, reportParams, reportRows, startReportWriter, type ReportRow } from '../../src/migration/reports.js'
import { realtimeShadow, websocketShadow, type Shadow } from '../../src/migration/shadows.js'
import { startFaultProxy } from '../fixtures/faultProxy.js'
import { startRealtimePeer, type RealtimePeer } from '../fixtures/realtimePeer.js'
import { startInProcessRelay } from '../helpers/inProcessRelay.js'
import { describePg, freshDatabase } from '../helpers/pg.js'
import { makeEvents } from '../helpers/relayProcess.js'
import { waitFor } from '../helpers/wait.js'

const MIGRATION = '20261122000400_consistency_reports.sql'

function capture(): { logger: Logger; lines: Array<Record<string, unknown>>; raw: string[] } {
  const lines: Array<Record<string, unknown>> = []
  const raw: string[] = []
  const logger = pino({ level: 'debug' }, { write: (line: string) => (raw.push(line), lines.push(JSON.parse(line) as Record<string, unknown>)) })
  return { logger, lines, raw }
}

function storedEvent(seq: number, tag: string): StoredEvent {
  return {
    id: `0190a000-0000-7000-8000-${String(seq).padStart(12, '0')}`,
    seq,
    event_type: 'test.event',
    timestamp: new Date(1_750_000_000_000 + seq).toISOString(),
    source: 'validator-test',
    data: { seq, tag, nested: { host: `web-${seq % 7}`, cpu: (seq % 100) / 100 } },
    metadata: { run: tag },
  }
}

/** Events whose first arrival has been classified, in time or not. */
const decided = (s: PathStats): number => s.matched + s.missing + s.reordered + s.mismatched
/** Every arrival the shadow handed over. */
const arrivals = (s: PathStats): number => s.matched + s.mismatched + s.reordered + s.late + s.duplicated + s.unexpected

describe('consistency validator against the Realtime protocol peer (real supabase-js both sides)', () => {
  let peer: RealtimePeer
  let channelNo = 0
  const open: Array<{ close(): Promise<void> }> = []
  let log: ReturnType<typeof capture>

  beforeAll(async () => {
    peer = await startRealtimePeer()
  })
  afterAll(async () => {
    await peer?.close()
  })
  afterEach(async () => {
    peer.clearFaults()
    await Promise.all(open.splice(0).map((c) => c.close()))
    // The service-role key never reaches a log line, from the shadow or from the transport.
    for (const line of log.raw) expect(line).not.toContain(peer.keys.serviceRole)
  })

  /**
   * Joins a fresh channel with the Realtime shadow and a RealtimeTransport, injects the fault, then
   * sends `count` broadcasts of one event each, calling sent() as each goes, and waits until every
   * broadcast the peer delivered has arrived and every event is decided (deadlines expired).
   */
  async function run(count: number, deadlineMs: number, fault: (p: RealtimePeer) => void = () => {}): Promise<{ s: PathStats; report: ConsistencyReport; sent: StoredEvent[] }> {
    log = capture()
    const channel = `validator-${++channelNo}`
    const topic = `realtime:${channel}`
    const validator = new ConsistencyValidator({ deadlineMs, windowMs: 300_000, sampleLimit: 20, now: Date.now }, ['realtime'])
    open.push(
      await realtimeShadow({
        url: peer.url,
        key: peer.keys.serviceRole,
        channel,
        privateChannel: false,
        onEvents: (events, at) => validator.arrived('realtime', events, at),
        logger: log.logger,
      }),
    )
    const transport = new RealtimeTransport({
      url: peer.url,
      key: peer.keys.serviceRole,
      channel,
      privateChannel: false,
      ackTimeoutMs: 5_000,
      maxPayloadBytes: 250_000,
      maxMessagesPerSecond: 100_000,
      logger: log.logger,
    })
    open.push(transport)
    await transport.connect()
    peer.resetCounters()
    fault(peer)
    const sent: StoredEvent[] = []
    for (let seq = 1; seq <= count; seq++) {
      const e = storedEvent(seq, channel)
      sent.push(e)
      validator.sent([e])
      await transport.send([e])
    }
    await waitFor(
      () => {
        validator.tick()
        const s = validator.snapshot().sinceStart.realtime!
        return arrivals(s) === peer.topicCounters(topic).broadcastsRelayed && decided(s) === count
      },
      `every broadcast delivered to arrive and every event to be decided (${JSON.stringify(validator.snapshot().sinceStart.realtime)})`,
      30_000,
    )
    const report = validator.snapshot()
    return { s: report.sinceStart.realtime!, report, sent }
  }

  const counts = (s: PathStats) => ({ sent: s.sent, matched: s.matched, missing: s.missing, duplicated: s.duplicated, reordered: s.reordered, mismatched: s.mismatched, late: s.late, unexpected: s.unexpected })

  it('a clean run reads 100 % with every fault counter at zero', async () => {
    const { s, report } = await run(1_000, 2_000)
    expect(counts(s)).toEqual({ sent: 1000, matched: 1000, missing: 0, duplicated: 0, reordered: 0, mismatched: 0, late: 0, unexpected: 0 })
    expect(s.consistencyPct).toBe(100)
    expect(report.window.realtime!.consistencyPct).toBe(100)
    expect(s.latencyMs.samples).toBe(1000)
    expect(s.latencyMs.p50).not.toBeNull()
    expect(s.latencyMs.p99!).toBeLessThan(2_000)
    expect(report.samples).toEqual([])
  })

  it('dropEvery(500) over 5,000 events: missing exactly 10', async () => {
    const { s } = await run(5_000, 2_000, (p) => p.dropEvery(500))
    expect(peer.counters().dropped).toBe(10)
    expect(counts(s)).toEqual({ sent: 5000, matched: 4990, missing: 10, duplicated: 0, reordered: 0, mismatched: 0, late: 0, unexpected: 0 })
    expect(s.consistencyPct).toBe((4990 * 100) / 5000)
  }, 120_000)

  it('duplicateEvery(100) over 2,000 events: duplicated exactly 20, every event still matched once', async () => {
    const { s } = await run(2_000, 2_000, (p) => p.duplicateEvery(100))
    expect(peer.counters().duplicated).toBe(20)
    expect(counts(s)).toEqual({ sent: 2000, matched: 2000, missing: 0, duplicated: 20, reordered: 0, mismatched: 0, late: 0, unexpected: 0 })
    expect(s.consistencyPct).toBe((2000 * 100) / 2020)
  }, 60_000)

  it('reorder(5): each window of 5 messages released in reverse gives 4 reordered (1,000 messages → 800)', async () => {
    // holdMs far above the send time of a window: every window is released full, never by its timer.
    const { s } = await run(1_000, 2_000, (p) => p.reorder(5, 10_000))
    expect(peer.counters().reordered).toBe(1000)
    expect(counts(s)).toEqual({ sent: 1000, matched: 200, missing: 0, duplicated: 0, reordered: 800, mismatched: 0, late: 0, unexpected: 0 })
    expect(s.consistencyPct).toBe(20)
  }, 60_000)

  it('alterEvery(250) changing a field: mismatched exactly 4, with both versions and the diff', async () => {
    const tamper = (payload: unknown) => {
      const batch = payload as { events: StoredEvent[] }
      return { ...batch, events: batch.events.map((e) => ({ ...e, data: { ...e.data, tampered: true } })) }
    }
    const { s, report, sent } = await run(1_000, 2_000, (p) => p.alterEvery(250, tamper))
    expect(peer.counters().altered).toBe(4)
    expect(counts(s)).toEqual({ sent: 1000, matched: 996, missing: 0, duplicated: 0, reordered: 0, mismatched: 4, late: 0, unexpected: 0 })
    expect(report.samples.map((m) => [m.path, m.seq])).toEqual([['realtime', 250], ['realtime', 500], ['realtime', 750], ['realtime', 1000]])
    for (const m of report.samples) {
      expect(m.expected).toEqual(sent[m.seq - 1])
      expect(m.actual).toEqual({ ...sent[m.seq - 1], data: { ...sent[m.seq - 1]!.data, tampered: true } })
      expect(m.diff).toEqual([{ path: 'data.tampered', expected: undefined, actual: true }])
    }
  }, 60_000)

  it('delayBroadcasts beyond the deadline: every event missing at the deadline, then late', async () => {
    // Between the deadline and 2 × deadline (how long ids are remembered): late, not unexpected.
    const { s } = await run(20, 400, (p) => p.delayBroadcasts(600))
    expect(counts(s)).toEqual({ sent: 20, matched: 0, missing: 20, duplicated: 0, reordered: 0, mismatched: 0, late: 20, unexpected: 0 })
    expect(s.consistencyPct).toBe(0)
    expect(s.latencyMs.p50!).toBeGreaterThanOrEqual(600)
  }, 60_000)

  it('delayed past 2 × deadline: missing, and the arrivals of forgotten ids are unexpected', async () => {
    const { s } = await run(20, 200, (p) => p.delayBroadcasts(700))
    expect(counts(s)).toEqual({ sent: 20, matched: 0, missing: 20, duplicated: 0, reordered: 0, mismatched: 0, late: 0, unexpected: 20 })
  }, 60_000)

  it('a shadow that cannot join rejects within its join timeout', async () => {
    log = capture()
    peer.refuseJoins('realtime unavailable')
    await expect(
      realtimeShadow({ url: peer.url, key: peer.keys.serviceRole, channel: 'refused', privateChannel: false, onEvents: () => {}, logger: log.logger, joinTimeoutMs: 1_500 }),
    ).rejects.toThrow(/not joined within 1500 ms/)
  })
})

describe('calibration: the /ws shadow against a real relay', () => {
  it('reads 100 % and a noise floor of 0, across a dropped connection resumed with ?since=', async () => {
    const log = capture()
    const r = await startInProcessRelay()
    const proxy = await startFaultProxy({ host: '127.0.0.1', port: r.relay.port })
    const validator = new ConsistencyValidator({ deadlineMs: 5_000, windowMs: 300_000, sampleLimit: 20, now: Date.now }, ['websocket'])
    // The reference: every batch the relay publishes, as onDurable hands it to the bus.
    const unsubscribe = r.relay.bus.subscribe((batch) => validator.sent(batch))
    let shadow: Shadow | undefined
    try {
      shadow = await websocketShadow({
        url: `ws://127.0.0.1:${proxy.port}/ws`,
        onEvents: (events, at) => validator.arrived('websocket', events, at),
        logger: log.logger,
        reconnectBaseMs: 50,
      })
      const ws = () => validator.snapshot().sinceStart.websocket!
      for (let i = 0; i < 600; i += 100) await r.relay.publish(makeEvents(100, `cal-${i}`))
      await waitFor(() => ws().matched === 600, `600 events on the /ws shadow (${JSON.stringify(ws())})`)
      // The network drops the shadow's socket; events published meanwhile come back through ?since=.
      proxy.setMode('cut')
      await waitFor(() => log.lines.some((l) => l.msg === '/ws shadow disconnected; reconnecting'), 'the shadow to see the drop')
      for (let i = 0; i < 400; i += 100) await r.relay.publish(makeEvents(100, `gap-${i}`))
      proxy.setMode('pass')
      await waitFor(() => ws().matched === 1000, `1,000 events on the /ws shadow (${JSON.stringify(ws())})`)
      const report = validator.snapshot()
      expect(report.sinceStart.websocket).toMatchObject({ sent: 1000, matched: 1000, missing: 0, duplicated: 0, reordered: 0, mismatched: 0, late: 0, unexpected: 0, consistencyPct: 100 })
      expect(report.noiseFloorPct).toBe(0)
      const resumed = log.lines.find((l) => l.msg === '/ws shadow reconnected')
      expect(resumed?.since).toBe(600)
    } finally {
      unsubscribe()
      await shadow?.close()
      await proxy.close()
      await r.stop()
    }
  }, 60_000)
})

describePg('dual paths through a relay in Realtime mode', () => {
  it('Realtime and /ws shadows both read 100 % on batched broadcasts; the noise floor is 0', async () => {
    const log = capture()
    const peer = await startRealtimePeer()
    const db = await freshDatabase('validator_dual')
    const r = await startInProcessRelay({
      DATABASE_URL: db.url,
      MONITORING_USE_ADAPTER: 'true',
      MONITORING_ADAPTER_TYPE: 'realtime',
      SUPABASE_URL: peer.url,
      SUPABASE_SERVICE_ROLE_KEY: peer.keys.serviceRole,
      SUPABASE_ANON_KEY: peer.keys.anon,
    })
    const paths: PathName[] = ['realtime', 'websocket']
    const validator = new ConsistencyValidator({ deadlineMs: 5_000, windowMs: 300_000, sampleLimit: 20, now: Date.now }, paths)
    const unsubscribe = r.relay.bus.subscribe((batch) => validator.sent(batch))
    const shadows: Shadow[] = []
    try {
      shadows.push(
        await realtimeShadow({ url: peer.url, key: peer.keys.serviceRole, channel: 'monitoring', privateChannel: false, onEvents: (e, at) => validator.arrived('realtime', e, at), logger: log.logger }),
        await websocketShadow({ url: `ws://127.0.0.1:${r.relay.port}/ws`, onEvents: (e, at) => validator.arrived('websocket', e, at), logger: log.logger }),
      )
      for (let i = 0; i < 3000; i += 100) await r.relay.publish(makeEvents(100, `dual-${i}`))
      await waitFor(() => {
        const s = validator.snapshot().sinceStart
        return s.realtime!.matched === 3000 && s.websocket!.matched === 3000
      }, `3,000 events on both shadows (${JSON.stringify(validator.snapshot().sinceStart)})`, 30_000)
      const report = validator.snapshot()
      for (const path of paths) {
        expect(report.window[path]).toMatchObject({ sent: 3000, matched: 3000, missing: 0, duplicated: 0, reordered: 0, mismatched: 0, late: 0, consistencyPct: 100 })
        expect(report.window[path]!.latencyMs.samples).toBe(3000)
      }
      expect(report.noiseFloorPct).toBe(0)
      // Realtime carried them in batches, not one message per event.
      expect(peer.topicCounters('realtime:monitoring').events.monitoring_events!.count).toBeLessThan(3000)
    } finally {
      unsubscribe()
      for (const s of shadows) await s.close()
      await r.stop()
      await peer.close()
      await db.drop()
    }
  }, 90_000)
})

/** A report with both paths, a mismatch sample on Realtime, and figures on each. */
function sampleReport(): { validator: ConsistencyValidator; clock: { t: number } } {
  const clock = { t: Date.parse('2026-11-22T10:00:00Z') }
  const validator = new ConsistencyValidator({ deadlineMs: 1_000, windowMs: 60_000, sampleLimit: 20, now: () => clock.t }, ['realtime', 'websocket'])
  const events = Array.from({ length: 10 }, (_, i) => storedEvent(i + 1, 'report'))
  validator.sent(events)
  clock.t += 12
  validator.arrived('websocket', events)
  validator.arrived('realtime', events.slice(0, 8).map((e) => (e.seq === 2 ? { ...e, source: 'elsewhere' } : e)))
  clock.t += 1_001
  validator.tick()
  return { validator, clock }
}

function checkRows(rows: Array<Record<string, unknown>>): void {
  const byPath = Object.fromEntries(rows.map((row) => [row.path, row]))
  expect(Number(byPath.realtime!.sent)).toBe(10)
  expect(Number(byPath.realtime!.matched)).toBe(7)
  expect(Number(byPath.realtime!.missing)).toBe(2)
  expect(Number(byPath.realtime!.mismatched)).toBe(1)
  expect(Number(byPath.realtime!.consistency_pct)).toBe(70)
  expect(Number(byPath.realtime!.window_ms)).toBe(60_000)
  expect(byPath.realtime!.p50_ms).toBe(12)
  expect(Number(byPath.websocket!.consistency_pct)).toBe(100)
  expect(Number(byPath.websocket!.noise_floor_pct)).toBe(0)
  expect(byPath.websocket!.samples).toEqual([])
  const samples = byPath.realtime!.samples as Array<Record<string, unknown>>
  expect(samples).toHaveLength(1)
  expect(samples[0]).toMatchObject({ seq: 2, path: 'realtime', diff: [{ path: 'source', expected: 'validator-test', actual: 'elsewhere' }] })
}

describePg('consistency_reports on PostgreSQL', () => {
  let db: { url: string; drop(): Promise<void> }
  let client: pg.Client

  beforeAll(async () => {
    db = await freshDatabase('validator_reports')
    const store = await openPostgresStore(db.url)
    await store.migrate()
    await store.close()
    client = new pg.Client({ connectionString: db.url })
    await client.connect()
  })
  afterAll(async () => {
    await client?.end()
    await db?.drop()
  })

  it('the writer inserts one row per path every interval; samples appear once; stop() writes a last report', async () => {
    const log = capture()
    const { validator } = sampleReport()
    const written: ReportRow[] = []
    const writer = startReportWriter({
      intervalMs: 50,
      snapshot: () => validator.snapshot(),
      write: async (row) => {
        await client.query(insertReportSql, reportParams(row))
        written.push(row)
      },
      logger: log.logger,
    })
    await waitFor(() => written.length >= 4, 'two reports written')
    await writer.stop()
    const { rows } = await client.query('select * from public.consistency_reports order by id')
    expect(rows.length).toBe(written.length)
    expect(rows.length % 2).toBe(0)
    checkRows(rows.slice(0, 2))
    // Later rows carry the same window figures but no sample twice.
    for (const row of rows.slice(2)) expect(row.samples).toEqual([])
    expect(rows.every((row) => row.at instanceof Date)).toBe(true)
    await writer.stop() // idempotent
  })

  it('a failed write is logged and the next interval writes again; flush() rejects with the error', async () => {
    const log = capture()
    const { validator } = sampleReport()
    let fail = true
    const rows: ReportRow[] = []
    const writer = startReportWriter({
      intervalMs: 30,
      snapshot: () => validator.snapshot(),
      write: async (row) => {
        if (fail) throw new Error('store unavailable')
        rows.push(row)
      },
      logger: log.logger,
    })
    await expect(writer.flush()).rejects.toThrow('store unavailable')
    await waitFor(() => log.lines.some((l) => l.msg === 'consistency report not written'), 'the failure logged')
    fail = false
    await waitFor(() => rows.length >= 2, 'a report after the failure')
    await writer.stop()
    // The sample was never written, so the first successful row still carries it.
    expect(rows.find((r) => r.path === 'realtime')!.samples).toHaveLength(1)
  })

  it('RLS: service_role inserts, authenticated reads, anon neither; the migration is idempotent', async () => {
    const row = reportRows(sampleReport().validator.snapshot(), new Date())[0]!
    await client.query('begin')
    try {
      await client.query('set local role service_role')
      await client.query(insertReportSql, reportParams(row))
      await client.query('set local role authenticated')
      expect((await client.query('select count(*)::int as n from public.consistency_reports')).rows[0].n).toBeGreaterThan(0)
      await expect(client.query('insert into public.consistency_reports (window_ms, path) values (1, $1)', ['realtime'])).rejects.toThrow(/permission denied/)
    } finally {
      await client.query('rollback')
    }
    await client.query('begin')
    try {
      await client.query('set local role anon')
      await expect(client.query('select 1 from public.consistency_reports')).rejects.toThrow(/permission denied/)
    } finally {
      await client.query('rollback')
    }
    const sql = await readFile(`${DEFAULT_MIGRATIONS_DIR}${MIGRATION}`, 'utf8')
    await client.query(sql)
    await client.query(sql)
    const policies = await client.query("select policyname from pg_policies where tablename = 'consistency_reports' order by 1")
    expect(policies.rows.map((p) => p.policyname)).toEqual(['consistency_reports_authenticated_select', 'consistency_reports_service_role_insert'])
    await expect(client.query(insertReportSql, reportParams({ ...row, path: 'carrier-pigeon' as PathName }))).rejects.toThrow(/check constraint/)
  })
})

describe('consistency_reports on PGlite', () => {
  it('migrates, takes the writer rows and enforces the same policies', async () => {
    const log = capture()
    const db = new PGlite()
    const store = createPgliteStore(db)
    try {
      const applied = await store.migrate()
      expect(applied).toContain('20261122000400')
      const { validator } = sampleReport()
      const writer = startReportWriter({
        intervalMs: 60_000,
        snapshot: () => validator.snapshot(),
        write: async (row) => void (await db.query(insertReportSql, reportParams(row))),
        logger: log.logger,
      })
      await writer.flush()
      await writer.stop()
      const { rows } = await db.query<Record<string, unknown>>('select * from public.consistency_reports order by id')
      expect(rows).toHaveLength(4)
      checkRows(rows.slice(0, 2))
      await db.exec('begin; set local role service_role')
      await db.query(insertReportSql, reportParams(reportRows(validator.snapshot(), new Date())[0]!))
      await db.exec('set local role authenticated')
      expect((await db.query<{ n: number }>('select count(*)::int as n from public.consistency_reports')).rows[0]!.n).toBe(5)
      await db.exec('rollback')
      await db.exec('begin; set local role anon')
      await expect(db.query('select 1 from public.consistency_reports')).rejects.toThrow(/permission denied/)
      await db.exec('rollback')
      const sql = await readFile(`${DEFAULT_MIGRATIONS_DIR}${MIGRATION}`, 'utf8')
      await db.exec(sql)
      await db.exec(sql)
    } finally {
      await store.close()
    }
  })
})
