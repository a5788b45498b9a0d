import { createServer, type Server } from 'node:http'
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { Redacted } from 'effect'
import type { RolloutInput } from '../machines/rolloutController.js'
import { LocalBus } from './bus.js'
import { realtimeOn, rolloutOn, type RelayConfig } from './config.js'
import { Outbox } from './delivery/outbox.js'
import type { Link, MachineSystem, Sink } from './delivery/sink.js'
import { DeadLetterQueue } from './durability/dlq.js'
import { recover } from './durability/recover.js'
import { Release } from './durability/release.js'
import { Wal } from './durability/wal.js'
import { FlagService, pgFlagStore, pgliteFlagStore, SEED_FLAGS, type FlagStore } from './flags/index.js'
import { relayRoutes, type RelayView } from './http/routes.js'
import { createHttpHandlers } from './http/server.js'
import { Ingest } from './ingest/ingest.js'
import { LocalSequencer } from './ingest/sequencer.js'
import type { Lifecycle } from './lifecycle.js'
import { MigrationControl } from './migration/control.js'
import type { Logger } from './observability/logger.js'
import type { Metrics } from './observability/metrics.js'
import { REALTIME_SINK, realtimeLink, RealtimeSink } from './realtime/sink.js'
import { RealtimeTransport } from './realtime/transport.js'
import { openStore } from './store/index.js'
import { createPgliteStore, openPglite } from './store/pglite.js'
import { STORE_SINK, storeLink, StoreSink } from './store/sink.js'
import type { Store } from './store/store.js'
import { Hub } from './ws/hub.js'
import { ids } from './ids.js'

export interface RuntimeOptions {
  config: RelayConfig
  logger: Logger
  metrics: Metrics
  env: Record<string, string | undefined>
  system: MachineSystem
  view: RelayView
  lifecycle: Lifecycle
  /** The rollout controller's input; filled with its restore record here, before the supervisor spawns it. */
  rolloutInput: RolloutInput
}

/** Everything the machines' actors call into, opened in order. */
export interface Runtime {
  server: Server
  port: number
  bus: LocalBus
  hub: Hub
  ingest: Ingest
  store: Store
  wal: Wal
  dlq: DeadLetterQueue
  release: Release
  storeOutbox: Outbox
  storeSink: StoreSink
  /** The sinks behind the batch flushers and the links behind the connections, by dependency name. */
  sinks: Record<string, Sink>
  links: Record<string, Link>
  realtime?: { transport: RealtimeTransport; sink: RealtimeSink; outbox: Outbox }
  migration?: MigrationControl
  flags: FlagService
}

/**
 * Opens the relay's services in order — data directory, WAL, DLQ, store (migrations, WAL replay),
 * flags, Realtime, the rollout's restore record, then the HTTP server — each registered with the
 * lifecycle so the shutdown closes them in reverse. Then wires the path of an event:
 * ingest → WAL → bus → hub, store outbox (→ store flusher), Realtime backlog (→ Realtime flusher).
 */
export async function openRuntime(o: RuntimeOptions): Promise<Runtime> {
  const { config, logger, metrics, system, lifecycle: life } = o
  await mkdir(config.dataDir, { recursive: true })
  const wal = life.use('write-ahead log', await Wal.open({ dir: join(config.dataDir, 'wal') }), (w) => w.close())
  const dlq = life.use('dead-letter queue', await DeadLetterQueue.open({ dir: join(config.dataDir, 'dlq'), maxBytes: config.dlq.maxBytes }), (d) => d.close())
  const databaseUrl = config.databaseUrl ? Redacted.value(config.databaseUrl) : undefined
  let store: Store
  let flagStore: FlagStore
  if (databaseUrl) {
    store = await openStore({ databaseUrl, dataDir: config.dataDir, postgres: { statementTimeoutMs: config.store.statementTimeoutMs } })
    flagStore = pgFlagStore(databaseUrl)
  } else {
    // One embedded database, shared by the store and the flag service's database tier.
    const db = await openPglite(config.dataDir)
    store = createPgliteStore(db, join(config.dataDir, 'pglite'))
    flagStore = pgliteFlagStore(db)
  }
  life.use('store', store, (s) => s.close())

  const bus = new LocalBus()
  const hub = new Hub({
    maxBufferBytes: config.ws.clientMaxBufferBytes,
    ringSize: config.ws.ringSize,
    ringHardMax: config.ws.ringSize + config.batch.maxPending,
    readSince: (after, limit) => store.readSince(after, limit),
    metrics,
    logger,
  })
  const storeOutbox = new Outbox({ sink: STORE_SINK, flusherId: ids.storeFlusher, system, metrics })
  const { lastSeq: last, migrated } = await recover(store, wal, storeOutbox, logger)
  const release = new Release({ wal, dlq, hub, system, replayerId: ids.storeReplayer, logger, releasedSeq: last })
  // At shutdown, with everything stored, the WAL may go whole (closed before it: newest first).
  life.use('write-ahead log release', release, (r) => r.releaseAll(storeOutbox.size))
  const storeSink = new StoreSink({ store, dlq, outbox: storeOutbox, release, system, breakerId: ids.storeBreaker, metrics, logger, callTimeoutMs: config.store.statementTimeoutMs, migrated })

  const flags = life.use(
    'flag service',
    await FlagService.open({ store: flagStore, redisUrl: config.redis.url, redisPrefix: config.redis.prefix, env: o.env, defaults: SEED_FLAGS, logger }),
    (f) => f.close(),
  )
  flags.onChange((key) => {
    if (SEED_FLAGS.some((f) => f.key === key)) logger.warn({ flag: key, now: flags.evaluate(key).value }, 'seed flag changed: it shapes the actor system and takes effect at the next start')
  })
  if (config.realtime.enabled) await configureDatabaseDelivery(store, config, logger)

  const realtime = realtimeOn(config) ? openRealtime(o, life) : undefined
  const migration = realtime && rolloutOn(config) ? new MigrationControl({ config, logger, metrics, hub, realtimeSink: realtime.sink, transport: realtime.transport, store, system, breakerId: ids.realtimeBreaker }, o.rolloutInput) : undefined
  await migration?.restore()

  const ingest = new Ingest({
    log: wal,
    sequencer: new LocalSequencer(last),
    bus,
    admission: { overloaded: (incoming) => (storeOutbox.size + incoming > config.batch.maxPending ? 'store' : dlq.nearlyFull ? 'dead_letter_queue' : undefined) },
  })
  bus.subscribe(hub)
  bus.subscribe(storeOutbox)
  if (realtime) bus.subscribe(realtime.outbox)
  if (migration) bus.subscribe(migration)

  const routes = relayRoutes({ config, logger, view: o.view, system, dlq, flags, migration, replayDlq: () => system.get(ids.storeReplayer)?.send({ type: 'replay' }) })
  const http = createHttpHandlers({
    ingest,
    hub,
    metrics,
    logger,
    ingestToken: config.ingestToken,
    readiness: () => o.view.readiness(),
    connectOrigins: config.realtime.url ? [new URL(config.realtime.url).origin] : [],
    routes,
  })
  const server = createServer({ requestTimeout: 30_000, headersTimeout: 10_000, keepAliveTimeout: 5_000 }, (req, res) => void http.request(req, res))
  server.on('upgrade', http.upgrade)
  await listen(server, config)
  life.use('HTTP server', server, (s) => new Promise<void>((resolve) => (s.close(() => resolve()), s.closeAllConnections())))
  life.use('WebSocket dashboards', hub, (h) => h.closeAll())
  // Closed first: its /ws shadow is a client of this server.
  if (migration) life.use('migration control', migration, (m) => m.stop())
  const port = (server.address() as { port: number }).port
  logger.info({ host: config.host, port, url: `http://${config.host}:${port}` }, 'listening')
  migration?.startValidator(port).catch((err: Error) => logger.error({ err: err.message }, 'consistency validator could not start; rollout gates will read missing data'))

  const sinks: Record<string, Sink> = { [STORE_SINK]: storeSink }
  const links: Record<string, Link> = { [STORE_SINK]: storeLink(storeSink) }
  if (realtime) {
    sinks[REALTIME_SINK] = realtime.sink
    links[REALTIME_SINK] = realtimeLink(realtime.transport)
  }
  return { server, port, bus, hub, ingest, store, wal, dlq, release, storeOutbox, storeSink, sinks, links, realtime, migration, flags }
}

function openRealtime({ config, logger, metrics, system }: RuntimeOptions, life: Lifecycle) {
  const transport = new RealtimeTransport({
    url: config.realtime.url!,
    key: Redacted.value(config.realtime.serviceRoleKey!),
    channel: config.realtime.channel,
    privateChannel: config.realtime.privateChannel,
    ackTimeoutMs: config.realtime.ackTimeoutMs,
    maxPayloadBytes: config.realtime.maxPayloadBytes,
    maxMessagesPerSecond: config.realtime.maxMessagesPerSecond,
    logger,
  })
  life.use('Realtime transport', transport, (t) => t.close())
  const outbox = new Outbox({ sink: REALTIME_SINK, flusherId: ids.realtimeFlusher, system, metrics, bound: config.realtime.backlogEvents })
  const sink = new RealtimeSink({ transport, outbox, system, breakerId: ids.realtimeBreaker, metrics, logger })
  return { transport, sink, outbox }
}

async function configureDatabaseDelivery(store: Store, config: RelayConfig, logger: Logger): Promise<void> {
  const delivery = await store.setRealtimeDelivery(config.realtime.delivery, config.realtime.channel, { private: config.realtime.privateChannel }).catch((err: Error) => {
    logger.warn({ err: err.message }, 'could not configure database broadcast')
    return 'unavailable' as const
  })
  if (config.realtime.delivery === 'database' && delivery !== 'enabled') {
    logger.error({ delivery }, 'REALTIME_DELIVERY=database needs Supabase (the realtime schema); nothing is broadcast')
  }
}

function listen(server: Server, config: RelayConfig): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(config.port, config.host, () => {
      server.off('error', reject)
      resolve()
    })
  })
}
