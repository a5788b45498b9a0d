import { createClient, type RealtimeClientOptions } from '@supabase/supabase-js'
import WebSocket from 'ws'
import { jitteredBackoffMs } from '../../machines/backoff.js'
import type { Logger } from '../observability/logger.js'
import type { StoredEvent } from '../types.js'
import { bounded } from '../delivery/bounded.js'

/**
 * The validator's shadow subscribers: real clients of each delivery path, as a dashboard would be,
 * that hand every event they receive to the validator (arrived()) with its arrival time.
 */

export interface Shadow {
  close(): Promise<void>
}

export type OnEvents = (events: StoredEvent[], at: number) => void

export interface RealtimeShadowOptions {
  /** SUPABASE_URL */
  url: string
  /** Server side: the service-role key is fine here (needed for private channels); never logged. */
  key: string
  /** REALTIME_CHANNEL */
  channel: string
  privateChannel: boolean
  /** Broadcast event of the batches; default 'monitoring_events'. */
  event?: string
  onEvents: OnEvents
  logger: Logger
  /** Arrival clock; the validator's (default Date.now). */
  now?: () => number
  /** Rejects when not SUBSCRIBED within this (realtime-js retries meanwhile); default 15,000 ms. */
  joinTimeoutMs?: number
  /** Bound on close(); default 3,000 ms. */
  closeTimeoutMs?: number
}

/**
 * A supabase-js client subscribed to the relay's own channel (broadcast self off: it is another
 * client than the relay's). Each `{first_seq,last_seq,events}` broadcast goes to onEvents. Resolves
 * once SUBSCRIBED; supabase-js rejoins by itself after a drop, and what was broadcast meanwhile is
 * lost on Realtime, as for any dashboard: the validator counts it missing.
 */
export async function realtimeShadow(opts: RealtimeShadowOptions): Promise<Shadow> {
  const now = opts.now ?? Date.now
  const scrub = (text: string): string => text.split(opts.key).join('[redacted]').split(encodeURIComponent(opts.key)).join('[redacted]')
  const log = opts.logger.child({ shadow: 'realtime', channel: opts.channel })
  const client = createClient(opts.url, opts.key, {
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
    realtime: { transport: WebSocket as unknown as NonNullable<RealtimeClientOptions['transport']> },
  })
  const channel = client.channel(opts.channel, { config: { broadcast: { ack: false, self: false }, private: opts.privateChannel } })
  channel.on('broadcast', { event: opts.event ?? 'monitoring_events' }, (message: { payload?: unknown }) => {
    const at = now()
    const events = eventsOf(message.payload)
    if (events) opts.onEvents(events, at)
    else log.warn('broadcast without an events list ignored')
  })

  let closing: Promise<void> | null = null
  const close = (): Promise<void> =>
    (closing ??= bounded(client.removeAllChannels(), opts.closeTimeoutMs ?? 3_000).then(async (left) => {
      if (left === 'bounded') await bounded(client.realtime.disconnect(), 1_000)
    }))

  let joined = false
  const joinTimeoutMs = opts.joinTimeoutMs ?? 15_000
  await new Promise<void>((resolve, reject) => {
    let lastProblem = 'no answer'
    const timer = setTimeout(() => {
      void close()
      reject(new Error(`Realtime shadow: channel ${opts.channel} not joined within ${joinTimeoutMs} ms (${lastProblem})`))
    }, joinTimeoutMs)
    channel.subscribe((status, err) => {
      if (status === 'SUBSCRIBED') {
        if (!joined) {
          joined = true
          clearTimeout(timer)
          log.info('Realtime shadow subscribed')
          resolve()
        } else log.info('Realtime shadow rejoined')
        return
      }
      lastProblem = `${status}${err?.message ? `: ${scrub(err.message)}` : ''}`
      if (closing) return
      log.warn({ status, reason: err?.message ? scrub(err.message) : undefined }, 'Realtime shadow not joined; events broadcast meanwhile count as missing')
    })
  })
  return { close }
}

export interface WebsocketShadowOptions {
  /** ws://127.0.0.1:<port>/ws */
  url: string
  onEvents: OnEvents
  logger: Logger
  /** Arrival clock; the validator's (default Date.now). */
  now?: () => number
  /** Reconnect delays: base × 2^attempt, capped, jittered in [ceiling / 2, ceiling) (machines/backoff.ts); defaults 100 ms and 5,000 ms. */
  reconnectBaseMs?: number
  reconnectMaxMs?: number
  /** The first connection must be up (hello received) within this; default 10,000 ms. */
  connectTimeoutMs?: number
}

interface Frame {
  type?: unknown
  event?: unknown
  events?: unknown
  head_seq?: unknown
}

/**
 * A real ws client of the relay's own /ws (the calibration path). Resolves once the hub greeted it
 * (hello), so every batch published afterwards reaches it. When the socket drops it reconnects
 * with ?since=<highest seq seen> (or the hello's head_seq before any event), so the hub replays
 * what it missed, as a resuming dashboard does; the replay arrives late or in time per the deadline.
 */
export async function websocketShadow(opts: WebsocketShadowOptions): Promise<Shadow> {
  const now = opts.now ?? Date.now
  const log = opts.logger.child({ shadow: 'websocket' })
  const reconnect = { baseMs: opts.reconnectBaseMs ?? 100, capMs: opts.reconnectMaxMs ?? 5_000 }
  let cursor: number | null = null
  let ws: WebSocket | null = null
  let attempt = 0
  let retry: NodeJS.Timeout | null = null
  let closing = false
  let greeted = false
  let firstOutcome: ((error?: Error) => void) | null = null

  const onMessage = (data: WebSocket.RawData): void => {
    const at = now()
    let frame: Frame
    try {
      frame = JSON.parse(String(data)) as Frame
    } catch {
      log.warn('unparseable /ws frame ignored')
      return
    }
    if (frame.type === 'hello') {
      if (cursor === null && typeof frame.head_seq === 'number') cursor = frame.head_seq
      if (attempt > 0) log.info({ since: cursor, attempts: attempt }, '/ws shadow reconnected')
      attempt = 0
      greeted = true
      firstOutcome?.()
      return
    }
    const events = frame.type === 'event' ? [frame.event] : frame.type === 'events' && Array.isArray(frame.events) ? frame.events : null
    if (!events) return // control frames
    const received = events.filter(isEventLike)
    for (const e of received) if (typeof e.seq === 'number' && (cursor === null || e.seq > cursor)) cursor = e.seq
    if (received.length) opts.onEvents(received, at)
  }

  const connect = (): void => {
    const url = new URL(opts.url)
    if (cursor !== null) url.searchParams.set('since', String(cursor))
    const socket = new WebSocket(url)
    ws = socket
    socket.on('message', onMessage)
    socket.on('error', (err) => log.debug({ err: err.message }, '/ws shadow socket error'))
    socket.on('close', (code) => {
      if (ws !== socket || closing) return
      ws = null
      if (!greeted) return firstOutcome?.(new Error(`/ws shadow could not connect to ${opts.url} (close ${code})`))
      const delay = jitteredBackoffMs(reconnect, attempt, Math.random, 0.5)
      attempt++
      log.warn({ code, since: cursor, retryInMs: Math.round(delay) }, '/ws shadow disconnected; reconnecting')
      retry = setTimeout(() => {
        retry = null
        if (!closing) connect()
      }, delay)
      retry.unref()
    })
  }

  const close = async (): Promise<void> => {
    closing = true
    if (retry) clearTimeout(retry)
    const socket = ws
    ws = null
    if (!socket || socket.readyState === WebSocket.CLOSED) return
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        socket.terminate()
        resolve()
      }, 2_000)
      socket.once('close', () => {
        clearTimeout(timer)
        resolve()
      })
      socket.close(1000, 'validator stopped')
    })
  }

  const connectTimeoutMs = opts.connectTimeoutMs ?? 10_000
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => firstOutcome?.(new Error(`/ws shadow: no hello from ${opts.url} within ${connectTimeoutMs} ms`)), connectTimeoutMs)
    firstOutcome = (error) => {
      firstOutcome = null
      clearTimeout(timer)
      if (!error) return resolve()
      void close()
      reject(error)
    }
    connect()
  })
  log.info({ url: opts.url }, '/ws shadow connected')
  return { close }
}

/** The events of a `{first_seq,last_seq,events}` broadcast; null when it has no events list. */
function eventsOf(payload: unknown): StoredEvent[] | null {
  const events = (payload as { events?: unknown } | null | undefined)?.events
  return Array.isArray(events) ? events.filter(isEventLike) : null
}

/** Objects only; the validator counts one without a known id as unexpected. */
function isEventLike(value: unknown): value is StoredEvent {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

