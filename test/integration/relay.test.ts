import { afterAll, describe, expect, it } from 'vitest'
import { openStore } from '../../src/store/index.js'
import { DashboardClient, seqProblems } from '../helpers/dashboard.js'
import { freshDatabase, pgAvailable } from '../helpers/pg.js'
import { makeEvents, postEvents, removeDir, startRelayProcess, type RelayProcess } from '../helpers/relayProcess.js'
import { waitFor } from '../helpers/wait.js'

interface Backend {
  name: string
  /** Env for the relay, and how to open the same store from the test once the relay is stopped (PGlite is single-process). */
  setup(): Promise<{ env: Record<string, string>; dataDir?: string; storeOpts: (dataDir: string) => { databaseUrl?: string; dataDir: string }; cleanup(): Promise<void> }>
}

const backends: Backend[] = [
  {
    name: 'PGlite (embedded default)',
    async setup() {
      return { env: {}, storeOpts: (dataDir) => ({ dataDir }), cleanup: async () => {} }
    },
  },
  {
    name: 'PostgreSQL (DATABASE_URL)',
    async setup() {
      const db = await freshDatabase('relay')
      return { env: { DATABASE_URL: db.url }, storeOpts: (dataDir) => ({ databaseUrl: db.url, dataDir }), cleanup: () => db.drop() }
    },
  },
]

/** Publishes `total` events in batches of `batch`, with `concurrency` requests in flight; returns acked ids. */
async function publish(url: string, total: number, batch: number, concurrency = 4, prefix = 'e', stopOnError = false) {
  const acked: string[] = []
  const ackedSeqs: number[] = []
  let next = 0
  let failures = 0
  const worker = async () => {
    while (next < total) {
      const start = next
      const n = Math.min(batch, total - start)
      next += n
      const events = makeEvents(n, `${prefix}-${start}`)
      let res
      try {
        res = await postEvents(url, events)
      } catch (err) {
        failures++
        if (stopOnError) return
        throw err
      }
      if (res.status !== 202) {
        failures++
        if (stopOnError) return
        throw new Error(`POST /events → ${res.status} ${JSON.stringify(res.body)}`)
      }
      acked.push(...res.body.ids)
      for (let s = res.body.first_seq; s <= res.body.last_seq; s++) ackedSeqs.push(s)
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
  return { acked, ackedSeqs, failures }
}

async function storedRows(opts: { databaseUrl?: string; dataDir: string }) {
  const store = await openStore(opts)
  try {
    const rows = []
    let after = 0
    for (;;) {
      const page = await store.readSince(after, 5000)
      rows.push(...page)
      if (page.length < 5000) break
      after = page[page.length - 1]!.seq
    }
    return rows
  } finally {
    await store.close()
  }
}

describe.each(backends)('relay end to end on $name', (backend) => {
  const cleanups: Array<() => Promise<void>> = []
  afterAll(async () => {
    for (const c of cleanups.reverse()) await c()
  })

  const skip = backend.name.startsWith('PostgreSQL') && !pgAvailable && process.env.CI !== 'true'

  it.skipIf(skip)('delivers 5,000 published events to a live client once, in seq order; ?since= gets exactly the rest; the table holds 5,000', async () => {
    const b = await backend.setup()
    cleanups.push(b.cleanup)
    const relay = await startRelayProcess(b.env)
    cleanups.push(() => removeDir(relay.dataDir))
    try {
      const live = new DashboardClient(relay.url)
      await live.opened
      const { acked } = await publish(relay.url, 5000, 100)
      expect(acked).toHaveLength(5000)
      await live.waitForCount(5000)
      expect(live.events).toHaveLength(5000)
      expect(new Set(live.events.map((e) => e.id)).size).toBe(5000)
      expect(seqProblems(live.events)).toEqual([])
      expect(live.events.map((e) => e.id).sort()).toEqual([...acked].sort())

      const cut = live.events[1999]!.seq
      const resumed = new DashboardClient(relay.url, cut)
      await resumed.waitForCount(3000)
      // A little more traffic proves the resumed client continues live with no gap.
      await publish(relay.url, 10, 10, 1, 'tail')
      await resumed.waitForCount(3010)
      expect(resumed.events[0]!.seq).toBe(cut + 1)
      expect(seqProblems(resumed.events)).toEqual([])
      expect(resumed.events).toHaveLength(3010)
      live.close()
      resumed.close()

      relay.kill('SIGTERM')
      expect((await relay.exited).code).toBe(0)
      const rows = await storedRows(b.storeOpts(relay.dataDir))
      expect(rows).toHaveLength(5010)
      expect(new Set(rows.map((r) => r.id))).toEqual(new Set([...acked, ...resumed.events.slice(-10).map((e) => e.id)]))
    } finally {
      relay.kill('SIGKILL')
    }
  })

  it.skipIf(skip)('SIGTERM under load exits 0 and every acknowledged event is in the table', async () => {
    const b = await backend.setup()
    cleanups.push(b.cleanup)
    const relay = await startRelayProcess(b.env)
    cleanups.push(() => removeDir(relay.dataDir))
    const load = publish(relay.url, 50_000, 50, 4, 'term', true)
    await waitFor(async () => (await fetch(`${relay.url}/metrics`).then((r) => r.text())).match(/relay_events_accepted_total (\d+)/)?.[1]! > '0', 'some events accepted')
    await waitFor(async () => Number((await fetch(`${relay.url}/metrics`).then((r) => r.text())).match(/relay_events_accepted_total (\d+)/)?.[1]) > 2000, '2,000 events accepted')
    relay.kill('SIGTERM')
    const { acked } = await load
    const exit = await relay.exited
    expect(exit.code).toBe(0)
    expect(acked.length).toBeGreaterThan(2000)
    const rows = await storedRows(b.storeOpts(relay.dataDir))
    const stored = new Set(rows.map((r) => r.id))
    expect(acked.filter((id) => !stored.has(id))).toEqual([])
    expect(relay.logs.some((l) => l.msg === 'state changed' && l.to === 'stopped')).toBe(true)
  })

  it.skipIf(skip)('SIGKILL under load, then restart: every acknowledged event is in the table exactly once', async () => {
    const b = await backend.setup()
    cleanups.push(b.cleanup)
    const relay = await startRelayProcess(b.env)
    cleanups.push(() => removeDir(relay.dataDir))
    const load = publish(relay.url, 50_000, 50, 4, 'kill', true)
    await waitFor(async () => Number((await fetch(`${relay.url}/metrics`).then((r) => r.text())).match(/relay_events_accepted_total (\d+)/)?.[1]) > 2000, '2,000 events accepted')
    relay.kill('SIGKILL')
    const { acked, ackedSeqs } = await load
    await relay.exited
    expect(acked.length).toBeGreaterThan(2000)

    const restarted = await startRelayProcess(b.env, { dataDir: relay.dataDir })
    try {
      // Seq keeps increasing across the restart.
      const after = await postEvents(restarted.url, makeEvents(1, 'after-restart'))
      expect(after.status).toBe(202)
      expect(after.body.first_seq).toBeGreaterThan(Math.max(...ackedSeqs))
      restarted.kill('SIGTERM')
      expect((await restarted.exited).code).toBe(0)
    } finally {
      restarted.kill('SIGKILL')
    }
    const rows = await storedRows(b.storeOpts(relay.dataDir))
    const stored = new Set(rows.map((r) => r.id))
    expect(acked.filter((id) => !stored.has(id))).toEqual([])
    const tags = rows.map((r) => String(r.data.tag))
    expect(tags.length - new Set(tags).size).toBe(0)
  })
})

describe('relay start-up', () => {
  it('reports every bad env value together and exits 1', async () => {
    const started = startRelayProcess({ PORT: 'abc', LOG_LEVEL: 'loud', HOST: '0.0.0.0', BATCH_HIGH_SIZE: '-1' })
    const err = await started.then(() => undefined, (e: Error) => e)
    expect(err?.message).toMatch(/invalid configuration/)
    for (const expected of [/PORT: expected an integer from 0 to 65535, got "abc"/, /LOG_LEVEL: expected .* got "loud"/, /BATCH_HIGH_SIZE: expected an integer/, /INGEST_TOKEN: required when HOST/]) {
      expect(err?.message).toMatch(expected)
    }
  })
})

export type { RelayProcess }
