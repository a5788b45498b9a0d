/**
 * npm run bench:fanout — events/s delivered to 100 dashboard clients and p50/p99 publish→receive
 * latency, through the relay (HTTP ingest → WAL → hub → /ws), and the same workload through a
 * bare `ws` broadcast loop (the ceiling on this machine), measured in the same run. Prints the
 * median of ROUNDS rounds for each and the ratio relay / ceiling.
 */
import { createServer } from 'node:http'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import WebSocket, { WebSocketServer } from 'ws'
import { loadConfig } from '../src/config.js'
import { createLogger } from '../src/observability/logger.js'
import { Relay } from '../src/relay.js'

const CLIENTS = Number(process.env.BENCH_CLIENTS ?? 100)
const EVENTS = Number(process.env.BENCH_EVENTS ?? 20_000)
const BATCH = Number(process.env.BENCH_BATCH ?? 100)
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3)

interface Result {
  eventsPerSecond: number
  p50: number
  p99: number
}

/** Connects CLIENTS sockets to `url` and resolves, per round, when each has seen `expected` events. */
async function connectClients(url: string) {
  const latencies: number[] = []
  let received = 0
  const sockets = await Promise.all(
    Array.from({ length: CLIENTS }, (_, i) =>
      new Promise<WebSocket>((resolve, reject) => {
        const ws = new WebSocket(url)
        ws.on('open', () => resolve(ws))
        ws.on('error', reject)
        ws.on('message', (data) => {
          const frame = JSON.parse(String(data)) as { type: string; event?: { data: { t: number } }; events?: Array<{ data: { t: number } }> }
          const events = frame.type === 'events' ? frame.events! : frame.type === 'event' ? [frame.event!] : []
          received += events.length
          // Sample latency on one client to keep measurement cheap.
          if (i === 0) for (const e of events) latencies.push(performance.now() - e.data.t)
        })
      }),
    ),
  )
  return {
    sockets,
    reset: () => {
      received = 0
      latencies.length = 0
    },
    received: () => received,
    latencies,
  }
}

async function until(cond: () => boolean, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('benchmark timed out')
    await new Promise((r) => setImmediate(r))
  }
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN
}

function median(values: number[]): number {
  return percentile(values, 50)
}

function makeBatch(start: number): Array<Record<string, unknown>> {
  const t = performance.now()
  return Array.from({ length: BATCH }, (_, i) => ({ event_type: 'bench.tick', source: 'bench', data: { i: start + i, t } }))
}

async function benchRelay(): Promise<Result[]> {
  const dataDir = await mkdtemp(join(tmpdir(), 'bench-fanout-'))
  const loaded = loadConfig({ PORT: '0', DATA_DIR: dataDir, HEALTH_INTERVAL_MS: '0', LOG_LEVEL: 'warn', ...process.env.DATABASE_URL ? { DATABASE_URL: process.env.DATABASE_URL } : {} })
  if (!loaded.ok) throw new Error(loaded.errors.join('\n'))
  const relay = new Relay({ config: loaded.config, logger: createLogger('warn') })
  await relay.start()
  const base = `http://127.0.0.1:${relay.port}`
  const clients = await connectClients(`ws://127.0.0.1:${relay.port}/ws`)
  const results: Result[] = []
  for (let round = 0; round < ROUNDS; round++) {
    clients.reset()
    const t0 = performance.now()
    const inflight = new Set<Promise<unknown>>()
    for (let sent = 0; sent < EVENTS; sent += BATCH) {
      const p = fetch(`${base}/events`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(makeBatch(sent)) }).then((r) => r.text())
      inflight.add(p)
      void p.finally(() => inflight.delete(p))
      if (inflight.size >= 8) await Promise.race(inflight)
    }
    await Promise.all(inflight)
    await until(() => clients.received() >= EVENTS * CLIENTS)
    const seconds = (performance.now() - t0) / 1000
    results.push({ eventsPerSecond: (EVENTS * CLIENTS) / seconds, p50: percentile(clients.latencies, 50), p99: percentile(clients.latencies, 99) })
  }
  for (const s of clients.sockets) s.close()
  await relay.shutdown()
  await rm(dataDir, { recursive: true, force: true })
  return results
}

/** The ceiling: a bare ws server that frames the same batches once and sends them to every client. */
async function benchBareWs(): Promise<Result[]> {
  const server = createServer()
  const wss = new WebSocketServer({ server, perMessageDeflate: false })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as { port: number }).port
  const clients = await connectClients(`ws://127.0.0.1:${port}`)
  const results: Result[] = []
  let seq = 0
  for (let round = 0; round < ROUNDS; round++) {
    clients.reset()
    const t0 = performance.now()
    for (let sent = 0; sent < EVENTS; sent += BATCH) {
      const events = makeBatch(sent).map((e) => ({ id: crypto.randomUUID(), seq: ++seq, timestamp: new Date().toISOString(), metadata: {}, ...e }))
      const frame = JSON.stringify({ type: 'events', events })
      for (const ws of wss.clients) ws.send(frame)
      // Yield every 8 batches (the relay run keeps 8 requests in flight), so sockets get written.
      if ((sent / BATCH) % 8 === 7) await new Promise((r) => setImmediate(r))
    }
    await until(() => clients.received() >= EVENTS * CLIENTS)
    const seconds = (performance.now() - t0) / 1000
    results.push({ eventsPerSecond: (EVENTS * CLIENTS) / seconds, p50: percentile(clients.latencies, 50), p99: percentile(clients.latencies, 99) })
  }
  for (const s of clients.sockets) s.close()
  wss.close()
  server.close()
  return results
}

const fmt = (r: Result[]) => ({
  eventsPerSecond: Math.round(median(r.map((x) => x.eventsPerSecond))),
  p50ms: Number(median(r.map((x) => x.p50)).toFixed(1)),
  p99ms: Number(median(r.map((x) => x.p99)).toFixed(1)),
})

const ceiling = fmt(await benchBareWs())
const relay = fmt(await benchRelay())
console.log(`fan-out: ${EVENTS} events × ${CLIENTS} clients, batches of ${BATCH}, median of ${ROUNDS} rounds`)
console.log(`  bare ws broadcast (ceiling): ${ceiling.eventsPerSecond.toLocaleString()} deliveries/s, p50 ${ceiling.p50ms} ms, p99 ${ceiling.p99ms} ms`)
console.log(`  relay (HTTP → WAL → /ws):    ${relay.eventsPerSecond.toLocaleString()} deliveries/s, p50 ${relay.p50ms} ms, p99 ${relay.p99ms} ms`)
console.log(`  ratio relay / ceiling: ${(relay.eventsPerSecond / ceiling.eventsPerSecond).toFixed(2)}`)
process.exit(0)
