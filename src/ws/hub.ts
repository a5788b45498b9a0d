import type { WebSocket } from 'ws'
import type { Logger } from '../observability/logger.js'
import type { Metrics } from '../observability/metrics.js'
import { RecentEvents } from './recentEvents.js'
import type { StoredEvent } from '../types.js'

export interface HubOptions {
  /** Per-client bound on bytes queued for sending; past it the client is closed with 1013. */
  maxBufferBytes: number
  ringSize: number
  /** Absolute bound on the recent buffer, however far behind the store is. */
  ringHardMax?: number
  /** Stored events with seq > afterSeq, ascending (the store's readSince). */
  readSince: (afterSeq: number, limit: number) => Promise<StoredEvent[]>
  metrics: Metrics
  logger: Logger
  /** Interval of the WebSocket ping that detects dead dashboards. */
  pingIntervalMs?: number
}

/** Close code for "try again later": the client fell too far behind. */
export const CLOSE_TRY_AGAIN_LATER = 1013
const CATCH_UP_PAGE = 1000
const FRAME_EVENTS = 500
/** Live batches a resuming client may have waiting while it catches up, in events. */
const MAX_PENDING_WHILE_CATCHING_UP = 200_000

interface Client {
  ws: WebSocket
  id: number
  /** The dashboard's stable id (?client=), for transport assignment. */
  clientId: string | undefined
  live: boolean
  /** Highest seq sent to this client. */
  cursor: number
  pending: Array<{ batch: readonly StoredEvent[]; frame: string }>
  pendingEvents: number
  alive: boolean
  closed: boolean
}

/**
 * WebSocket fan-out to dashboards. Each live batch is serialised once and written to every live
 * client; a client whose send queue passes the bound is closed (1013) instead of slowing the
 * others. A client with ?since=N first receives the stored events after N, then the recent
 * buffer, then live batches held while it caught up — filtered by seq, so no gap and no duplicate.
 */
export class Hub {
  private readonly clients = new Set<Client>()
  private readonly recent: RecentEvents
  private nextId = 1
  private readonly pingTimer: NodeJS.Timeout
  private readonly delivered

  constructor(private readonly options: HubOptions) {
    this.recent = new RecentEvents(options.ringSize, options.ringHardMax)
    this.delivered = options.metrics.eventsDelivered.labels('websocket')
    this.pingTimer = setInterval(() => this.ping(), options.pingIntervalMs ?? 30_000)
    this.pingTimer.unref()
  }

  get clientCount(): number {
    return this.clients.size
  }

  /** Headroom of the fan-out for /metrics and health events. */
  stats() {
    let catchingUp = 0
    for (const c of this.clients) if (!c.live) catchingUp++
    return { clients: this.clients.size, catchingUp, recent: this.recent.size }
  }

  /** A batch of newly accepted events, in seq order (from the bus). */
  /** A durable batch from the bus. */
  consume(batch: readonly StoredEvent[]): void {
    this.publish(batch)
  }

  publish(batch: readonly StoredEvent[]): void {
    if (batch.length === 0) return
    this.recent.append(batch)
    if (this.clients.size === 0) return
    const frame = frameOf(batch)
    for (const client of this.clients) {
      if (client.live) this.send(client, batch, frame)
      else {
        client.pending.push({ batch, frame })
        client.pendingEvents += batch.length
        if (client.pendingEvents > MAX_PENDING_WHILE_CATCHING_UP) this.drop(client, 'catchUpOverflow')
      }
    }
  }

  /** Sends a control frame to every live client whose dashboard id matches; returns how many. */
  sendControl(matches: (clientId: string) => boolean, frame: Record<string, unknown>): number {
    const text = JSON.stringify({ type: 'control', ...frame })
    let sent = 0
    for (const client of this.clients) {
      if (client.closed || client.clientId === undefined || !matches(client.clientId)) continue
      client.ws.send(text)
      sent++
    }
    return sent
  }

  markCommitted(seq: number): void {
    this.recent.markCommitted(seq)
  }

  attach(ws: WebSocket, since: number | undefined, clientId?: string): void {
    const client: Client = { ws, id: this.nextId++, clientId, live: since === undefined, cursor: since ?? 0, pending: [], pendingEvents: 0, alive: true, closed: false }
    this.clients.add(client)
    this.options.metrics.wsClients.set(this.clients.size)
    ws.on('pong', () => (client.alive = true))
    ws.on('error', (err) => this.options.logger.debug({ client: client.id, err: err.message }, 'dashboard socket error'))
    ws.on('close', () => this.forget(client))
    ws.on('message', () => {}) // dashboards have nothing to say yet; reading keeps the socket flowing
    ws.send(JSON.stringify({ type: 'hello', since: since ?? null, head_seq: this.recent.newestSeq ?? null }))
    if (since !== undefined) {
      this.catchUp(client).catch((err: Error) => {
        this.options.logger.warn({ client: client.id, err: err.message }, 'dashboard catch-up failed')
        if (!client.closed) client.ws.close(1011, 'catch-up failed')
        this.forget(client)
      })
    }
  }

  /** Closes every dashboard with `code` and waits (bounded) for the sockets to go. */
  async closeAll(code = 1001, reason = 'relay shutting down', timeoutMs = 2000): Promise<void> {
    clearInterval(this.pingTimer)
    const closing = [...this.clients].map(
      (c) =>
        new Promise<void>((resolve) => {
          if (c.ws.readyState === c.ws.CLOSED) return resolve()
          const timer = setTimeout(() => {
            c.ws.terminate()
            resolve()
          }, timeoutMs)
          c.ws.once('close', () => {
            clearTimeout(timer)
            resolve()
          })
          c.ws.close(code, reason)
        }),
    )
    await Promise.all(closing)
  }

  private async catchUp(client: Client): Promise<void> {
    let storeProgressed = true
    for (;;) {
      // Stored rows first, page by page, pacing on the client's send queue.
      for (;;) {
        const rows = await this.options.readSince(client.cursor, CATCH_UP_PAGE)
        if (client.closed) return
        if (rows.length) storeProgressed = true
        for (let i = 0; i < rows.length; i += FRAME_EVENTS) {
          const chunk = rows.slice(i, i + FRAME_EVENTS)
          await this.sendPaced(client, chunk)
          if (client.closed) return
        }
        if (rows.length < CATCH_UP_PAGE) break
      }
      // Synchronously from here: recent buffer, then held live batches, then live.
      const oldest = this.recent.oldestSeq
      if (oldest !== undefined && oldest > client.cursor + 1 && storeProgressed) {
        // Events between the last stored row and the buffer were committed and evicted meanwhile.
        storeProgressed = false
        continue
      }
      const recent = this.recent.since(client.cursor)
      for (let i = 0; i < recent.length; i += FRAME_EVENTS) this.send(client, recent.slice(i, i + FRAME_EVENTS))
      for (const { batch, frame } of client.pending) {
        const first = batch[0]!.seq
        if (first > client.cursor) this.send(client, batch, frame)
        else {
          const rest = batch.filter((e) => e.seq > client.cursor)
          if (rest.length) this.send(client, rest)
        }
      }
      client.pending = []
      client.pendingEvents = 0
      client.live = true
      return
    }
  }

  private async sendPaced(client: Client, events: readonly StoredEvent[]): Promise<void> {
    if (client.ws.bufferedAmount > this.options.maxBufferBytes / 2) {
      await new Promise<void>((resolve) => client.ws.send(frameOf(events), () => resolve()))
      client.cursor = events[events.length - 1]!.seq
      this.delivered.inc(events.length)
      return
    }
    this.send(client, events)
  }

  private send(client: Client, events: readonly StoredEvent[], frame?: string): void {
    if (client.closed) return
    if (client.ws.bufferedAmount > this.options.maxBufferBytes) {
      this.drop(client, 'slow')
      return
    }
    client.ws.send(frame ?? frameOf(events))
    client.cursor = events[events.length - 1]!.seq
    this.delivered.inc(events.length)
  }

  private drop(client: Client, reason: 'slow' | 'catchUpOverflow' | 'unresponsive'): void {
    if (client.closed) return
    this.options.metrics.wsClientsDropped.labels(reason).inc()
    this.options.logger.warn({ client: client.id, reason, buffered: client.ws.bufferedAmount }, 'closing dashboard client')
    const ws = client.ws
    this.forget(client)
    if (reason === 'unresponsive') return ws.terminate()
    ws.close(CLOSE_TRY_AGAIN_LATER, reason === 'slow' ? 'send queue full' : 'too far behind')
    // A client that does not read will not read the close frame either.
    setTimeout(() => ws.terminate(), 1000).unref()
  }

  private forget(client: Client): void {
    if (client.closed) return
    client.closed = true
    client.pending = []
    this.clients.delete(client)
    this.options.metrics.wsClients.set(this.clients.size)
  }

  private ping(): void {
    for (const client of this.clients) {
      if (!client.alive) {
        this.drop(client, 'unresponsive')
        continue
      }
      client.alive = false
      client.ws.ping()
    }
  }
}

/** One frame for a batch: `event` for a single event, `events` for a burst. */
export function frameOf(events: readonly StoredEvent[]): string {
  if (events.length === 1) {
    const e = events[0]!
    return `{"type":"event","seq":${e.seq},"event":${JSON.stringify(e)}}`
  }
  return `{"type":"events","events":${JSON.stringify(events)}}`
}
