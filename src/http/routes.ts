import type { IncomingMessage, ServerResponse } from 'node:http'
import { realtimeOn, type RelayConfig } from '../config.js'
import type { MachineSystem } from '../delivery/sink.js'
import type { DeadLetterQueue } from '../durability/dlq.js'
import { flagAdminRoutes, type FlagService } from '../flags/index.js'
import { ids } from '../ids.js'
import type { MigrationControl } from '../migration/control.js'
import { rolloutAdminRoutes, type RolloutActor } from '../migration/rollout.js'
import type { Logger } from '../observability/logger.js'
import { adminRoutes } from './admin.js'
import { adminAllowed, sendJson } from './server.js'
import { clientConfigRoute, type DashboardTransport } from './clientConfig.js'

/** What the HTTP side reads of the running actor system. */
export interface RelayView {
  readiness(): { ready: boolean; state: unknown }
  machineStates(): Record<string, unknown>
  /** Whether the supervisor has the Realtime path healthy (not failed over). */
  realtimeHealthy(): boolean
}

export type Route = (req: IncomingMessage, res: ServerResponse, url: URL) => Promise<boolean> | boolean

export interface RelayRoutesOptions {
  config: RelayConfig
  logger: Logger
  view: RelayView
  system: MachineSystem
  dlq: DeadLetterQueue
  flags: FlagService
  migration: MigrationControl | undefined
  replayDlq: () => void
}

/** The relay's routes besides ingest, /ws and the page: /config, and the admin API (ADMIN_TOKEN). */
export function relayRoutes(o: RelayRoutesOptions): Route[] {
  const { config, logger, migration } = o
  const { adminToken } = config
  return [
    clientConfigRoute({ realtime: config.realtime, assignment: (clientId) => dashboardTransport(o, clientId) }),
    rolloutAdminRoutes({ adminToken, rollout: () => o.system.get(ids.rollout) as RolloutActor | undefined, logger }),
    migration ? migration.route() : notValidating(adminToken),
    flagAdminRoutes({ flags: o.flags, adminToken, logger }),
    adminRoutes({
      adminToken,
      machineStates: () => o.view.machineStates(),
      dlq: () => o.dlq,
      replayDlq: o.replayDlq,
      retry: (dependency) => {
        const id = dependency === 'store' ? ids.storeDependency : dependency === 'realtime' ? ids.realtimeDependency : undefined
        const actor = id ? o.system.get(id) : undefined
        actor?.send({ type: 'retry' })
        return actor !== undefined
      },
    }),
  ]
}

/**
 * Which transport a dashboard should use now (GET /config): Realtime only while it is healthy;
 * in realtime mode every dashboard, in dual mode those the rollout's percent covers.
 */
function dashboardTransport(o: RelayRoutesOptions, clientId: string): DashboardTransport {
  const r = o.config.realtime
  if (!realtimeOn(o.config) || !r.anonKey || r.mode === 'websocket') return 'websocket'
  if (!o.view.realtimeHealthy()) return 'websocket'
  if (r.mode === 'realtime') return 'realtime'
  return o.migration?.assigned(clientId) ? 'realtime' : 'websocket'
}

function notValidating(adminToken: RelayConfig['adminToken']): Route {
  return (req, res, url) => {
    if (url.pathname !== '/admin/consistency' || req.method !== 'GET') return false
    if (adminAllowed(req, res, adminToken)) sendJson(res, 409, { error: 'not_validating', message: 'the validator runs in dual mode (MONITORING_DUAL_MODE=true)' })
    return true
  }
}
