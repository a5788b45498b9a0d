import { randomUUID } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { RealtimeConfig } from '../config.js'
import { sendJson } from './server.js'

export type DashboardTransport = 'realtime' | 'websocket'

export interface ClientConfigDeps {
  realtime: RealtimeConfig
  /** The transport for this client now (adapter mode, Realtime health, later the rollout). */
  assignment: (clientId: string) => DashboardTransport
}

const CLIENT_ID = /^[A-Za-z0-9_.:-]{1,128}$/

/**
 * GET /config?client=<id>: tells a dashboard page which transport to use and how to reach it.
 * Only public values: the Supabase URL, the anon key and the channel — never the service-role key.
 */
export function clientConfigRoute(deps: ClientConfigDeps) {
  return (req: IncomingMessage, res: ServerResponse, url: URL): boolean => {
    if (url.pathname !== '/config') return false
    if (req.method !== 'GET') {
      sendJson(res, 405, { error: 'method_not_allowed', message: 'GET /config' }, { allow: 'GET' })
      return true
    }
    const given = url.searchParams.get('client')
    if (given !== null && !CLIENT_ID.test(given)) {
      sendJson(res, 400, { error: 'invalid_client', message: 'client must be 1–128 characters of [A-Za-z0-9_.:-]' })
      return true
    }
    const client = given ?? randomUUID()
    const transport = deps.assignment(client)
    const r = deps.realtime
    sendJson(
      res,
      200,
      {
        client,
        transport,
        websocket: { path: '/ws' },
        realtime:
          r.enabled && r.url && r.anonKey
            ? { url: r.url, anon_key: r.anonKey, channel: r.channel, event: 'monitoring_events', private: r.privateChannel }
            : null,
      },
      { 'cache-control': 'no-store' },
    )
    return true
  }
}
