import { createServer, type Server } from 'node:http'
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { Redacted } from 'effect'
import { createActor, fromCallback, fromPromise, type Actor, type ActorRefFrom, type EventObject, type InspectionEvent } from 'xstate'
import { batchFlusherMachine, defaultRetryPolicy, type DeadLetterInput, type DeadLetterOutput, type FlushBatchInput, type FlushBatchOutput } from '../machines/batchFlusher.js'
import { circuitBreakerMachine } from '../machines/circuitBreaker.js'
import { connectionMachine, toConnectionFault, type ProbeInput } from '../machines/connection.js'
import { dlqReplayerMachine } from '../machines/dlqReplayer.js'
import { rolloutControllerMachine, type ApplyPercentInput, type ApplyPercentOutput } from '../machines/rolloutController.js'
import { realtimeHealthOf, supervisorMachine } from '../machines/supervisor.js'
import { adminRoutes } from './http/admin.js'
import { LocalBus, type Bus } from './bus.js'
import type { RelayConfig } from './config.js'
import { validateEvents } from './ingest/event.js'
import { createHttpHandlers, sendJson } from './http/server.js'
import { Hub } from './ws/hub.js'
import { Ingest } from './ingest/ingest.js'
import type { Logger } from './observability/logger.js'
import { createMetrics, type Metrics } from './observability/metrics.js'
import { LocalSequencer, type Sequencer } from './ingest/sequencer.js'
import { openStore } from './store/index.js'
import { createPgliteStore, openPglite } from './store/pglite.js'
import { flagAdminRoutes, FlagService, pgFlagStore, pgliteFlagStore, SEED_FLAGS, type FlagStore } from './flags/index.js'
import type { Store } from './store/store.js'
import { StoreQueue } from './delivery/queue.js'
import { DeadLetterQueue } from './durability/dlq.js'
import { STORE_BACKLOG_BATCH, STORE_SINK, StoreSink } from './store/sink.js'
import { REALTIME_SINK, RealtimeSink } from './realtime/sink.js'
import { RealtimeTransport } from './realtime/transport.js'
import { clientConfigRoute } from './http/clientConfig.js'
import { MigrationControl } from './migration/control.js'
import { rolloutAdminRoutes, type RolloutActor } from './migration/rollout.js'
import { machineObserver } from './observability/inspection.js'
import type { StoredEvent } from './types.js'
import { Wal } from './durability/wal.js'

export const STORE_FLUSHER = 'storeFlusher'
export const STORE_BREAKER = 'storeBreaker'
export const STORE_CONNECTION = 'storeConnection'
export const STORE_REPLAYER = 'storeDlqReplayer'
export const REALTIME_FLUSHER = 'realtimeFlusher'
export const REALTIME_BREAKER = 'realtimeBreaker'
export const REALTIME_CONNECTION = 'realtimeConnection'
export const ROLLOUT = 'rolloutController'
/** Bound on moving what is left in memory into the DLQ at shutdown. */
const DLQ_FLUSH_TIMEOUT_MS = 5000
/** Replay the WAL into the store in chunks of this many events. */
const REPLAY_CHUNK = 1000
/** How often, at most, fully committed WAL segments are released. */
const WAL_RELEASE_INTERVAL_MS = 1000

export interface RelayOptions {
  config: RelayConfig
  logger: Logger
  /** Extra inspection observer (the Stately inspector, tests). */
  inspect?: (event: InspectionEvent) => void
  /** The environment, for the flag service's env tier (default process.env). */
  env?: Record<string, string | undefined>
}

type Breaker = ActorRefFrom<typeof circuitBreakerMachine>

/**
 * The relay's runtime: the pieces the machines drive. The supervisor owns the lifecycle; this
 * class only provides the actors it invokes and spawns (start, flush, dead-letter, replay, probe,
 * close) with real I/O, and forwards what the children emit to whoever must react.
 */
export class Relay {
  readonly metrics: Metrics = createMetrics()
  readonly bus: Bus = new LocalBus()
  readonly hub: Hub
  readonly queue = new StoreQueue()
  readonly ingest: Ingest
  readonly server: Server
  readonly actor: Actor<typeof supervisorMachine>
  readonly storeSink: StoreSink
  readonly realtimeQueue = new StoreQueue()
  readonly realtimeSink: RealtimeSink
  /** Whether this relay broadcasts to Supabase Realtime itself (adapter modes, delivery=broadcast). */
  readonly realtimeOn: boolean
  private transport?: RealtimeTransport
  /** Dual mode: dashboards move to Realtime by the rollout controller's percent. */
  readonly rolloutOn: boolean
  readonly migration: MigrationControl
  private flags?: FlagService
  private readonly env: Record<string, string | undefined>
  private flagRoutes?: ReturnType<typeof flagAdminRoutes>
  private store?: Store
  private wal?: Wal
  private dlq?: DeadLetterQueue
  private sequencer?: Sequencer
  /** Every event up to this seq has left the store queue (stored, or durable in the DLQ). */
  private releasedSeq = 0
  private lastRelease = 0
  /** The DLQ depth the replayer last heard of (-1: not yet told). */
  private reportedDlqDepth = -1
  private wired = false
  private readonly config: RelayConfig
  private readonly logger: Logger

  constructor(options: RelayOptions) {
    this.config = options.config
    this.logger = options.logger
    this.env = options.env ?? process.env
    const { config, logger, metrics } = this
    this.hub = new Hub({
      maxBufferBytes: config.ws.clientMaxBufferBytes,
      ringSize: config.ws.ringSize,
      ringHardMax: config.ws.ringSize + config.batch.maxPending,
      readSince: (after, limit) => this.requireStore().readSince(after, limit),
      metrics,
      logger,
    })
    this.bus.subscribe((batch) => this.hub.publish(batch))
    this.ingest = new Ingest({
      append: (batch) => this.requireWal().append(batch),
      sequencer: () => this.sequencer ?? fail('sequencer used before start-up finished'),
      onDurable: (batch) => this.onDurable(batch),
      overloaded: (incoming) => {
        if (this.queue.size + incoming > config.batch.maxPending) return 'store'
        if (this.dlq?.nearlyFull) return 'dead_letter_queue'
        return undefined
      },
    })
    this.storeSink = new StoreSink({
      store: () => this.requireStore(),
      dlq: () => this.requireDlq(),
      queue: this.queue,
      breaker: () => this.child<Breaker>(STORE_BREAKER),
      metrics,
      logger,
      callTimeoutMs: config.store.statementTimeoutMs,
      onReleased: (seq) => this.onReleased(seq),
    })
    this.realtimeOn = config.realtime.enabled && config.realtime.delivery === 'broadcast'
    this.rolloutOn = this.realtimeOn && config.realtime.mode === 'dual'

    this.realtimeSink = new RealtimeSink({
      transport: () => this.transport ?? fail('Realtime transport used before start-up finished'),
      queue: this.realtimeQueue,
      breaker: () => this.child<Breaker>(REALTIME_BREAKER),
      metrics,
      logger,
    })
    this.migration = new MigrationControl({
      config,
      logger,
      metrics,
      hub: this.hub,
      realtimeSink: this.realtimeSink,
      transport: () => this.transport,
      store: () => this.store,
      port: () => this.port,
    })
    const http = createHttpHandlers({
      ingest: this.ingest,
      hub: this.hub,
      metrics,
      logger,
      ingestToken: config.ingestToken,
      readiness: () => this.readiness(),
      connectOrigins: config.realtime.url ? [new URL(config.realtime.url).origin] : [],
      routes: [
        clientConfigRoute({ realtime: config.realtime, assignment: (clientId) => this.dashboardTransport(clientId) }),
        rolloutAdminRoutes({ adminToken: config.adminToken, rollout: () => this.child<RolloutActor>(ROLLOUT), logger }),
        this.migration.route(),
        (req, res, url) => {
          if (!url.pathname.startsWith('/admin/flags')) return false
          if (!this.flags) return (sendJson(res, 503, { error: 'unavailable', message: 'the flag service is not open yet' }), true)
          return (this.flagRoutes ??= flagAdminRoutes({ flags: this.flags, adminToken: config.adminToken, logger }))(req, res, url)
        },
        adminRoutes({
          adminToken: config.adminToken,
          machineStates: () => this.machineStates(),
          dlq: () => this.dlq,
          replayDlq: () => this.child(STORE_REPLAYER)?.send({ type: 'replay' }),
        }),
      ],
    })
    this.server = createServer({ requestTimeout: 30_000, headersTimeout: 10_000, keepAliveTimeout: 5_000 }, (req, res) => void http.request(req, res))
    this.server.on('upgrade', http.upgrade)
    metrics.hooks.beforeCollect = () => this.collectGauges()

    const observer = machineObserver({ logger, metrics, extra: options.inspect })
    this.actor = createActor(this.machine(), {
      systemId: 'supervisor',
      input: {
        shutdownTimeoutMs: config.shutdownTimeoutMs,
        dlqFlushTimeoutMs: DLQ_FLUSH_TIMEOUT_MS,
        realtime: this.realtimeOn,
        flushers: [
          {
            id: STORE_FLUSHER,
            input: { name: STORE_SINK, profiles: config.batch.profiles, rate: config.batch.rate, retry: defaultRetryPolicy, backlogBatchSize: STORE_BACKLOG_BATCH },
          },
          ...(this.realtimeOn
            ? [{ id: REALTIME_FLUSHER, input: { name: REALTIME_SINK, profiles: realtimeProfiles(config.realtime.flushIntervalMs), rate: config.batch.rate, retry: defaultRetryPolicy } }]
            : []),
        ],
        children: [
          {
            id: STORE_CONNECTION,
            src: 'connection',
            input: {
              name: STORE_SINK,
              backoff: { baseMs: config.connection.backoffBaseMs, capMs: config.connection.backoffCapMs },
              maxAttempts: config.connection.maxAttempts,
              probeIntervalMs: config.store.probeIntervalMs,
            },
          },
          { id: STORE_BREAKER, src: 'circuitBreaker', input: { name: STORE_SINK, ...config.breaker } },
          { id: STORE_REPLAYER, src: 'dlqReplayer', input: { name: STORE_REPLAYER, sink: STORE_SINK, pollIntervalMs: config.dlq.pollIntervalMs, sinkHealthy: true } },
          ...(this.realtimeOn
            ? [
                {
                  id: REALTIME_CONNECTION,
                  src: 'connection' as const,
                  input: {
                    name: REALTIME_SINK,
                    backoff: { baseMs: config.connection.backoffBaseMs, capMs: config.connection.backoffCapMs },
                    maxAttempts: config.connection.maxAttempts,
                    probeIntervalMs: config.store.probeIntervalMs,
                  },
                },
                { id: REALTIME_BREAKER, src: 'circuitBreaker' as const, input: { name: REALTIME_SINK, ...config.breaker } },
              ]
            : []),
          // Its restore record is filled in during start-up, before the supervisor spawns it.
          ...(this.rolloutOn ? [{ id: ROLLOUT, src: 'rolloutController' as const, input: this.migration.rolloutInput }] : []),
        ],
      },
      inspect: observer,
    })
    this.actor.subscribe((s) => {
      if (!this.wired && s.matches('running')) this.wireChildren()
    })
  }

  /** Starts the supervisor; resolves once it is running (or rejects with the start-up error). */
  start(): Promise<void> {
    this.actor.start()
    return new Promise((resolve, reject) => {
      const check = (s: ReturnType<typeof this.actor.getSnapshot>) => {
        if (s.matches('running')) {
          resolve()
          return true
        }
        if (s.status === 'done' || s.status === 'error') {
          const out = s.output as { error?: string } | undefined
          reject(new Error(out?.error ?? `supervisor stopped during start-up in ${JSON.stringify(s.value)}`))
          return true
        }
        return false
      }
      if (check(this.actor.getSnapshot())) return
      const sub = this.actor.subscribe({ next: (s) => check(s) && sub.unsubscribe(), error: (err) => reject(err) })
    })
  }

  /** Sends `shutdown` and resolves with the exit code once the supervisor is done. */
  shutdown(): Promise<number> {
    this.actor.send({ type: 'shutdown' })
    return this.done()
  }

  done(): Promise<number> {
    return new Promise((resolve) => {
      const check = () => {
        const s = this.actor.getSnapshot()
        if (s.status === 'done') {
          resolve((s.output as { exitCode?: number } | undefined)?.exitCode ?? 1)
          return true
        }
        if (s.status === 'error') {
          this.logger.fatal({ err: String((s as { error?: unknown }).error) }, 'supervisor crashed')
          resolve(1)
          return true
        }
        return false
      }
      if (check()) return
      const sub = this.actor.subscribe({ next: () => check() && sub.unsubscribe(), complete: () => check(), error: () => check() })
    })
  }

  get port(): number {
    const address = this.server.address()
    return typeof address === 'object' && address ? address.port : 0
  }

  /** In-process publish(): the same validation and durability as POST /events. */
  async publish(items: readonly unknown[]): Promise<StoredEvent[]> {
    const parsed = validateEvents(items)
    if (!parsed.ok) throw Object.assign(new Error(`invalid events: ${JSON.stringify(parsed.details)}`), { details: parsed.details })
    const stored = await this.ingest.accept(parsed.events)
    this.metrics.eventsAccepted.inc(stored.length)
    return stored
  }

  readiness(): { ready: boolean; state: unknown } {
    const s = this.actor.getSnapshot()
    return { ready: s.status === 'active' && s.matches('running'), state: s.value }
  }

  /** The current state of every machine in the system, by systemId. */
  machineStates(): Record<string, unknown> {
    const out: Record<string, unknown> = {}
    for (const [id, ref] of Object.entries(this.actor.system.getAll() as Record<string, { getSnapshot(): { value?: unknown; status?: string } }>)) {
      const snap = ref.getSnapshot()
      out[id] = snap.value ?? snap.status
    }
    return out
  }

  dlqStats() {
    return this.dlq?.stats()
  }

  private child<T = { send(e: { type: string; [k: string]: unknown }): void }>(systemId: string): T | undefined {
    return this.actor.system.get(systemId) as T | undefined
  }

  private onDurable(batch: readonly StoredEvent[]): void {
    this.queue.push(batch)
    this.metrics.queueDepth.labels('store').set(this.queue.size)
    this.bus.publish(batch)
    this.child(STORE_FLUSHER)?.send({ type: 'events.added', count: batch.length })
    this.migration.sent(batch)
    if (this.realtimeOn) {
      this.realtimeQueue.push(batch)
      // Realtime must never throttle ingest: past the bound the oldest go (counted); /ws?since= has them.
      const over = this.realtimeQueue.size - this.config.batch.maxPending
      if (over > 0) this.realtimeSink.discardOldest(over)
      this.metrics.queueDepth.labels(REALTIME_SINK).set(this.realtimeQueue.size)
      this.child(REALTIME_FLUSHER)?.send({ type: 'events.added', count: batch.length })
    }
  }

  /**
   * Which transport a dashboard should use now (GET /config): Realtime only while it is healthy;
   * in realtime mode every dashboard, in dual mode those the rollout's percent covers.
   */
  dashboardTransport(clientId: string): 'realtime' | 'websocket' {
    const r = this.config.realtime
    if (!this.realtimeOn || !r.anonKey || r.mode === 'websocket') return 'websocket'
    if (realtimeHealthOf(this.actor.getSnapshot()) !== 'healthy') return 'websocket'
    if (r.mode === 'realtime') return 'realtime'
    return this.migration.assigned(clientId) ? 'realtime' : 'websocket'
  }

  private onReleased(seq: number): void {
    this.releasedSeq = seq
    this.metrics.queueDepth.labels('store').set(this.queue.size)
    const now = Date.now()
    if (now - this.lastRelease >= WAL_RELEASE_INTERVAL_MS) {
      this.lastRelease = now
      this.requireWal()
        .release(seq)
        .catch((err: Error) => this.logger.error({ err: err.message }, 'write-ahead log release failed'))
    }
    this.notifyDlqChanged()
  }

  /** Runs after every flush, dead-lettering and replay: keep it cheap. */
  private notifyDlqChanged(): void {
    const depth = this.dlq?.liveDepth ?? 0
    // Resuming clients read the store: only events known to be there may leave the recent buffer.
    // Everything up to releasedSeq is stored or in the DLQ, so with the DLQ empty it is stored.
    if (depth === 0) this.hub.markCommitted(this.releasedSeq)
    if (depth === this.reportedDlqDepth) return
    this.reportedDlqDepth = depth
    this.child(STORE_REPLAYER)?.send({ type: 'dlq.changed', depth })
  }

  /** Forwards what the store's connection, breaker and replayer emit to those who must react. */
  private wireChildren(): void {
    this.wired = true
    const supervisor = this.actor
    const breaker = this.child<Breaker>(STORE_BREAKER)
    const connection = this.child<ActorRefFrom<typeof connectionMachine>>(STORE_CONNECTION)
    const replayer = this.child<ActorRefFrom<typeof dlqReplayerMachine>>(STORE_REPLAYER)
    breaker?.on('breaker.opened', (e) => {
      this.logger.warn({ dependency: STORE_SINK, failureRate: e.failureRate }, 'store circuit breaker opened')
      this.metrics.dependencyHealthy.labels(STORE_SINK).set(0)
      supervisor.send({ type: 'dependency.degraded', dependency: STORE_SINK, reason: `circuit breaker open (failure rate ${e.failureRate}%)` })
      replayer?.send({ type: 'sink.unhealthy' })
    })
    breaker?.on('breaker.halfOpened', () => {
      this.logger.info({ dependency: STORE_SINK }, 'store circuit breaker half-open: probing')
      // Replays are probes too: with no new traffic they are what closes the breaker again.
      replayer?.send({ type: 'sink.healthy' })
    })
    breaker?.on('breaker.closed', (e) => {
      this.logger.info({ dependency: STORE_SINK, failureRate: e.failureRate }, 'store circuit breaker closed')
      this.metrics.dependencyHealthy.labels(STORE_SINK).set(1)
      supervisor.send({ type: 'dependency.healthy', dependency: STORE_SINK })
      replayer?.send({ type: 'sink.healthy' })
    })
    connection?.on('connection.lost', (e) => {
      this.logger.warn({ dependency: STORE_SINK, code: e.code, message: e.message, attempt: e.attempt, retryInMs: e.retryInMs }, 'store connection lost')
      // A failed or stalled ping is evidence enough: stop sending batches into it now.
      if (breaker && !breaker.getSnapshot().matches('open')) breaker.send({ type: 'forceOpen' })
    })
    connection?.on('connection.established', (e) => this.logger.info({ dependency: STORE_SINK, attempt: e.attempt }, 'store connection established'))
    connection?.on('connection.failed', (e) => this.logger.error({ dependency: STORE_SINK, code: e.code, message: e.message, attempts: e.attempts }, 'store connection failed; send retry via restart'))
    replayer?.on('dlq.replayed', (e) => {
      this.logger.info({ sink: e.sink, replayed: e.replayed, remaining: e.remaining }, 'dead-letter entries replayed')
      this.notifyDlqChanged()
    })
    replayer?.on('dlq.parked', (e) => this.logger.error({ sink: e.sink, parked: e.parked, remaining: e.remaining }, 'dead-letter entries parked as poison'))
    this.metrics.dependencyHealthy.labels(STORE_SINK).set(1)
    connection?.send({ type: 'connect' })
    this.notifyDlqChanged()
    // Events queued at start (the write-ahead log, when the store was down) wait for the flusher too.
    if (this.queue.size) this.child(STORE_FLUSHER)?.send({ type: 'events.added', count: this.queue.size })
    if (this.realtimeOn) this.wireRealtime()
  }

  private wireRealtime(): void {
    const supervisor = this.actor
    const breaker = this.child<Breaker>(REALTIME_BREAKER)
    const connection = this.child<ActorRefFrom<typeof connectionMachine>>(REALTIME_CONNECTION)
    breaker?.on('breaker.opened', (e) => {
      this.logger.warn({ dependency: REALTIME_SINK, failureRate: e.failureRate }, 'Realtime circuit breaker opened: failing over to the WebSocket path')
      this.metrics.dependencyHealthy.labels(REALTIME_SINK).set(0)
      supervisor.send({ type: 'dependency.degraded', dependency: REALTIME_SINK, reason: `circuit breaker open (failure rate ${e.failureRate}%)` })
    })
    breaker?.on('breaker.halfOpened', () => this.logger.info({ dependency: REALTIME_SINK }, 'Realtime circuit breaker half-open: probing'))
    breaker?.on('breaker.closed', (e) => {
      this.logger.info({ dependency: REALTIME_SINK, failureRate: e.failureRate }, 'Realtime circuit breaker closed')
      this.metrics.dependencyHealthy.labels(REALTIME_SINK).set(1)
      supervisor.send({ type: 'dependency.healthy', dependency: REALTIME_SINK })
    })
    connection?.on('connection.lost', (e) => {
      this.logger.warn({ dependency: REALTIME_SINK, code: e.code, message: e.message, attempt: e.attempt, retryInMs: e.retryInMs }, 'Realtime channel lost')
      if (breaker && !breaker.getSnapshot().matches('open')) breaker.send({ type: 'forceOpen' })
    })
    connection?.on('connection.established', (e) => this.logger.info({ dependency: REALTIME_SINK, attempt: e.attempt }, 'Realtime channel joined'))
    connection?.on('connection.failed', (e) => {
      this.logger.error({ dependency: REALTIME_SINK, code: e.code, message: e.message, attempts: e.attempts }, 'Realtime channel given up on')
      if (breaker && !breaker.getSnapshot().matches('open')) breaker.send({ type: 'forceOpen' })
    })
    this.metrics.dependencyHealthy.labels(REALTIME_SINK).set(1)
    connection?.send({ type: 'connect' })
    if (this.rolloutOn) this.migration.start(this.child<RolloutActor>(ROLLOUT), breaker)
  }

  private machine() {
    const relay = this
    const sink = this.storeSink
    return supervisorMachine.provide({
      actors: {
        startRelay: fromPromise(() => relay.startUp()),
        stopIngest: fromPromise(() => relay.ingest.stop()),
        flushDlq: fromPromise(async () => {
          const moved = await sink.deadLetterAll('relay shut down before the store took these events')
          if (moved) relay.logger.warn({ moved }, 'events left in memory at shutdown moved to the dead-letter queue')
          relay.realtimeSink.discardAll('relay shut down before Realtime took these events')
        }),
        announceFailover: fromPromise<void, { reason: string }>(async ({ input }) => {
          await relay.requireTransport().sendControl({ action: 'failover', transport: 'websocket', path: '/ws', since: relay.realtimeSink.lastAckedSeq, reason: input.reason })
        }),
        announceRecovery: fromPromise<void, Record<string, never>>(async () => {
          await relay.requireTransport().sendControl({ action: 'recovered', transport: 'realtime' })
        }),
        closeTransports: fromPromise(() => relay.closeAll()),
        healthReporter: fromCallback(() => relay.reportHealth()),
        batchFlusher: batchFlusherMachine.provide({
          actors: {
            flushBatch: fromPromise<FlushBatchOutput, FlushBatchInput>(({ input }) =>
              input.name === REALTIME_SINK ? relay.realtimeSink.flush(input.max, input.draining) : sink.flush(input.max, input.draining),
            ),
            deadLetter: fromPromise<DeadLetterOutput, DeadLetterInput>(({ input }) =>
              input.name === REALTIME_SINK ? relay.realtimeSink.discard(input.max, input.error) : sink.deadLetter(input.max, input.error),
            ),
          },
        }),
        connection: connectionMachine.provide({
          actors: {
            connect: fromPromise<unknown, { name: string }>(({ input, signal }) =>
              input.name === REALTIME_SINK ? relay.requireTransport().connect(signal) : sink.ping(),
            ),
            // The pool reconnects by itself; the Realtime channel is left at shutdown (closeTransports).
            disconnect: fromPromise<void, { name: string }>(async () => undefined),
            probe: fromCallback<EventObject, ProbeInput>(({ sendBack, input }) => {
              if (input.name === REALTIME_SINK) {
                // supabase-js rejoins by itself; the machine observes its statuses rather than fighting it.
                return relay.requireTransport().onStatus((status, err) => {
                  if (status !== 'SUBSCRIBED') sendBack({ type: 'connection.lost', code: status, message: err?.message ?? `channel ${status}` })
                })
              }
              let inFlight = false
              const timer = setInterval(() => {
                if (inFlight) return
                inFlight = true
                sink
                  .ping()
                  .catch((err) => sendBack({ type: 'connection.lost', ...toConnectionFault(err, 'pingFailed') }))
                  .finally(() => (inFlight = false))
              }, input.probeIntervalMs)
              return () => clearInterval(timer)
            }),
          },
        }),
        circuitBreaker: circuitBreakerMachine,
        rolloutController: rolloutControllerMachine.provide({
          actors: {
            applyPercent: fromPromise<ApplyPercentOutput, ApplyPercentInput>(async ({ input }) => {
              relay.migration.applyPercent(input.percent, input.reason)
              return { at: Date.now() }
            }),
          },
        }),
        dlqReplayer: dlqReplayerMachine.provide({ actors: { replayBatch: fromPromise(() => sink.replayOldest()) } }),
      },
    })
  }

  private async startUp(): Promise<void> {
    const { config, logger } = this
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject)
      this.server.listen(config.port, config.host, () => {
        this.server.off('error', reject)
        resolve()
      })
    })
    logger.info({ host: config.host, port: this.port, url: `http://${config.host}:${this.port}` }, 'listening')
    await mkdir(config.dataDir, { recursive: true })
    this.wal = await Wal.open({ dir: join(config.dataDir, 'wal') })
    this.dlq = await DeadLetterQueue.open({ dir: join(config.dataDir, 'dlq'), maxBytes: config.dlq.maxBytes })
    if (this.realtimeOn) {
      this.transport = new RealtimeTransport({
        url: config.realtime.url!,
        key: Redacted.value(config.realtime.serviceRoleKey!),
        channel: config.realtime.channel,
        privateChannel: config.realtime.privateChannel,
        ackTimeoutMs: config.realtime.ackTimeoutMs,
        maxPayloadBytes: config.realtime.maxPayloadBytes,
        maxMessagesPerSecond: config.realtime.maxMessagesPerSecond,
        logger,
      })
    }
    const databaseUrl = config.databaseUrl ? Redacted.value(config.databaseUrl) : undefined
    let flagStore: FlagStore
    if (databaseUrl) {
      this.store = await openStore({ databaseUrl, dataDir: config.dataDir, postgres: { statementTimeoutMs: config.store.statementTimeoutMs } })
      flagStore = pgFlagStore(databaseUrl)
    } else {
      // One embedded database, shared by the store and the flag service's database tier.
      const db = await openPglite(config.dataDir)
      this.store = createPgliteStore(db, join(config.dataDir, 'pglite'))
      flagStore = pgliteFlagStore(db)
    }
    const last = await this.recover()
    this.flags = await FlagService.open({ store: flagStore, redisUrl: config.redis.url, redisPrefix: config.redis.prefix, env: this.env, defaults: SEED_FLAGS, logger })
    this.flags.onChange((key) => {
      if (SEED_FLAGS.some((f) => f.key === key)) {
        logger.warn({ flag: key, now: this.flags?.evaluate(key).value }, 'seed flag changed: it shapes the actor system and takes effect at the next start')
      }
    })
    if (this.rolloutOn) await this.migration.restore(this.store)
    if (config.realtime.enabled) {
      const delivery = await this.store.setRealtimeDelivery(config.realtime.delivery, config.realtime.channel, { private: config.realtime.privateChannel }).catch((err: Error) => {
        logger.warn({ err: err.message }, 'could not configure database broadcast')
        return 'unavailable' as const
      })
      if (config.realtime.delivery === 'database' && delivery !== 'enabled') {
        logger.error({ delivery }, 'REALTIME_DELIVERY=database needs Supabase (the realtime schema); nothing is broadcast')
      }
    }
    this.releasedSeq = last
    if (this.dlq.liveDepth === 0) this.hub.markCommitted(last)
    this.sequencer = new LocalSequencer(last)
  }

  /**
   * Migrations and WAL replay. When the store is unreachable at start, the relay still starts:
   * the WAL's events are queued for the flusher (and the DLQ), so ingest and fan-out work.
   */
  private async recover(): Promise<number> {
    const store = this.requireStore()
    const wal = this.requireWal()
    const { logger } = this
    let storeMax = 0
    try {
      const applied = await store.migrate()
      storeMax = await store.maxSeq()
      logger.info({ store: store.kind, applied }, 'store ready')
    } catch (err) {
      if ((err as { code?: string }).code === 'rejected') throw err
      logger.error({ store: store.kind, err: (err as Error).message }, 'store unavailable at start; events will wait in the write-ahead log and the dead-letter queue')
      let queued = 0
      for await (const chunk of wal.replay(0, REPLAY_CHUNK)) {
        this.queue.push(chunk)
        queued += chunk.length
      }
      if (queued) logger.info({ queued }, 'write-ahead log queued for the store')
      return Math.max(wal.maxSeq, 0)
    }
    let replayed = 0
    for await (const chunk of wal.replay(0, REPLAY_CHUNK)) {
      await store.insertEvents(chunk)
      replayed += chunk.length
    }
    if (replayed) logger.info({ replayed, upToSeq: wal.maxSeq }, 'write-ahead log replayed into the store')
    await wal.release(wal.maxSeq)
    return Math.max(storeMax, wal.maxSeq)
  }

  private reportHealth(): () => void {
    const interval = this.config.healthIntervalMs
    if (interval <= 0) return () => {}
    let lastAccepted = 0
    let lastAt = Date.now()
    const timer = setInterval(() => {
      void (async () => {
        const accepted = (await this.metrics.eventsAccepted.get()).values[0]?.value ?? 0
        const now = Date.now()
        const rate = ((accepted - lastAccepted) * 1000) / Math.max(1, now - lastAt)
        lastAccepted = accepted
        lastAt = now
        await this.publish([
          {
            event_type: 'relay.health',
            source: 'relay',
            data: {
              accepted_per_second: Math.round(rate * 100) / 100,
              queues: { store: this.queue.size, wal_pending: this.wal?.stats().pendingAppends ?? 0 },
              dlq: this.dlq ? dlqHealth(this.dlq.stats()) : null,
              ws: this.hub.stats(),
              machines: this.machineStates(),
              released_seq: this.releasedSeq,
            },
          },
        ])
      })().catch((err: Error) => this.logger.warn({ err: err.message }, 'health event not published'))
    }, interval)
    timer.unref()
    return () => clearInterval(timer)
  }

  private collectGauges(): void {
    const wal = this.wal?.stats()
    if (wal) {
      this.metrics.walFsyncs.set(wal.fsyncs)
      this.metrics.walAppends.set(wal.appendedEvents)
    }
    const stats = this.dlq?.stats()
    if (!stats) return
    this.metrics.dlqDepth.set(stats.depth)
    this.metrics.dlqEvents.set(stats.events)
    this.metrics.dlqParked.set(stats.parked)
    this.metrics.dlqBytes.set(stats.bytes)
    this.metrics.dlqOldestAge.set(stats.oldestAt ? Math.max(0, (Date.now() - Date.parse(stats.oldestAt)) / 1000) : 0)
  }

  private async closeAll(): Promise<void> {
    await this.migration.stop()
    await this.hub.closeAll()
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve())
      this.server.closeAllConnections()
    })
    if (this.wal) {
      if (this.queue.size === 0) await this.wal.release(this.releasedSeq)
      await this.wal.close()
    }
    await this.transport?.close().catch((err: Error) => this.logger.warn({ err: err.message }, 'Realtime close failed'))
    await this.flags?.close().catch((err: Error) => this.logger.warn({ err: err.message }, 'flag service close failed'))
    const dlq = this.dlq?.stats()
    await this.dlq?.close()
    await this.store?.close().catch((err: Error) => this.logger.warn({ err: err.message }, 'store close failed'))
    this.logger.info({ releasedSeq: this.releasedSeq, unstored: this.queue.size, dlqDepth: dlq?.depth ?? 0, dlqEvents: dlq?.events ?? 0 }, 'relay closed')
  }

  private requireStore(): Store {
    return this.store ?? fail('store used before start-up finished')
  }

  private requireWal(): Wal {
    return this.wal ?? fail('write-ahead log used before start-up finished')
  }

  private requireTransport(): RealtimeTransport {
    return this.transport ?? fail('Realtime transport used before start-up finished')
  }

  private requireDlq(): DeadLetterQueue {
    return this.dlq ?? fail('dead-letter queue used before start-up finished')
  }
}

/**
 * Realtime batches are bounded by bytes (the transport cuts them to the payload limit) and by the
 * message rate, not by the store's round trips: a short interval keeps latency low at any rate,
 * and at high rates each message still carries many events.
 */
function realtimeProfiles(intervalMs: number) {
  return {
    low: { batchSize: 100, flushIntervalMs: intervalMs },
    medium: { batchSize: 250, flushIntervalMs: intervalMs },
    high: { batchSize: 1000, flushIntervalMs: intervalMs },
  }
}

function fail(message: string): never {
  throw new Error(message)
}

function dlqHealth(s: { depth: number; events: number; parked: number; bytes: number; oldestAt: string | undefined }) {
  return { depth: s.depth, events: s.events, parked: s.parked, bytes: s.bytes, oldest_at: s.oldestAt ?? null }
}
