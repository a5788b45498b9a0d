import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Redacted } from 'effect'
import type { ActorRefFrom } from 'xstate'
import { persistedRolloutOf, type PersistedRollout, type rolloutControllerMachine, type RolloutSnapshot } from '../../machines/rolloutController.js'
import { inRollout } from './bucketing.js'
import { adminAllowed, sendJson } from '../http/server.js'
import type { Logger } from '../observability/logger.js'
import type { Store } from '../store/store.js'

/** The sticky-hashing key of the dashboard rollout: bucket = murmur3_32(`${key}:${clientId}`) mod 10,000. */
export const ROLLOUT_FLAG_KEY = 'realtime-rollout'

export type RolloutActor = ActorRefFrom<typeof rolloutControllerMachine>

const LOAD_SQL = `select state, percent, stage_index, reason, manual, history from monitoring_relay.rollout_state where id`
const SAVE_SQL = `insert into monitoring_relay.rollout_state (id, state, percent, stage_index, reason, manual, history, updated_at)
values (true, $1, $2, $3, $4, $5, $6::jsonb, now())
on conflict (id) do update set state = excluded.state, percent = excluded.percent, stage_index = excluded.stage_index,
  reason = excluded.reason, manual = excluded.manual, history = excluded.history, updated_at = excluded.updated_at`

/** Reads the persisted rollout, or undefined when none was ever saved (or the table is unreachable). */
export async function loadRollout(store: Store, logger: Logger): Promise<PersistedRollout | undefined> {
  try {
    const [row] = await store.query<{ state: string; percent: number; stage_index: number; reason: string | null; manual: boolean; history: unknown }>(LOAD_SQL)
    if (!row) return undefined
    return {
      state: row.state as PersistedRollout['state'],
      percent: Number(row.percent),
      stageIndex: Number(row.stage_index),
      ...(row.reason ? { reason: row.reason } : {}),
      manual: row.manual,
      history: (typeof row.history === 'string' ? JSON.parse(row.history) : row.history) as PersistedRollout['history'],
    }
  } catch (err) {
    logger.error({ err: (err as Error).message }, 'rollout state could not be read; the controller starts inactive')
    return undefined
  }
}

/**
 * Persists every change of the rollout (serialised, latest wins) so a restart resumes the stage.
 * Returns a stop function that waits for the last write.
 */
export function persistRollout(actor: RolloutActor, store: () => Store | undefined, logger: Logger): () => Promise<void> {
  let last = ''
  let chain = Promise.resolve()
  const sub = actor.subscribe((snapshot) => {
    const record = persistedRolloutOf(snapshot as RolloutSnapshot)
    const key = JSON.stringify(record)
    if (key === last) return
    last = key
    chain = chain.then(async () => {
      const s = store()
      if (!s) return
      try {
        await s.query(SAVE_SQL, [record.state, record.percent, record.stageIndex, record.reason ?? null, record.manual ?? false, JSON.stringify(record.history)])
      } catch (err) {
        logger.error({ err: (err as Error).message }, 'rollout state could not be saved')
      }
    })
  })
  return async () => {
    sub.unsubscribe()
    await chain
  }
}

/** Whether a dashboard is on Realtime at this percent: raising the percent never moves a client back. */
export function assignedToRealtime(clientId: string, percent: number): boolean {
  return inRollout(ROLLOUT_FLAG_KEY, clientId, percent)
}

/** The rollout's admin API: GET /admin/rollout, POST /admin/rollout/start|pause|resume|abort, PUT /admin/rollout {percent}. */
export function rolloutAdminRoutes(deps: { adminToken: Redacted.Redacted<string> | undefined; rollout: () => RolloutActor | undefined; logger: Logger }) {
  return async (req: IncomingMessage, res: ServerResponse, url: URL): Promise<boolean> => {
    if (url.pathname !== '/admin/rollout' && !url.pathname.startsWith('/admin/rollout/')) return false
    if (!adminAllowed(req, res, deps.adminToken)) return true
    const actor = deps.rollout()
    if (!actor) return (sendJson(res, 409, { error: 'rollout_unavailable', message: 'the rollout runs in dual mode (MONITORING_DUAL_MODE=true) once the relay is running' }), true)
    const at = Date.now()
    const route = `${req.method} ${url.pathname}`
    if (route === 'GET /admin/rollout') return (sendJson(res, 200, describe(actor.getSnapshot() as RolloutSnapshot)), true)
    const command = /^POST \/admin\/rollout\/(start|pause|resume|abort)$/.exec(route)?.[1]
    if (command) {
      const event = { type: `rollout.${command}` as 'rollout.start', at }
      if (!actor.getSnapshot().can(event)) {
        sendJson(res, 409, { error: 'not_allowed', message: `rollout ${command} is not possible in state ${JSON.stringify(actor.getSnapshot().value)}` })
        return true
      }
      actor.send(event)
      deps.logger.info({ command, by: `admin@${req.socket.remoteAddress}` }, 'rollout command')
      sendJson(res, 202, describe(actor.getSnapshot() as RolloutSnapshot))
      return true
    }
    if (route === 'PUT /admin/rollout') {
      const body = await readJson(req)
      const percent = (body as { percent?: unknown } | undefined)?.percent
      if (typeof percent !== 'number' || !Number.isInteger(percent) || percent < 0 || percent > 100) {
        sendJson(res, 400, { error: 'invalid_percent', message: 'body must be {"percent": <integer 0–100>}' })
        return true
      }
      actor.send({ type: 'rollout.set', percent, at })
      deps.logger.warn({ percent, by: `admin@${req.socket.remoteAddress}` }, 'rollout set manually')
      sendJson(res, 202, describe(actor.getSnapshot() as RolloutSnapshot))
      return true
    }
    sendJson(res, 404, { error: 'not_found', message: `no rollout route ${route}` })
    return true
  }
}

function describe(snapshot: RolloutSnapshot) {
  const c = snapshot.context
  return {
    state: snapshot.value,
    percent: c.percent,
    stages: c.stages,
    manual: c.manual,
    reason: c.reason ?? null,
    gates: c.gates,
    lastReport: c.latest ?? null,
    gateResults: c.gateResults ?? null,
    history: c.history,
  }
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of req) {
    size += (chunk as Buffer).length
    if (size > 4096) return undefined
    chunks.push(chunk as Buffer)
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'))
  } catch {
    return undefined
  }
}
