import { createServer, type Server } from 'node:http'
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { Redacted } from 'effect'
import { createActor, fromCallback, fromPromise, type Actor, type InspectionEvent } from 'xstate'
import { batchFlusherMachine } from '../machines/batchFlusher.js'
import { supervisorMachine } from '../machines/supervisor.js'
import { LocalBus, type Bus } from './bus.js'
import type { RelayConfig } from './config.js'
import { validateEvents } from './event.js'
import { createHttpHandlers } from './http.js'
import { Hub } from './hub.js'
import { Ingest } from './ingest.js'
import type { Logger } from './logger.js'
import { createMetrics, type Metrics } from './metrics.js'
import { LocalSequencer, type Sequencer } from './sequencer.js'
import { openStore } from './store/index.js'
import type { Store } from './store/store.js'
import { StoreQueue } from './storeQueue.js'
import { machineObserver } from './observe.js'
import type { StoredEvent } from './types.js'
import { Wal } from './wal.js'

export const STORE_FLUSHER = 'storeFlusher'
/** Replay the WAL into the store in chunks of this many events. */
const REPLAY_CHUNK = 1000
/** How often, at most, fully committed WAL segments are released. */
const WAL_RELEASE_INTERVAL_MS = 1000

export interface RelayOptions {
  config: RelayConfig
  logger: Logger
  /** Extra inspection observer (the Stately inspector, tests). */
  inspect?: (event: InspectionEvent) => void
}

/**
 * The relay's runtime: the pieces the machines drive. The supervisor owns the lifecycle; this
 * class only provides the actors it invokes (start, stop ingest, flush, close) with real I/O.
 */
export class Relay {
  readonly metrics: Metrics = createMetrics()
  readonly bus: Bus = new LocalBus()
  readonly hub: Hub
  readonly queue = new StoreQueue()
  readonly ingest: Ingest
  readonly server: Server
  readonly actor: Actor<typeof supervisorMachine>
  private store?: Store
  private wal?: Wal
  private sequencer?: Sequencer
  private committedSeq = 0
  private lastRelease = 0
  private readonly config: RelayConfig
  private readonly logger: Logger

  constructor(options: RelayOptions) {
    this.config = options.config
    this.logger = options.logger
    const { config, logger, metrics } = this
    this.hub = new Hub({
      maxBufferBytes: config.ws.clientMaxBufferBytes,
      ringSize: config.ws.ringSize,
      readSince: (after, limit) => this.requireStore().readSince(after, limit),
      metrics,
      logger,
    })
    this.bus.subscribe((batch) => this.hub.publish(batch))
    this.ingest = new Ingest({
      append: (batch) => this.requireWal().append(batch),
      sequencer: () => this.sequencer ?? fail('sequencer used before start-up finished'),
      onDurable: (batch) => this.onDurable(batch),
      overloaded: (incoming) => (this.queue.size + incoming > config.batch.maxPending ? 'store' : undefined),
    })
    const http = createHttpHandlers({
      ingest: this.ingest,
      hub: this.hub,
      metrics,
      logger,
      ingestToken: config.ingestToken,
      readiness: () => this.readiness(),
    })
    this.server = createServer({ requestTimeout: 30_000, headersTimeout: 10_000, keepAliveTimeout: 5_000 }, (req, res) => void http.request(req, res))
    this.server.on('upgrade', http.upgrade)

    const observer = machineObserver({ logger, metrics, extra: options.inspect })
    this.actor = createActor(this.machine(), {
      systemId: 'supervisor',
      input: {
        shutdownTimeoutMs: config.shutdownTimeoutMs,
        flushers: [
          {
            id: STORE_FLUSHER,
            input: {
              name: 'store',
              profiles: config.batch.profiles,
              rate: config.batch.rate,
              retry: { baseMs: 100, maxMs: 5000 },
            },
          },
        ],
      },
      inspect: observer,
    })
  }

  /** Starts the supervisor; resolves once it is running (or rejects with the start-up error). */
  start(): Promise<void> {
    this.actor.start()
    return new Promise((resolve, reject) => {
      const sub = this.actor.subscribe((s) => {
        if (s.matches('running')) {
          sub.unsubscribe()
          resolve()
        } else if (s.status === 'done') {
          sub.unsubscribe()
          const out = s.output as { error?: string } | undefined
          reject(new Error(out?.error ?? `supervisor stopped during start-up in ${JSON.stringify(s.value)}`))
        }
      })
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
        return false
      }
      if (check()) return
      const sub = this.actor.subscribe({ next: () => check() && sub.unsubscribe(), complete: () => check() })
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

  private onDurable(batch: readonly StoredEvent[]): void {
    this.queue.push(batch)
    this.metrics.queueDepth.labels('store').set(this.queue.size)
    this.bus.publish(batch)
    this.actor.system.get(STORE_FLUSHER)?.send({ type: 'events.added', count: batch.length })
  }

  private machine() {
    const relay = this
    return supervisorMachine.provide({
      actors: {
        startRelay: fromPromise(() => relay.startUp()),
        stopIngest: fromPromise(() => relay.ingest.stop()),
        closeTransports: fromPromise(() => relay.closeAll()),
        healthReporter: fromCallback(() => relay.reportHealth()),
        batchFlusher: batchFlusherMachine.provide({
          actors: { flushBatch: fromPromise(({ input }: { input: { max: number } }) => relay.flushToStore(input.max)) },
        }),
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
    const databaseUrl = config.databaseUrl ? Redacted.value(config.databaseUrl) : undefined
    this.store = await openStore({ databaseUrl, dataDir: config.dataDir })
    const applied = await this.store.migrate()
    logger.info({ store: this.store.kind, applied }, 'store ready')
    let replayed = 0
    for await (const chunk of this.wal.replay(0, REPLAY_CHUNK)) {
      await this.store.insertEvents(chunk)
      replayed += chunk.length
    }
    const last = Math.max(await this.store.maxSeq(), this.wal.maxSeq)
    if (replayed) logger.info({ replayed, upToSeq: this.wal.maxSeq }, 'write-ahead log replayed into the store')
    await this.wal.release(this.wal.maxSeq)
    this.committedSeq = last
    this.hub.markCommitted(last)
    this.sequencer = new LocalSequencer(last)
  }

  private async flushToStore(max: number): Promise<{ flushed: number }> {
    const batch = this.queue.peek(max)
    if (batch.length === 0) return { flushed: 0 }
    const end = this.metrics.flushDuration.startTimer({ sink: 'store' })
    try {
      await this.requireStore().insertEvents(batch)
      end({ outcome: 'ok' })
    } catch (err) {
      end({ outcome: 'error' })
      throw err
    }
    this.queue.drop(batch.length)
    this.metrics.queueDepth.labels('store').set(this.queue.size)
    this.metrics.eventsStored.inc(batch.length)
    this.committedSeq = batch[batch.length - 1]!.seq
    this.hub.markCommitted(this.committedSeq)
    const now = Date.now()
    if (now - this.lastRelease >= WAL_RELEASE_INTERVAL_MS) {
      this.lastRelease = now
      await this.requireWal().release(this.committedSeq)
    }
    return { flushed: batch.length }
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
              ws: this.hub.stats(),
              machines: this.machineStates(),
              committed_seq: this.committedSeq,
            },
          },
        ])
      })().catch((err: Error) => this.logger.warn({ err: err.message }, 'health event not published'))
    }, interval)
    timer.unref()
    return () => clearInterval(timer)
  }

  /** The current state of every machine in the system, by systemId. */
  machineStates(): Record<string, unknown> {
    const out: Record<string, unknown> = { supervisor: this.actor.getSnapshot().value }
    const flusher = this.actor.system.get(STORE_FLUSHER)
    if (flusher) out[STORE_FLUSHER] = (flusher.getSnapshot() as { value: unknown }).value
    return out
  }

  private async closeAll(): Promise<void> {
    await this.hub.closeAll()
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve())
      this.server.closeAllConnections()
    })
    if (this.wal) {
      if (this.queue.size === 0) await this.wal.release(this.committedSeq)
      await this.wal.close()
    }
    await this.store?.close()
    this.logger.info({ committedSeq: this.committedSeq, unstored: this.queue.size }, 'relay closed')
  }

  private requireStore(): Store {
    return this.store ?? fail('store used before start-up finished')
  }

  private requireWal(): Wal {
    return this.wal ?? fail('write-ahead log used before start-up finished')
  }
}

function fail(message: string): never {
  throw new Error(message)
}
