import { Data } from 'effect'
import { createClient, type RealtimeClientOptions, type SupabaseClient } from '@supabase/supabase-js'
import WebSocket from 'ws'
import type { HeartbeatStatus, RealtimeTransportOptions } from './transport.js'

/** supabase-js tried to post a broadcast over HTTP; only the joined socket may carry them. */
export class RestBroadcastRefused extends Data.TaggedError('RestBroadcastRefused')<{ readonly message: string }> {}

const REST_PATH = '/realtime/v1/api/'

/** Replaces the key, as written and URL-encoded, with [redacted]. */
export function keyScrubber(key: string): (text: string) => string {
  return (text) => text.split(key).join('[redacted]').split(encodeURIComponent(key)).join('[redacted]')
}

/**
 * The supabase-js client a RealtimeTransport broadcasts through, set up so it can neither leak the
 * key nor take a detour: no session, realtime-js's logs kept off the console and scrubbed, and
 * REST broadcasts refused (realtime-js's send() falls back to them when the channel is not joined).
 */
export function createRealtimeClient(
  opts: RealtimeTransportOptions,
  scrub: (text: string) => string,
  onHeartbeat: (status: HeartbeatStatus, latencyMs: number | undefined) => void,
): SupabaseClient {
  const { logger } = opts
  const guardedFetch = (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url
    if (url.includes(REST_PATH)) {
      logger.error({ channel: opts.channel }, 'refused a Realtime REST broadcast: messages go over the joined socket only')
      return Promise.reject(new RestBroadcastRefused({ message: 'Realtime REST broadcasts are disabled' }))
    }
    return fetch(input, init)
  }
  const libraryLog = (kind: string, msg: string): void => {
    if (kind === 'error') logger.warn({ realtimeJs: kind }, scrub(String(msg)))
    else if (logger.isLevelEnabled('trace')) logger.trace({ realtimeJs: kind }, scrub(String(msg)))
  }
  return createClient(opts.url, opts.key, {
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
    // A second guard against the REST fallback: nothing here may post broadcasts over HTTP.
    global: { fetch: guardedFetch },
    realtime: {
      transport: WebSocket as unknown as NonNullable<RealtimeClientOptions['transport']>,
      timeout: opts.ackTimeoutMs,
      ...(opts.heartbeatIntervalMs ? { heartbeatIntervalMs: opts.heartbeatIntervalMs } : {}),
      ...(opts.reconnectAfterMs ? { reconnectAfterMs: opts.reconnectAfterMs } : {}),
      heartbeatCallback: (status, latency) => onHeartbeat(status, latency),
      // Set so realtime-js never writes to the console; its data (join payloads, socket events
      // whose target URL holds the apikey) is dropped and its messages are scrubbed.
      logger: (kind, msg) => libraryLog(kind, msg),
    },
  })
}
