import { setMaxListeners } from 'node:events'
import { Data } from 'effect'
import type { RealtimeChannel, RealtimeClientOptions, SupabaseClient } from '@supabase/supabase-js'
import type { Logger } from 'pino'
import type { StoredEvent } from '../types.js'
import { createRealtimeClient, keyScrubber } from './client.js'
import { buildPayload, fitPayload, type FittedPayload } from './payload.js'
import { TokenBucket } from './tokenBucket.js'
import { bounded } from '../delivery/bounded.js'

export type RealtimeErrorCode = 'channelError' | 'timedOut' | 'closed' | 'ackTimeout' | 'sendError' | 'rateLimited' | 'payloadTooLarge' | 'notJoined'

/** A failed Realtime call: `code` says which way it failed. Its message never carries the key. */
export class RealtimeError extends Data.TaggedError('RealtimeError')<{ readonly code: RealtimeErrorCode; readonly message: string }> {
  static of(code: RealtimeErrorCode, message: string): RealtimeError {
    return new RealtimeError({ code, message })
  }
}

export type ChannelStatus = 'SUBSCRIBED' | 'CHANNEL_ERROR' | 'TIMED_OUT' | 'CLOSED'
export type HeartbeatStatus = Parameters<NonNullable<RealtimeClientOptions['heartbeatCallback']>>[0]

export interface RealtimeTransportOptions {
  /** SUPABASE_URL */
  url: string
  /** The service-role key: server side only, never logged, never in an error message. */
  key: string
  /** REALTIME_CHANNEL, e.g. 'monitoring' (topic realtime:monitoring) */
  channel: string
  /** REALTIME_PRIVATE */
  privateChannel: boolean
  /** Broadcast event of the batches; default 'monitoring_events'. */
  event?: string
  /** No ack within it = a failed call. */
  ackTimeoutMs: number
  /** REALTIME_MAX_PAYLOAD_BYTES: the largest broadcast payload (UTF-8 JSON bytes). */
  maxPayloadBytes: number
  /** REALTIME_MAX_MESSAGES_PER_SECOND: no 1 s window at the server sees more broadcasts than this. */
  maxMessagesPerSecond: number
  /** Default 25,000 ms (realtime-js). A heartbeat unanswered for this long drops the socket. */
  heartbeatIntervalMs?: number
  /** How long a join may take before TIMED_OUT; default 10,000 ms (realtime-js). */
  joinTimeoutMs?: number
  /** Socket reconnect delays by attempt; default realtime-js's 1 s, 2 s, 5 s, then 10 s. */
  reconnectAfterMs?: (tries: number) => number
  /** Delivery delay spread the pacing absorbs (see TokenBucket.forWindow); default 50 ms. */
  pacingJitterMs?: number
  /** Bound on close(); default 3,000 ms. */
  closeTimeoutMs?: number
  logger: Logger
}

export interface RealtimeTransportStats {
  /** Broadcasts put on the socket (batches and control messages), their payload bytes and events. */
  messagesSent: number
  eventsSent: number
  bytesSent: number
  /** The largest payload put on the socket. */
  maxPayloadBytes: number
  acks: number
  /** Calls to send()/sendControl() that rejected, whatever the code. */
  failures: number
  tokenWaitMs: number
}

interface Pending {
  fail: (error: RealtimeError) => void
}

interface JoinWaiter {
  channel: RealtimeChannel
  settle: (error?: Error) => void
}

const DEFAULT_EVENT = 'monitoring_events'
const CONTROL_EVENT = 'control'
/** realtime-js retries a socket or a refused join at most this far apart (its default schedules). */
const LIBRARY_RETRY_MAX_MS = 10_000

/**
 * Broadcasts batches of events on one Supabase Realtime channel through supabase-js, with
 * broadcast acks on, paced under the messages/s limit and sized under the payload limit.
 *
 * supabase-js reconnects the socket and rejoins the channel by itself; this class observes that
 * (onStatus) and never opens a second channel while one is rejoining. Messages go over the joined
 * socket only: realtime-js's send() posts to the REST endpoint when the channel is not joined,
 * which would turn an ack into an HTTP 202, so pushes go straight to the channel's socket push
 * and a channel that is not joined is a `notJoined` failure.
 */
export class RealtimeTransport {
  private readonly client: SupabaseClient
  private readonly scrub: (text: string) => string
  private readonly bucket: TokenBucket
  private readonly event: string
  private readonly joinTimeoutMs: number
  private readonly closeTimeoutMs: number
  private channel: RealtimeChannel | null = null
  private readonly statusListeners = new Set<(status: ChannelStatus, error?: Error) => void>()
  private readonly heartbeatListeners = new Set<(status: HeartbeatStatus, latencyMs?: number) => void>()
  private readonly joinWaiters = new Set<JoinWaiter>()
  private readonly pending = new Set<Pending>()
  private readonly closeController = new AbortController()
  private closing: Promise<void> | null = null
  /** The last system error message of the current channel (a shutdown reason, e.g. the rate limit). */
  private systemError: string | null = null
  private readonly counts: RealtimeTransportStats = { messagesSent: 0, eventsSent: 0, bytesSent: 0, maxPayloadBytes: 0, acks: 0, failures: 0, tokenWaitMs: 0 }

  constructor(private readonly opts: RealtimeTransportOptions) {
    for (const [name, value] of Object.entries({ ackTimeoutMs: opts.ackTimeoutMs, maxPayloadBytes: opts.maxPayloadBytes, maxMessagesPerSecond: opts.maxMessagesPerSecond })) {
      if (!(value > 0) || !Number.isFinite(value)) throw new RangeError(`${name} must be a positive number, got ${value}`)
    }
    if (!opts.key) throw new RangeError('key is required')
    this.event = opts.event ?? DEFAULT_EVENT
    this.joinTimeoutMs = opts.joinTimeoutMs ?? 10_000
    this.closeTimeoutMs = opts.closeTimeoutMs ?? 3_000
    // Every send waiting for a token listens on it.
    setMaxListeners(0, this.closeController.signal)
    this.bucket = TokenBucket.forWindow(opts.maxMessagesPerSecond, { jitterMs: opts.pacingJitterMs ?? 50 })
    this.scrub = keyScrubber(opts.key)
    this.client = createRealtimeClient(opts, this.scrub, (status, latency) => this.onHeartbeatStatus(status, latency))
  }

  get joined(): boolean {
    return this.closing === null && this.channel !== null && this.channel.state === 'joined' && this.client.realtime.isConnected()
  }

  /**
   * Joins the channel (broadcast ack on, self off, private per option). Resolves on SUBSCRIBED;
   * rejects with RealtimeError channelError | timedOut | closed, or the signal's reason. Joined
   * already: resolves at once. While supabase-js is rejoining by itself (after a socket drop or a
   * refused join) it waits for the outcome of that rejoin, at most joinTimeoutMs + 10 s (realtime-js
   * retries 1, 2, 5, then every 10 s).
   */
  async connect(signal?: AbortSignal): Promise<void> {
    if (this.closing) throw RealtimeError.of('closed', 'the Realtime transport is closed')
    signal?.throwIfAborted()
    if (this.joined) return
    const current = this.channel
    if (current && current.state !== 'closed' && current.state !== 'leaving') {
      // supabase-js is rejoining on its own schedule: wait for it, never open a second channel.
      return this.waitForJoin(current, this.joinTimeoutMs + LIBRARY_RETRY_MAX_MS, signal)
    }
    // realtime-js answers a fresh join itself (TIMED_OUT after joinTimeoutMs); the margin is a backstop.
    return this.waitForJoin(this.openChannel(), this.joinTimeoutMs + 250, signal)
  }

  /**
   * Every status of the channel from the first connect() on: SUBSCRIBED on each (re)join,
   * CHANNEL_ERROR when a join is refused or the socket drops (realtime-js turns a socket close,
   * error or heartbeat timeout into a channel error, then reconnects and rejoins by itself),
   * TIMED_OUT when a join is not answered, CLOSED when the server closed the channel (no rejoin
   * follows; connect() opens a new one) or close() left it. Returns the unsubscribe.
   */
  onStatus(listener: (status: ChannelStatus, error?: Error) => void): () => void {
    this.statusListeners.add(listener)
    return () => this.statusListeners.delete(listener)
  }

  /** realtime-js's heartbeat reports: sent, ok (with the round trip), error, timeout. */
  onHeartbeat(listener: (status: HeartbeatStatus, latencyMs?: number) => void): () => void {
    this.heartbeatListeners.add(listener)
    return () => this.heartbeatListeners.delete(listener)
  }

  /** {@link fitPayload} under this transport's maxPayloadBytes. */
  fit(events: readonly StoredEvent[]): FittedPayload {
    return fitPayload(events, this.opts.maxPayloadBytes)
  }

  /**
   * One broadcast carrying the batch, after a token from the messages/s bucket. Resolves once the
   * server acknowledged it. Rejects RealtimeError: notJoined (nothing sent), payloadTooLarge (over
   * maxPayloadBytes here, or refused by the server), ackTimeout, rateLimited, sendError, or
   * channelError | closed when the channel is lost before the ack (an ack cannot arrive any more).
   */
  async send(batch: readonly StoredEvent[]): Promise<{ payloadBytes: number }> {
    const payload = buildPayload(batch)
    const payloadBytes = await this.broadcast(this.event, payload)
    this.counts.eventsSent += batch.length
    return { payloadBytes }
  }

  /** A control message (event 'control') on the same channel, with the same pacing and ack rules. */
  async sendControl(payload: Record<string, unknown>): Promise<void> {
    await this.broadcast(CONTROL_EVENT, payload)
  }

  stats(): RealtimeTransportStats {
    return { ...this.counts }
  }

  /** Leaves the channel and disconnects, within closeTimeoutMs; pending calls reject `closed`. */
  close(): Promise<void> {
    this.closing ??= this.shutdown()
    return this.closing
  }

  // --- channel ---------------------------------------------------------------------------------

  private openChannel(): RealtimeChannel {
    const channel = this.client.channel(this.opts.channel, {
      config: { broadcast: { ack: true, self: false }, private: this.opts.privateChannel },
    })
    this.channel = channel
    this.systemError = null
    channel.on('system', {}, (payload: { status?: unknown; message?: unknown }) => {
      if (channel !== this.channel || payload.status !== 'error') return
      this.systemError = this.scrub(String(payload.message))
      this.opts.logger.warn({ channel: this.opts.channel, message: this.systemError }, 'Realtime system error on the channel')
    })
    channel.subscribe((status, err) => this.onChannelStatus(channel, `${status}`, err), this.joinTimeoutMs)
    return channel
  }

  private onChannelStatus(channel: RealtimeChannel, status: ChannelStatus, err: Error | undefined): void {
    if (channel !== this.channel) return
    const error = status === 'SUBSCRIBED' ? undefined : new Error(this.statusReason(status, err))
    const log = { channel: this.opts.channel, private: this.opts.privateChannel, status, reason: error?.message }
    if (error) this.opts.logger.warn(log, 'Realtime channel not joined')
    else this.opts.logger.info(log, 'Realtime channel joined')
    if (error) this.failPending(status, error)
    for (const waiter of [...this.joinWaiters]) if (waiter.channel === channel) waiter.settle(error && this.joinError(status, error))
    for (const listener of [...this.statusListeners]) {
      // A listener's exception must not unwind into realtime-js's own channel bookkeeping.
      try {
        listener(status, error)
      } catch (e) {
        this.opts.logger.error({ err: this.scrub((e as Error).message), status }, 'Realtime status listener threw')
      }
    }
  }

  private statusReason(status: ChannelStatus, err: Error | undefined): string {
    switch (status) {
      case 'CHANNEL_ERROR':
        return this.scrub(err?.message || 'channel error')
      case 'TIMED_OUT':
        return `join not answered within ${this.joinTimeoutMs} ms`
      default:
        return this.systemError ? `channel closed: ${this.systemError}` : 'channel closed'
    }
  }

  private joinError(status: ChannelStatus, error: Error): RealtimeError {
    const code: RealtimeErrorCode = status === 'TIMED_OUT' ? 'timedOut' : status === 'CLOSED' ? 'closed' : 'channelError'
    return RealtimeError.of(code, `Realtime channel ${this.opts.channel}: ${error.message}`)
  }

  private waitForJoin(channel: RealtimeChannel, boundMs: number, signal: AbortSignal | undefined): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        waiter.settle(RealtimeError.of('timedOut', `Realtime channel ${this.opts.channel}: not joined within ${boundMs} ms`))
      }, boundMs)
      const onAbort = (): void => waiter.settle(signal?.reason)
      const waiter: JoinWaiter = {
        channel,
        settle: (error) => {
          if (!this.joinWaiters.delete(waiter)) return
          clearTimeout(timer)
          signal?.removeEventListener('abort', onAbort)
          if (error) reject(error)
          else resolve()
        },
      }
      this.joinWaiters.add(waiter)
      signal?.addEventListener('abort', onAbort, { once: true })
    })
  }

  // --- sending ---------------------------------------------------------------------------------

  /** Paces, pushes and awaits the ack of one broadcast; returns its payload bytes. */
  private async broadcast(event: string, payload: object): Promise<number> {
    try {
      const bytes = Buffer.byteLength(JSON.stringify(payload))
      if (bytes > this.opts.maxPayloadBytes) {
        throw RealtimeError.of('payloadTooLarge', `broadcast payload of ${bytes} bytes is over the ${this.opts.maxPayloadBytes}-byte limit`)
      }
      this.joinedChannel()
      try {
        this.counts.tokenWaitMs += await this.bucket.take(this.closeController.signal)
      } catch {
        throw RealtimeError.of('closed', 'the Realtime transport closed while the broadcast waited for its turn')
      }
      // Checked again in the same tick as the push: nothing can leave the channel in between.
      await this.push(this.joinedChannel(), event, payload, bytes)
      this.counts.acks++
      return bytes
    } catch (err) {
      this.counts.failures++
      if (err instanceof RealtimeError) this.opts.logger.debug({ channel: this.opts.channel, event, code: err.code, err: err.message }, 'Realtime broadcast failed')
      throw err
    }
  }

  private joinedChannel(): RealtimeChannel {
    if (this.closing) throw RealtimeError.of('closed', 'the Realtime transport is closed')
    const channel = this.channel
    if (!channel || !this.joined) {
      throw RealtimeError.of('notJoined', `Realtime channel ${this.opts.channel} is not joined (${channel ? channel.state : 'never joined'}); nothing was sent`)
    }
    return channel
  }

  /**
   * channel.send() would resolve a refused push as a bare 'error'; the underlying Phoenix push
   * (the one channel.send() makes on its socket path) hands over the server's reason.
   */
  private push(channel: RealtimeChannel, event: string, payload: object, bytes: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let settled = false
      const entry: Pending = {
        fail: (error) => {
          if (settled) return
          settled = true
          this.pending.delete(entry)
          reject(error)
        },
      }
      const succeed = (): void => {
        if (settled) return
        settled = true
        this.pending.delete(entry)
        resolve()
      }
      let push
      try {
        push = channel.joinPush.channel.push('broadcast', { type: 'broadcast', event, payload }, this.opts.ackTimeoutMs)
      } catch (err) {
        entry.fail(RealtimeError.of('sendError', `broadcast could not be sent: ${this.scrub((err as Error).message)}`))
        return
      }
      this.pending.add(entry)
      this.counts.messagesSent++
      this.counts.bytesSent += bytes
      this.counts.maxPayloadBytes = Math.max(this.counts.maxPayloadBytes, bytes)
      push
        .receive('ok', succeed)
        .receive('error', (response: unknown) => entry.fail(this.replyError(response)))
        .receive('timeout', () => entry.fail(RealtimeError.of('ackTimeout', `broadcast not acknowledged within ${this.opts.ackTimeoutMs} ms`)))
    })
  }

  private replyError(response: unknown): RealtimeError {
    const reason = typeof response === 'object' && response !== null && 'reason' in response && typeof response.reason === 'string' ? response.reason : JSON.stringify(response ?? null)
    const text = this.scrub(reason).slice(0, 300)
    const code: RealtimeErrorCode = /too many|rate.?limit/i.test(text) ? 'rateLimited' : /payload|too large|size/i.test(text) ? 'payloadTooLarge' : 'sendError'
    return RealtimeError.of(code, `broadcast refused: ${text}`)
  }

  /** A lost channel never delivers the acks of its pushes (replies carry the old join_ref). */
  private failPending(status: ChannelStatus, error: Error): void {
    if (this.pending.size === 0) return
    const rateLimited = status === 'CLOSED' && this.systemError !== null && /too many|rate.?limit/i.test(this.systemError)
    const code: RealtimeErrorCode = rateLimited ? 'rateLimited' : status === 'CLOSED' ? 'closed' : 'channelError'
    for (const entry of [...this.pending]) entry.fail(RealtimeError.of(code, `broadcast not acknowledged: ${error.message}`))
  }

  // --- support ---------------------------------------------------------------------------------

  private onHeartbeatStatus(status: HeartbeatStatus, latencyMs: number | undefined): void {
    if (status === 'timeout' || status === 'error') this.opts.logger.warn({ channel: this.opts.channel, heartbeat: status }, 'Realtime heartbeat failed')
    for (const listener of [...this.heartbeatListeners]) listener(status, latencyMs)
  }

  private async shutdown(): Promise<void> {
    this.closeController.abort()
    const closed = RealtimeError.of('closed', 'the Realtime transport is closed')
    for (const waiter of [...this.joinWaiters]) waiter.settle(closed)
    const deadline = performance.now() + this.closeTimeoutMs
    const left = await bounded(this.client.removeAllChannels(), this.closeTimeoutMs)
    // removeAllChannels disconnects last; if the leave hung, disconnect anyway.
    if (left === 'bounded') await bounded(this.client.realtime.disconnect(), Math.max(0, deadline - performance.now()))
    for (const entry of [...this.pending]) entry.fail(closed)
    this.opts.logger.info({ channel: this.opts.channel, ...this.counts }, 'Realtime transport closed')
  }
}

