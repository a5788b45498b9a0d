import type { IncomingMessage, ServerResponse } from 'node:http'
import { Redacted } from 'effect'
import type { HealthReport, RolloutInput } from '../../machines/rolloutController.js'
import type { MachineSystem } from '../delivery/sink.js'
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

export interface MigrationControlDeps {
  config: RelayConfig
  logger: Logger
  metrics: Metrics
  hub: Hub
  realtimeSink: RealtimeSink
  transport: RealtimeTransport
  store: Store
  system: MachineSystem
  /** systemId of the Realtime circuit breaker (its state is a gate). */
  breakerId: string
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
  private paths: PathName[] = []

  constructor(private readonly deps: MigrationControlDeps, rolloutInput: RolloutInput) {
    this.rolloutInput = rolloutInput
  }

  /** Reads rollout_state into the controller's input so it resumes where it was (before the supervisor spawns it). */
  async restore(): Promise<void> {
    const restore = await loadRollout(this.deps.store, this.deps.logger)
    if (!restore) return
    this.rolloutInput.restore = restore
    this.percent = restore.state === 'rollingBack' ? 0 : restore.percent
    this.deps.logger.info({ state: restore.state, percent: restore.percent }, 'rollout resumed from rollout_state')
  }

  /** Every accepted batch (from the bus), once the shadows listen: the reference the validator compares with. */
  consume(batch: readonly StoredEvent[]): void {
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
      const { transport } = this.deps
      if (transport.joined) {
        transport.sendControl({ action: 'reassign', percent }).catch((err: Error) => logger.warn({ err: err.message }, 'rollback control broadcast failed; dashboards fall back on their own'))
      }
    }
  }

  /** Once the controller runs: persist each of its changes in rollout_state. */
  persist(rollout: RolloutActor): void {
    const { logger, store } = this.deps
    this.stopPersistence = persistRollout(rollout, () => store, logger)
  }

  /** What the rollout gates see now: the validator's window, the Realtime sink's error rate and breaker. */
  healthReport(): HealthReport {
    const validator = this.validator
    validator?.tick()
    const window = validator?.snapshot().window.realtime
    const breaker = this.deps.system.get(this.deps.breakerId)
    return {
      consistencyPct: window?.consistencyPct ?? null,
      errorRatePct: this.deps.realtimeSink.errorRatePct(),
      p99LatencyMs: window?.latencyMs.p99 ?? null,
      samples: window ? window.matched + window.missing + window.reordered + window.mismatched : 0,
      breakerClosed: breaker ? (breaker.getSnapshot() as { value?: unknown }).value === 'closed' : false,
      at: Date.now(),
    }
  }

  /** Consistency gauges, read at scrape time. */
  collectGauges(): void {
    const validator = this.validator
    if (!validator) return
    validator.tick()
    const snap = validator.snapshot()
    for (const path of this.paths) {
      const w = snap.window[path]?.consistencyPct
      const all = snap.sinceStart[path]?.consistencyPct
      if (w !== null && w !== undefined) this.deps.metrics.consistencyPct.labels(path, 'window').set(w)
      if (all !== null && all !== undefined) this.deps.metrics.consistencyPct.labels(path, 'since_start').set(all)
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

  /** Stops the validator, its shadows and report writer, and the persistence; every one is tried. */
  async stop(): Promise<void> {
    this.validating = false
    const closes = [this.stopPersistence?.(), this.reportWriter?.stop(), ...this.shadows.map((s) => s.close())]
    const failed = (await Promise.allSettled(closes)).filter((r) => r.status === 'rejected')
    for (const f of failed) this.deps.logger.warn({ err: String((f as PromiseRejectedResult).reason) }, 'migration control: a part failed to close')
  }

  /** Shadow subscribers on both paths feed the validator (the /ws one through `port`); a report row every interval. */
  async startValidator(port: number): Promise<void> {
    const { config, logger, metrics } = this.deps
    const paths: PathName[] = (this.paths = config.validator.calibrate ? ['realtime', 'websocket'] : ['realtime'])
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
      const url = `ws://${loopbackOr(config.host)}:${port}/ws`
      this.shadows.push(await websocketShadow({ url, onEvents: (events, at) => validator.arrived('websocket', events, at), logger }))
    }
    this.validating = true
    this.reportWriter = startReportWriter({
      intervalMs: config.validator.reportIntervalMs,
      snapshot: () => {
        validator.tick()
        return validator.snapshot()
      },
      write: async (row) => {
        await this.deps.store.query(insertReportSql, reportParams(row))
      },
      logger,
    })
    logger.info({ paths, deadlineMs: config.validator.deadlineMs }, 'consistency validator started')
  }
}

/** Where this process reaches its own server: the bind address, or loopback for a wildcard bind. */
function loopbackOr(host: string): string {
  if (host === '0.0.0.0' || host === '::' || host === '') return '127.0.0.1'
  return host.includes(':') && !host.startsWith('[') ? `[${host}]` : host
}
