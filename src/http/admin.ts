import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Redacted } from 'effect'
import { adminAllowed, sendJson } from './server.js'

export interface AdminDeps {
  adminToken: Redacted.Redacted<string> | undefined
  /** The current state of every machine in the system, by systemId. */
  machineStates: () => Record<string, unknown>
  dlq: () => {
    stats(): unknown
    list(opts: { sink?: string; parked?: boolean; afterId?: number; limit?: number }): unknown[]
    requeue(filter?: { sink?: string; id?: number }): Promise<number>
  } | undefined
  /** Asks every DLQ replayer to replay now. */
  replayDlq: () => void
  /** Tells a dependency ('store', 'realtime') to reconnect now; false when the relay has no such dependency. */
  retry: (dependency: string) => boolean
}

/**
 * The admin API (Authorization: Bearer ADMIN_TOKEN). Disabled — 404 — when no token is set, so
 * an unconfigured relay exposes nothing; 401 for a missing or wrong token.
 */
export function adminRoutes(deps: AdminDeps) {
  return async (req: IncomingMessage, res: ServerResponse, url: URL): Promise<boolean> => {
    if (!url.pathname.startsWith('/admin/') && url.pathname !== '/admin') return false
    if (!adminAllowed(req, res, deps.adminToken)) return true
    const route = `${req.method} ${url.pathname}`
    switch (route) {
      case 'GET /admin/state':
        sendJson(res, 200, { machines: deps.machineStates() })
        return true
      case 'GET /admin/dlq': {
        const dlq = deps.dlq()
        if (!dlq) return unavailable(res)
        const limit = boundedInt(url.searchParams.get('limit'), 1, 500, 50)
        const afterId = boundedInt(url.searchParams.get('after'), 0, Number.MAX_SAFE_INTEGER, 0)
        const parkedParam = url.searchParams.get('parked')
        if (limit === undefined || afterId === undefined || (parkedParam !== null && !['true', 'false'].includes(parkedParam))) {
          sendJson(res, 400, { error: 'invalid_query', message: 'limit is 1–500, after a non-negative entry id, parked true or false' })
          return true
        }
        const entries = dlq.list({ sink: url.searchParams.get('sink') ?? undefined, parked: parkedParam === null ? undefined : parkedParam === 'true', afterId, limit })
        sendJson(res, 200, { ...(dlq.stats() as object), entries })
        return true
      }
      case 'POST /admin/dlq/replay':
        deps.replayDlq()
        sendJson(res, 202, { replaying: true, stats: deps.dlq()?.stats() ?? null })
        return true
      case 'POST /admin/dlq/requeue': {
        const dlq = deps.dlq()
        if (!dlq) return unavailable(res)
        const id = url.searchParams.get('id')
        const parsedId = id === null ? undefined : boundedInt(id, 1, Number.MAX_SAFE_INTEGER, 0)
        if (id !== null && parsedId === undefined) {
          sendJson(res, 400, { error: 'invalid_query', message: 'id must be a positive entry id' })
          return true
        }
        const requeued = await dlq.requeue({ sink: url.searchParams.get('sink') ?? undefined, id: parsedId })
        deps.replayDlq()
        sendJson(res, 200, { requeued })
        return true
      }
      case 'POST /admin/retry': {
        const dependency = url.searchParams.get('dependency') ?? ''
        if (!deps.retry(dependency)) {
          sendJson(res, 404, { error: 'no_such_dependency', message: 'dependency must be store, or realtime when Realtime is on' })
          return true
        }
        sendJson(res, 202, { retrying: dependency })
        return true
      }
      default:
        sendJson(res, 404, { error: 'not_found', message: `no admin route ${route}` })
        return true
    }
  }
}

function unavailable(res: ServerResponse): true {
  sendJson(res, 503, { error: 'unavailable', message: 'the dead-letter queue is not open yet' })
  return true
}

function boundedInt(raw: string | null, min: number, max: number, fallback: number): number | undefined {
  if (raw === null) return fallback
  if (!/^\d{1,16}$/.test(raw)) return undefined
  const n = Number(raw)
  return n >= min && n <= max ? n : undefined
}
