import type { IncomingMessage, ServerResponse } from 'node:http'
import { Redacted } from 'effect'
import type { ActorRefFrom } from 'xstate'
import type { circuitBreakerMachine } from '../../machines/circuitBreaker.js'
import type { RolloutInput } from '../../machines/rolloutController.js'
import type { RelayConfig } from '../config.js'
import { adminAllowed, sendJson } from '../http/server.js'
import type { Hub } from '../ws/hub.js'
import type { Logger } from '../observability/logger.js'
import type { Metrics } from '../observability/metrics.js'
import type { RealtimeSink } from '../realtime/sink.js'
import { assignedToRealtime, loadRollout, persistRollout, type RolloutActor } from './rollout.js'
import type { Store } from '../store/store.js'
import type { RealtimeTransport } from '../realtime/transport.js'
import type { StoredEvent } from '../types.js'
import { ConsistencyValidator, type PathName } from './consistency.js'
import { insertReportSql, reportParams, startReportWriter } from './reports.js'
import { realtimeShadow, websocketShadow } from './shadows.js'

type Breaker = ActorRefFrom<typeof circuitBreakerMachine>

export interface MigrationControlDeps {
  config: RelayConfig
  logger: Logger
  metrics: Metrics
  hub: Hub
  realtimeSink: RealtimeSink
  transport: () => RealtimeTransport | undefined
  store: () => Store | undefined
  /** The relay's own port, for the /ws shadow. */
  port: () => number
}

/**
 * Dual mode's migration control, beside the actor system: the consistency validator and its shadow
 * subscribers, the rollout controller's inputs (health reports, persistence, restore) and outputs
 * (which dashboards are on Realtime, reassign control messages).
 */
export class MigrationControl {
  /** Percent of dashboards the rollout has moved to Realtime. */
  percent = 0
  readonly rolloutInput: RolloutInput
  validator?: ConsistencyValidator
  private validating = false
  private readonly shadows: Array<{ close(): Promise<void> }> = []
  private reportWriter?: { stop(): Promise<void> }
  private stopPersistence?: () => Promise<void>
  private readonly timers: NodeJS.Timeout[] = []

  constructor(private readonly deps: MigrationControlDeps) {
    const { rollout } = deps.config
    this.rolloutInput = { stages: rollout.stages, soakMs: rollout.soakMs, gates: rollout.gates }
  }

  /** Reads rollout_state so the controller resumes where it was (before the supervisor spawns it). */
  async restore(store: Store): Promise<void> {
    const restore = await loadRollout(store, this.deps.logger)
    if (!restore) return
    this.rolloutInput.restore = restore
    this.percent = restore.state === 'rollingBack' ? 0 : restore.percent
    this.deps.logger.info({ state: restore.state, percent: restore.percent }, 'rollout resumed from rollout_state')
  }

  /** Every accepted batch, once the shadows listen: the reference the validator compares with. */
  sent(batch: readonly StoredEvent[]): void {
    if (this.validating) this.validator?.sent(batch)
  }

  /** Whether this dashboard is on Realtime at the current percent (sticky; a rollback moves all). */
  assigned(clientId: string): boolean {
    return assignedToRealtime(clientId, this.percent)
  }

  /** The rollout moved to `percent`: tell the dashboards whose assignment changed. */
  applyPercent(percent: number, reason: string): void {
    const { hub, logger, metrics } = this.deps
    const before = this.percent
    this.percent = percent
    metrics.rolloutPercent.set(percent)
    logger.info({ from: before, to: percent, reason }, 'rollout percent applied')
    if (percent > before) {
      const moved = hub.sendControl((id) => assignedToRealtime(id, percent) && !assignedToRealtime(id, before), { action: 'reassign', percent })
      logger.info({ moved }, 'dashboards told to move to Realtime')
    } else if (percent < before) {
      const transport = this.deps.transport()
      if (transport?.joined) {
        transport.sendControl({ action: 'reassign', percent }).catch((err: Error) => logger.warn({ err: err.message }, 'rollback control broadcast failed; dashboards fall back on their own'))
      }
    }
  }

  /** Once running: feed and persist the rollout controller, and start the validator. */
  start(rollout: RolloutActor | undefined, breaker: Breaker | undefined): void {
    const { config, logger } = this.deps
    if (rollout) {
      this.stopPersistence = persistRollout(rollout, this.deps.store, logger)
      breaker?.on('breaker.opened', () => rollout.send({ type: 'breaker.opened', at: Date.now() }))
      rollout.on('rollout.changed', (e) => logger.warn({ percent: e.percent, state: e.state, reason: e.reason, manual: e.manual }, 'rollout changed'))
      rollout.on('rollout.evaluated', (e) => logger.info({ pass: e.pass, reason: e.reason, gates: e.gateResults }, 'rollout gates evaluated'))
      this.every(config.rollout.healthIntervalMs, () => rollout.send({ type: 'health.reported', ...this.healthReport(breaker), at: Date.now() }))
    }
    this.startValidator().catch((err: Error) => logger.error({ err: err.message }, 'consistency validator could not start; rollout gates will read missing data'))
  }

  /** What the rollout gates see: the validator's window, the Realtime sink's error rate and breaker. */
  healthReport(breaker: Breaker | undefined) {
    const window = this.validator?.snapshot().window.realtime
    return {
      consistencyPct: window?.consistencyPct ?? null,
      errorRatePct: this.deps.realtimeSink.errorRatePct(),
      p99LatencyMs: window?.latencyMs.p99 ?? null,
      samples: window ? window.matched + window.missing + window.reordered + window.mismatched : 0,
      breakerClosed: breaker ? breaker.getSnapshot().matches('closed') : false,
    }
  }

  /** GET /admin/consistency (admin token). */
  route() {
    const { adminToken } = this.deps.config
    return (req: IncomingMessage, res: ServerResponse, url: URL): boolean => {
      if (url.pathname !== '/admin/consistency' || req.method !== 'GET') return false
      if (!adminAllowed(req, res, adminToken)) return true
      if (!this.validator) return (sendJson(res, 409, { error: 'not_validating', message: 'the validator runs in dual mode (MONITORING_DUAL_MODE=true)' }), true)
      this.validator.tick()
      return (sendJson(res, 200, { validating: this.validating, ...this.validator.snapshot() }), true)
    }
  }

  async stop(): Promise<void> {
    for (const t of this.timers) clearInterval(t)
    this.validating = false
    await this.stopPersistence?.()
    await this.reportWriter?.stop().catch(() => {})
    for (const shadow of this.shadows) await shadow.close().catch(() => {})
  }

  /** Shadow subscribers on both paths feed the validator; a report row every interval. */
  private async startValidator(): Promise<void> {
    const { config, logger, metrics } = this.deps
    const paths: PathName[] = config.validator.calibrate ? ['realtime', 'websocket'] : ['realtime']
    const validator = (this.validator = new ConsistencyValidator({ deadlineMs: config.validator.deadlineMs, windowMs: 300_000, sampleLimit: 20, now: Date.now }, paths))
    this.shadows.push(
      await realtimeShadow({
        url: config.realtime.url!,
        key: Redacted.value(config.realtime.serviceRoleKey!),
        channel: config.realtime.channel,
        privateChannel: config.realtime.privateChannel,
        onEvents: (events, at) => validator.arrived('realtime', events, at),
        logger,
      }),
    )
    if (config.validator.calibrate) {
      const url = `ws://${loopbackOr(config.host)}:${this.deps.port()}/ws`
      this.shadows.push(await websocketShadow({ url, onEvents: (events, at) => validator.arrived('websocket', events, at), logger }))
    }
    this.validating = true
    this.every(1000, () => {
      validator.tick()
      const snap = validator.snapshot()
      for (const path of paths) {
        const w = snap.window[path]?.consistencyPct
        const all = snap.sinceStart[path]?.consistencyPct
        if (w !== null && w !== undefined) metrics.consistencyPct.labels(path, 'window').set(w)
        if (all !== null && all !== undefined) metrics.consistencyPct.labels(path, 'since_start').set(all)
      }
    })
    this.reportWriter = startReportWriter({
      intervalMs: config.validator.reportIntervalMs,
      snapshot: () => {
        validator.tick()
        return validator.snapshot()
      },
      write: async (row) => {
        const store = this.deps.store()
        if (store) await store.query(insertReportSql, reportParams(row))
      },
      logger,
    })
    logger.info({ paths, deadlineMs: config.validator.deadlineMs }, 'consistency validator started')
  }

  private every(ms: number, fn: () => void): void {
    const timer = setInterval(fn, ms)
    timer.unref()
    this.timers.push(timer)
  }
}

/** Where this process reaches its own server: the bind address, or loopback for a wildcard bind. */
function loopbackOr(host: string): string {
  if (host === '0.0.0.0' || host === '::' || host === '') return '127.0.0.1'
  return host.includes(':') && !host.startsWith('[') ? `[${host}]` : host
}
