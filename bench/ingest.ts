/**
 * npm run bench:ingest — events/s from HTTP ingest to committed rows in Postgres, and in the same
 * run the raw ceiling: the same events written by batched json_to_recordset inserts straight into
 * a fresh table (no HTTP, no WAL). Uses the local PostgreSQL (BENCH_PG, default
 * postgres://postgres@127.0.0.1:5432/postgres) to create throwaway databases; prints medians of
 * ROUNDS rounds and the ratio.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { loadConfig } from '../src/config.js'
import { createLogger } from '../src/observability/logger.js'
import { Relay } from '../src/relay.js'
import { openStore } from '../src/store/index.js'
import { uuidv7 } from '../src/ingest/uuidv7.js'
import type { StoredEvent } from '../src/types.js'

const ADMIN_URL = process.env.BENCH_PG ?? 'postgres://postgres@127.0.0.1:5432/postgres'
const EVENTS = Number(process.env.BENCH_EVENTS ?? 50_000)
const BATCH = Number(process.env.BENCH_BATCH ?? 500)
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3)

async function withDatabase<T>(fn: (url: string) => Promise<T>): Promise<T> {
  const name = `relay_bench_${process.pid}_${Math.random().toString(36).slice(2, 8)}`
  const admin = new pg.Client({ connectionString: ADMIN_URL })
  await admin.connect()
  await admin.query(`CREATE DATABASE ${name}`)
  try {
    const url = new URL(ADMIN_URL)
    url.pathname = `/${name}`
    return await fn(url.toString())
  } finally {
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
    await admin.end()
  }
}

function events(n: number, start: number): Array<Record<string, unknown>> {
  return Array.from({ length: n }, (_, i) => ({ event_type: 'bench.ingest', source: 'bench', data: { i: start + i, host: 'web-1', value: Math.random() } }))
}

async function relayRound(url: string): Promise<number> {
  const dataDir = await mkdtemp(join(tmpdir(), 'bench-ingest-'))
  const loaded = loadConfig({ PORT: '0', DATA_DIR: dataDir, HEALTH_INTERVAL_MS: '0', LOG_LEVEL: 'warn', DATABASE_URL: url })
  if (!loaded.ok) throw new Error(loaded.errors.join('\n'))
  const relay = new Relay({ config: loaded.config, logger: createLogger('warn') })
  await relay.start()
  const base = `http://127.0.0.1:${relay.port}`
  const stored = async () => (await relay.metrics.eventsStored.get()).values[0]?.value ?? 0
  const t0 = performance.now()
  const inflight = new Set<Promise<unknown>>()
  for (let sent = 0; sent < EVENTS; sent += BATCH) {
    const p = fetch(`${base}/events`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(events(BATCH, sent)) }).then(async (r) => {
      if (r.status !== 202) throw new Error(`ingest answered ${r.status}: ${await r.text()}`)
    })
    inflight.add(p)
    void p.finally(() => inflight.delete(p))
    if (inflight.size >= 8) await Promise.race(inflight)
  }
  await Promise.all(inflight)
  while ((await stored()) < EVENTS) await new Promise((r) => setTimeout(r, 5))
  const seconds = (performance.now() - t0) / 1000
  await relay.shutdown()
  await rm(dataDir, { recursive: true, force: true })
  return EVENTS / seconds
}

async function rawRound(url: string): Promise<number> {
  const store = await openStore({ databaseUrl: url, dataDir: tmpdir() })
  await store.migrate()
  const base = (await store.maxSeq()) + 1
  const all: StoredEvent[] = events(EVENTS, 0).map((e, i) => ({
    id: uuidv7(),
    seq: base + i,
    event_type: String(e.event_type),
    timestamp: new Date().toISOString(),
    source: String(e.source),
    data: e.data as Record<string, unknown>,
    metadata: {},
  }))
  const t0 = performance.now()
  for (let i = 0; i < all.length; i += BATCH) await store.insertEvents(all.slice(i, i + BATCH))
  const seconds = (performance.now() - t0) / 1000
  await store.close()
  return EVENTS / seconds
}

const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)]!
const raw: number[] = []
const relayed: number[] = []
for (let round = 0; round < ROUNDS; round++) {
  raw.push(await withDatabase(rawRound))
  relayed.push(await withDatabase(relayRound))
}
console.log(`ingest: ${EVENTS} events in requests/batches of ${BATCH}, median of ${ROUNDS} rounds, local PostgreSQL`)
console.log(`  raw batched insert (ceiling):           ${Math.round(median(raw)).toLocaleString()} rows/s`)
console.log(`  relay (HTTP → WAL → flusher → Postgres): ${Math.round(median(relayed)).toLocaleString()} events/s committed`)
console.log(`  ratio relay / ceiling: ${(median(relayed) / median(raw)).toFixed(2)}`)
process.exit(0)
