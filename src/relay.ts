import { Data } from 'effect'
import { createActor, type Actor, type InspectionEvent } from 'xstate'
import type { RolloutInput } from '../machines/rolloutController.js'
import { realtimeHealthOf, type SupervisorSnapshot, type supervisorMachine } from '../machines/supervisor.js'
import { relaySupervisor, supervisorInput } from './actors.js'
import type { Bus } from './bus.js'
import { realtimeOn, type RelayConfig } from './config.js'
import { ids } from './ids.js'
import { validateEvents } from './ingest/event.js'
import { Lifecycle } from './lifecycle.js'
import type { RolloutActor } from './migration/rollout.js'
import { collectGauges, reportHealth } from './observability/health.js'
import { machineObserver } from './observability/inspection.js'
import type { Logger } from './observability/logger.js'
import { createMetrics, type Metrics } from './observability/metrics.js'
import { openRuntime, type Runtime } from './runtime.js'
import type { Hub } from './ws/hub.js'
import type { StoredEvent } from './types.js'

export interface RelayOptions {
  config: RelayConfig
  logger: Logger
  /** Extra inspection observer (the Stately inspector, tests). */
  inspect?: (event: InspectionEvent) => void
  /** The environment, for the flag service's env tier (default process.env). */
  env?: Record<string, string | undefined>
}

/** An in-process publish() of invalid events: the same per-item reasons POST /events answers with. */
export class InvalidEvents extends Data.TaggedError('InvalidEvents')<{ readonly message: string; readonly details: unknown }> {
  static of(details: unknown): InvalidEvents {
    return new InvalidEvents({ details, message: `invalid events: ${JSON.stringify(details)}` })
  }
}

/**
 * The composition root. The supervisor owns the lifecycle: its `starting` state opens the runtime
 * (services in order), its shutdown closes them (in reverse); every actor of every machine is
 * provided with one call into a service (src/actors.ts). This class only holds the two together.
 */
export class Relay {
  readonly metrics: Metrics = createMetrics()
  readonly actor: Actor<typeof supervisorMachine>
  readonly realtimeOn: boolean
  private runtime?: Runtime
  private readonly lifecycle: Lifecycle
  private readonly rolloutInput: RolloutInput

  constructor(private readonly options: RelayOptions) {
    const { config, logger } = options
    this.realtimeOn = realtimeOn(config)
    this.lifecycle = new Lifecycle(logger)
    this.rolloutInput = { stages: config.rollout.stages, soakMs: config.rollout.soakMs, gates: config.rollout.gates }
    const machine = relaySupervisor({
      open: () => this.open(),
      runtime: () => this.rt,
      close: () => this.close(),
      health: () => reportHealth({ intervalMs: config.healthIntervalMs, runtime: this.rt, metrics: this.metrics, logger, machineStates: () => this.machineStates(), publish: (items) => this.publish(items) }),
    })
    this.actor = createActor(machine, { systemId: ids.supervisor, input: supervisorInput(config, this.rolloutInput), inspect: machineObserver({ logger, metrics: this.metrics, extra: options.inspect }) })
    this.metrics.hooks.beforeCollect = () => collectGauges(this.metrics, this.runtime, (d) => this.dependencyHealthy(d))
  }

  private get rt(): Runtime {
    if (!this.runtime) throw new Error('the relay runtime is used before start-up opened it')
    return this.runtime
  }

  private async open(): Promise<void> {
    const { config, logger } = this.options
    const system = this.actor.system
    const view = { readiness: () => this.readiness(), machineStates: () => this.machineStates(), realtimeHealthy: () => realtimeHealthOf(this.snapshot) === 'healthy' }
    this.runtime = await openRuntime({ config, logger, metrics: this.metrics, env: this.options.env ?? process.env, system, view, lifecycle: this.lifecycle, rolloutInput: this.rolloutInput })
  }

  private async close(): Promise<void> {
    const failed = await this.lifecycle.closeAll()
    const rt = this.runtime
    const dlq = rt?.dlq.stats()
    this.options.logger.info({ releasedSeq: rt?.release.releasedSeq ?? 0, unstored: rt?.storeOutbox.size ?? 0, dlqDepth: dlq?.depth ?? 0, dlqEvents: dlq?.events ?? 0, failedToClose: failed }, 'relay closed')
  }

  /** Starts the supervisor; resolves once it is running (or rejects with the start-up error). */
  async start(): Promise<void> {
    this.actor.start()
    const s = await this.settled((snap) => snap.matches('running'))
    if (!s.matches('running')) throw new Error((s.output as { error?: string } | undefined)?.error ?? `supervisor stopped during start-up in ${JSON.stringify(s.value)}`)
    // Persisting the rollout is I/O on its snapshots, not a decision: the machine decides.
    const rollout = this.actor.system.get(ids.rollout) as RolloutActor | undefined
    if (rollout) this.rt.migration?.persist(rollout)
  }

  /** Sends `shutdown` and resolves with the exit code once the supervisor is done. */
  shutdown(): Promise<number> {
    this.actor.send({ type: 'shutdown' })
    return this.done()
  }

  async done(): Promise<number> {
    const s = await this.settled(() => false)
    if (s.status === 'error') this.options.logger.fatal({ err: String((s as { error?: unknown }).error) }, 'supervisor crashed')
    return s.status === 'done' ? ((s.output as { exitCode?: number } | undefined)?.exitCode ?? 1) : 1
  }

  get port(): number {
    return this.runtime?.port ?? 0
  }

  get bus(): Bus {
    return this.rt.bus
  }

  get hub(): Hub {
    return this.rt.hub
  }

  /** In-process publish(): the same validation and durability as POST /events. */
  async publish(items: readonly unknown[]): Promise<StoredEvent[]> {
    const parsed = validateEvents(items)
    if (!parsed.ok) throw InvalidEvents.of(parsed.details)
    const stored = await this.rt.ingest.accept(parsed.events)
    this.metrics.eventsAccepted.inc(stored.length)
    return stored
  }

  readiness(): { ready: boolean; state: unknown } {
    const s = this.snapshot
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

  private get snapshot(): SupervisorSnapshot {
    return this.actor.getSnapshot()
  }

  private dependencyHealthy(dependency: 'store' | 'realtime'): boolean | undefined {
    const s = this.snapshot
    if (!s.matches('running')) return undefined
    if (dependency === 'store') return s.matches({ running: { store: 'healthy' } })
    const health = realtimeHealthOf(s)
    return health === 'disabled' ? undefined : health === 'healthy'
  }

  /** The first snapshot for which `until` holds, or the supervisor finishing (done or error). */
  private settled(until: (s: SupervisorSnapshot) => boolean): Promise<SupervisorSnapshot> {
    return new Promise((resolve) => {
      const check = (): boolean => {
        const s = this.snapshot
        if (until(s) || s.status === 'done' || s.status === 'error') {
          resolve(s)
          return true
        }
        return false
      }
      if (check()) return
      const sub = this.actor.subscribe({ next: () => check() && sub.unsubscribe(), complete: () => check(), error: () => check() })
    })
  }
}
