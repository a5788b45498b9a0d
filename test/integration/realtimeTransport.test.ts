/**
 * The Realtime transport against the Realtime protocol peer, with real supabase-js on both sides:
 * the relay's service-role client (RealtimeTransport) and an anon-key client as a dashboard.
 */
import fc from 'fast-check'
import { pino, type Logger } from 'pino'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import WebSocket from 'ws'
import { createClient, type RealtimeClientOptions, type SupabaseClient } from '@supabase/supabase-js'
import { RATE_LIMIT_MESSAGE, startRealtimePeer, type RealtimePeer } from '../fixtures/realtimePeer.js'
import { waitFor } from '../helpers/wait.js'
import { buildPayload } from '../../src/realtime/payload.js'
import {
  RealtimeError,
  RealtimeTransport,
  type ChannelStatus,
  type RealtimeErrorCode,
  type RealtimeTransportOptions,
} from '../../src/realtime/transport.js'
import type { StoredEvent } from '../../src/types.js'

const EVENT = 'monitoring_events'
const transport = WebSocket as unknown as NonNullable<RealtimeClientOptions['transport']>

let peer: RealtimePeer
let transports: RealtimeTransport[] = []
let dashboards: SupabaseClient[] = []
/** Every log line of every transport in the test, parsed. */
let logLines: Record<string, unknown>[] = []
let rawLog: string[] = []

beforeEach(async () => {
  transports = []
  dashboards = []
  logLines = []
  rawLog = []
  peer = await startRealtimePeer()
})

afterEach(async () => {
  peer.clearFaults()
  await Promise.all(transports.map((t) => t.close()))
  await Promise.all(dashboards.map((d) => d.removeAllChannels()))
  await peer.close()
  // The key is never logged, by the transport or by realtime-js through it (trace level).
  for (const line of rawLog) expect(line).not.toContain(peer.keys.serviceRole)
})

function captureLogger(): Logger {
  return pino(
    { level: 'trace' },
    {
      write(line: string) {
        rawLog.push(line)
        logLines.push(JSON.parse(line) as Record<string, unknown>)
      },
    },
  )
}

function realtime(overrides: Partial<RealtimeTransportOptions> = {}): { t: RealtimeTransport; statuses: ChannelStatus[]; errors: string[] } {
  const t = new RealtimeTransport({
    url: peer.url,
    key: peer.keys.serviceRole,
    channel: 'monitoring',
    privateChannel: false,
    ackTimeoutMs: 2_000,
    maxPayloadBytes: 250_000,
    maxMessagesPerSecond: 100,
    logger: captureLogger(),
    ...overrides,
  })
  transports.push(t)
  const statuses: ChannelStatus[] = []
  const errors: string[] = []
  t.onStatus((status, err) => {
    statuses.push(status)
    if (err) errors.push(err.message)
  })
  return { t, statuses, errors }
}

interface Received {
  event: string
  payload: Record<string, unknown>
}

/** A dashboard: anon key, subscribed to the channel's batches and control messages. */
async function dashboard(): Promise<Received[]> {
  const client = createClient(peer.url, peer.keys.anon, {
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
    realtime: { transport },
  })
  dashboards.push(client)
  const received: Received[] = []
  let subscribed = false
  client
    .channel('monitoring')
    .on('broadcast', { event: EVENT }, (m) => received.push({ event: EVENT, payload: m.payload as Record<string, unknown> }))
    .on('broadcast', { event: 'control' }, (m) => received.push({ event: 'control', payload: m.payload as Record<string, unknown> }))
    .subscribe((status) => {
      if (status === 'SUBSCRIBED') subscribed = true
    })
  await waitFor(() => subscribed, 'the dashboard to subscribe', 5_000)
  return received
}

function event(seq: number, data: Record<string, unknown> = {}): StoredEvent {
  return {
    id: `0190f5a0-0000-7000-8000-${String(seq).padStart(12, '0')}`,
    event_type: 'cpu.usage',
    timestamp: '2026-11-22T10:00:00.000Z',
    source: 'host-α ☃',
    data: { value: seq % 100, ...data },
    metadata: { region: 'eu-west 😀' },
    seq,
  }
}

async function rejection(p: Promise<unknown>): Promise<RealtimeError> {
  const err = await p.then(
    () => {
      throw new Error('expected a rejection')
    },
    (e: unknown) => e,
  )
  expect(err).toBeInstanceOf(RealtimeError)
  return err as RealtimeError
}

function expectCode(err: RealtimeError, ...codes: RealtimeErrorCode[]): void {
  expect(codes, err.message).toContain(err.code)
  expect(err._tag).toBe('RealtimeError')
  expect(err.message).not.toContain(peer.keys.serviceRole)
}

function joinFrames() {
  return peer.frames({ direction: 'in', event: 'phx_join' })
}

// ---------------------------------------------------------------------------------------------

describe('connect', () => {
  it('joins with broadcast ack on and self off, reports SUBSCRIBED, and is idempotent', async () => {
    const { t, statuses } = realtime()
    expect(t.joined).toBe(false)
    await t.connect()
    expect(t.joined).toBe(true)
    expect(statuses).toEqual(['SUBSCRIBED'])
    const joins = joinFrames()
    expect(joins).toHaveLength(1)
    expect(joins[0]?.message.topic).toBe('realtime:monitoring')
    expect(joins[0]?.message.payload).toMatchObject({ config: { broadcast: { ack: true, self: false }, private: false } })
    await t.connect()
    await Promise.all([t.connect(), t.connect()])
    expect(peer.counters().joins).toBe(1)
    expect(peer.joinedSockets('monitoring')).toBe(1)
  })

  it('joins a private channel when asked, and its broadcasts are authorized as the service role', async () => {
    await peer.close()
    const writers: string[] = []
    peer = await startRealtimePeer({
      authorize: ({ action, claims }) => {
        if (action === 'write') writers.push(String(claims.role))
        return true
      },
    })
    const { t } = realtime({ privateChannel: true })
    await t.connect()
    expect(joinFrames()[0]?.message.payload).toMatchObject({ config: { broadcast: { ack: true, self: false }, private: true } })
    await t.send([event(1)])
    expect(writers).toEqual(['service_role'])
  })

  it('a refused join rejects channelError with the reason; supabase-js then rejoins by itself and connect() waits for that', async () => {
    peer.refuseJoins('RealtimeRestarting: Realtime is restarting, please standby')
    const { t, statuses, errors } = realtime()
    const err = await rejection(t.connect())
    expectCode(err, 'channelError')
    expect(err.message).toContain('RealtimeRestarting: Realtime is restarting, please standby')
    expect(statuses).toEqual(['CHANNEL_ERROR'])
    expect(errors[0]).toContain('RealtimeRestarting')
    expect(t.joined).toBe(false)

    peer.refuseJoins(false)
    // The channel is errored and realtime-js has a rejoin scheduled (1 s): connect() observes it.
    await t.connect()
    expect(statuses).toEqual(['CHANNEL_ERROR', 'SUBSCRIBED'])
    expect(peer.counters()).toMatchObject({ joinsRefused: 1, joinsOk: 1, connections: 1 })
    expect(peer.joinedSockets('monitoring')).toBe(1)
  })

  it('a join without an answer rejects timedOut', async () => {
    peer.stall(true)
    const { t, statuses } = realtime({ joinTimeoutMs: 300 })
    const started = performance.now()
    expectCode(await rejection(t.connect()), 'timedOut')
    expect(performance.now() - started).toBeGreaterThanOrEqual(290)
    expect(statuses).toEqual(['TIMED_OUT'])
  })

  it('honours the AbortSignal', async () => {
    peer.stall(true)
    const { t } = realtime()
    const started = performance.now()
    const err = await t.connect(AbortSignal.timeout(100)).catch((e: unknown) => e as Error)
    expect(err).toMatchObject({ name: 'TimeoutError' })
    expect(performance.now() - started).toBeLessThan(1_000)
    await expect(t.connect(AbortSignal.abort())).rejects.toMatchObject({ name: 'AbortError' })
  })
})

describe('send', () => {
  it('resolves only once the peer acked the broadcast', async () => {
    const { t } = realtime()
    await t.connect()
    peer.latency(200)
    const started = performance.now()
    const acked = t.send([event(1), event(2)])
    await waitFor(() => peer.counters().broadcastsIn === 1, 'the broadcast at the peer', 2_000)
    let settled = false
    void acked.finally(() => (settled = true))
    expect(settled).toBe(false)
    const { payloadBytes } = await acked
    expect(performance.now() - started).toBeGreaterThanOrEqual(195)
    expect(peer.counters().acks).toBe(1)
    expect(payloadBytes).toBe(Buffer.byteLength(JSON.stringify(buildPayload([event(1), event(2)]))))
    // A binary push (kind 3) on the joined socket, answered by phx_reply ok to its ref.
    const push = peer.frames({ direction: 'in', event: 'broadcast' })[0]
    expect(push).toMatchObject({ form: 'binary', binaryKind: 3 })
    const reply = peer.frames({ direction: 'out', event: 'phx_reply' }).find((f) => f.message.ref === push?.message.ref)
    expect(reply?.message.payload).toEqual({ status: 'ok', response: {} })
    expect(t.stats()).toMatchObject({ messagesSent: 1, eventsSent: 2, acks: 1, failures: 0, bytesSent: payloadBytes, maxPayloadBytes: payloadBytes })
  })

  it('rejects ackTimeout after ackTimeoutMs when the peer is stalled', async () => {
    const { t } = realtime({ ackTimeoutMs: 300 })
    await t.connect()
    peer.stall(true)
    const started = performance.now()
    expectCode(await rejection(t.send([event(1)])), 'ackTimeout')
    const elapsed = performance.now() - started
    expect(elapsed).toBeGreaterThanOrEqual(295)
    expect(elapsed).toBeLessThan(1_500)
    // The peer took the broadcast but its ack was never sent.
    expect(peer.counters().broadcastsIn).toBe(1)
    expect(peer.counters().framesSuppressed).toBeGreaterThan(0)
    peer.stall(false)
    await t.send([event(2)])
    expect(t.stats()).toMatchObject({ messagesSent: 2, acks: 1, failures: 1 })
  })

  it('a dashboard subscribed with the anon key receives each batch intact, and the control messages', async () => {
    const received = await dashboard()
    const { t } = realtime()
    await t.connect()
    const first = [event(1, { nested: { list: [1, null, true, 'ß'] } }), event(2), event(3, { emoji: '👩‍💻', rtl: 'עברית' })]
    const second = [event(4)]
    await t.send(first)
    await t.send(second)
    await t.sendControl({ action: 'failover', transport: 'websocket', since: 4 })
    await waitFor(() => received.length === 3, 'three deliveries', 5_000)
    expect(received).toEqual([
      { event: EVENT, payload: buildPayload(first) },
      { event: EVENT, payload: { first_seq: 4, last_seq: 4, events: second } },
      { event: 'control', payload: { action: 'failover', transport: 'websocket', since: 4 } },
    ])
    expect(peer.topicCounters('monitoring').events).toMatchObject({ [EVENT]: { count: 2 }, control: { count: 1 } })
  })

  it('is notJoined before connect and while the socket is down, and never falls back to REST', async () => {
    const { t, statuses } = realtime()
    expectCode(await rejection(t.send([event(1)])), 'notJoined')
    expectCode(await rejection(t.sendControl({ action: 'ping' })), 'notJoined')
    await t.connect()
    peer.dropSockets()
    await waitFor(() => statuses.includes('CHANNEL_ERROR'), 'the drop to be seen', 5_000)
    expectCode(await rejection(t.send([event(2)])), 'notJoined')
    expect(peer.counters()).toMatchObject({ restRequests: 0, broadcastsIn: 0 })
    expect(t.stats()).toMatchObject({ messagesSent: 0, failures: 3 })
    await t.connect()
    await t.send([event(3)])
    expect(peer.counters()).toMatchObject({ restRequests: 0, broadcastsIn: 1, acks: 1 })
  })

  it('a push in flight when the socket drops fails at once: its ack can no longer arrive', async () => {
    const { t } = realtime({ ackTimeoutMs: 5_000 })
    await t.connect()
    peer.latency(1_000)
    const started = performance.now()
    const sending = rejection(t.send([event(1)]))
    await waitFor(() => peer.counters().broadcastsIn === 1, 'the broadcast at the peer', 2_000)
    peer.dropSockets()
    expectCode(await sending, 'channelError')
    expect(performance.now() - started).toBeLessThan(1_000)
  })

  it("the peer's rate-limit error reply rejects rateLimited", async () => {
    const { t } = realtime()
    await t.connect()
    peer.rateLimit({ perSecond: 2, mode: 'reply' })
    await t.send([event(1)])
    await t.send([event(2)])
    const err = await rejection(t.send([event(3)]))
    expectCode(err, 'rateLimited')
    expect(err.message).toContain(RATE_LIMIT_MESSAGE)
    expect(peer.counters().restRequests).toBe(0)
  })

  it("Realtime's rate-limit shutdown rejects the pending send rateLimited at once; the next connect() opens a new channel", async () => {
    const { t, statuses, errors } = realtime({ ackTimeoutMs: 5_000 })
    await t.connect()
    peer.rateLimit({ perSecond: 0, mode: 'shutdown' })
    const started = performance.now()
    const err = await rejection(t.send([event(1)]))
    expectCode(err, 'rateLimited')
    expect(performance.now() - started).toBeLessThan(1_000)
    expect(statuses).toEqual(['SUBSCRIBED', 'CLOSED'])
    expect(errors).toEqual([`channel closed: ${RATE_LIMIT_MESSAGE}`])
    // A closed channel: send() does not post to REST, it reports notJoined.
    expectCode(await rejection(t.send([event(2)])), 'notJoined')
    expect(peer.counters().restRequests).toBe(0)
    peer.rateLimit(false)
    await t.connect()
    await t.send([event(3)])
    expect(statuses).toEqual(['SUBSCRIBED', 'CLOSED', 'SUBSCRIBED'])
    expect(peer.counters()).toMatchObject({ joins: 2, connections: 1, restRequests: 0 })
  })

  it('rejects payloadTooLarge: over maxPayloadBytes without sending, or refused by the peer', async () => {
    const { t } = realtime({ maxPayloadBytes: 2_000 })
    await t.connect()
    expectCode(await rejection(t.send([event(1, { blob: 'x'.repeat(3_000) })])), 'payloadTooLarge')
    expect(peer.counters().broadcastsIn).toBe(0)
    peer.maxPayloadBytes(500)
    const err = await rejection(t.send([event(2, { blob: 'y'.repeat(600) })]))
    expectCode(err, 'payloadTooLarge')
    expect(err.message).toContain('payload_size_exceeded')
    expect(peer.counters()).toMatchObject({ broadcastsIn: 1, payloadTooLarge: 1, acks: 0 })
  })
})

describe('fit', () => {
  const unicode = fc.string({ unit: 'binary', maxLength: 40 })
  const storedEvent = fc.record({
    id: fc.uuid(),
    event_type: fc.constantFrom('cpu.usage', 'mem', 'disk:io'),
    timestamp: fc.date({ min: new Date('2000-01-01'), max: new Date('2100-01-01'), noInvalidDate: true }).map((d) => d.toISOString()),
    source: unicode,
    data: fc.dictionary(unicode, fc.jsonValue({ maxDepth: 3 }), { maxKeys: 6 }),
    metadata: fc.dictionary(unicode, unicode, { maxKeys: 3 }),
  })
  const batch = fc
    .tuple(fc.integer({ min: 1, max: 2 ** 40 }), fc.array(fc.tuple(fc.integer({ min: 1, max: 1_000_000 }), storedEvent), { minLength: 1, maxLength: 40 }))
    .map(([start, items]) => {
      let seq = start
      return items.map(([gap, e]) => ({ ...e, seq: (seq += gap) }) as StoredEvent)
    })
  const bytes = (events: readonly StoredEvent[]) => Buffer.byteLength(JSON.stringify(buildPayload(events)))

  it('returns the longest prefix within maxPayloadBytes, with its exact serialised size', () => {
    const limits = [150, 400, 1_000, 3_000, 20_000]
    const byLimit = new Map(limits.map((limit) => [limit, realtime({ maxPayloadBytes: limit }).t]))
    fc.assert(
      fc.property(batch, fc.constantFrom(...limits), (events, limit) => {
        const fitted = byLimit.get(limit)!.fit(events)
        expect(fitted.events.length).toBeGreaterThanOrEqual(1)
        expect(fitted.events).toEqual(events.slice(0, fitted.events.length))
        expect(fitted.payloadBytes).toBe(bytes(fitted.events))
        if (fitted.tooLarge) {
          expect(fitted.events).toHaveLength(1)
          expect(fitted.payloadBytes).toBeGreaterThan(limit)
        } else {
          expect(fitted.payloadBytes).toBeLessThanOrEqual(limit)
          // maximal: one more event would not fit
          if (fitted.events.length < events.length) expect(bytes(events.slice(0, fitted.events.length + 1))).toBeGreaterThan(limit)
        }
      }),
      { numRuns: 500 },
    )
  })

  it('an empty list fits nothing; buildPayload refuses an empty batch', () => {
    const { t } = realtime()
    expect(t.fit([])).toEqual({ events: [], payloadBytes: 0, tooLarge: false })
    expect(() => buildPayload([])).toThrow(RangeError)
  })

  it('batches formed by fit() stay within the limit on the wire, as the peer measures them', async () => {
    const limit = 4_000
    const { t } = realtime({ maxPayloadBytes: limit, maxMessagesPerSecond: 1_000 })
    await t.connect()
    const pending = Array.from({ length: 400 }, (_, i) => event(i + 1, { note: 'é'.repeat((i * 37) % 900) }))
    let sent = 0
    let largest = 0
    while (pending.length > 0) {
      const { events, payloadBytes, tooLarge } = t.fit(pending)
      expect(tooLarge).toBe(false)
      const result = await t.send(events)
      expect(result.payloadBytes).toBe(payloadBytes)
      largest = Math.max(largest, payloadBytes)
      pending.splice(0, events.length)
      sent++
    }
    const c = peer.counters()
    expect(c.broadcastsIn).toBe(sent)
    expect(c.maxBroadcastPayloadBytes).toBe(largest)
    expect(c.maxBroadcastPayloadBytes).toBeLessThanOrEqual(limit)
    expect(c.maxBroadcastPayloadBytes).toBeGreaterThan(limit - 1_000) // the batches are full, not timid
    expect(c.broadcastPayloadBytesIn).toBe(t.stats().bytesSent)
    expect(t.stats()).toMatchObject({ messagesSent: sent, eventsSent: 400, acks: sent, maxPayloadBytes: largest })
  })
})

describe('pacing', () => {
  it('300 messages at 100/s: no 1 s window at the peer sees more than 100', async () => {
    const received = await dashboard()
    const { t } = realtime({ maxMessagesPerSecond: 100 })
    await t.connect()
    const started = performance.now()
    // All at once: the bucket queues them first come, first served.
    await Promise.all(Array.from({ length: 300 }, (_, i) => t.send([event(i + 1)])))
    const elapsed = performance.now() - started
    const c = peer.counters()
    expect(c.broadcastsIn).toBe(300)
    expect(c.maxMessagesPerSecond).toBeLessThanOrEqual(100)
    expect(c.maxMessagesPerSecond).toBeGreaterThanOrEqual(90)
    // 2 at once, then 99 per 1,050 ms: about 3.15 s.
    expect(elapsed).toBeGreaterThan(2_900)
    expect(elapsed).toBeLessThan(4_500)
    expect(t.stats().tokenWaitMs).toBeGreaterThan(0)
    await waitFor(() => received.length === 300, 'every broadcast at the dashboard', 5_000)
    expect(received.map((r) => r.payload.first_seq)).toEqual(Array.from({ length: 300 }, (_, i) => i + 1))
  })
})

describe('socket drops and heartbeats', () => {
  it('a dropped socket reports CHANNEL_ERROR, then SUBSCRIBED once supabase-js has rejoined by itself; joins stay one per drop', async () => {
    const { t, statuses, errors } = realtime()
    await t.connect()
    for (let drop = 1; drop <= 3; drop++) {
      expect(peer.dropSockets()).toBe(1)
      await waitFor(() => statuses.filter((s) => s === 'SUBSCRIBED').length === drop + 1, `rejoin after drop ${drop}`, 8_000)
      await t.send([event(drop)])
    }
    expect(statuses).toEqual(['SUBSCRIBED', 'CHANNEL_ERROR', 'SUBSCRIBED', 'CHANNEL_ERROR', 'SUBSCRIBED', 'CHANNEL_ERROR', 'SUBSCRIBED'])
    expect(errors).toEqual(['socket closed: 1006', 'socket closed: 1006', 'socket closed: 1006'])
    // No storm: one connection and one join per drop, and nothing more while it settles.
    const settled = peer.counters()
    expect(settled).toMatchObject({ connections: 4, joins: 4, joinsOk: 4, acks: 3 })
    await new Promise((r) => setTimeout(r, 1_500))
    expect(peer.counters()).toMatchObject({ connections: 4, joins: 4 })
  })

  it('an unanswered heartbeat is reported, the channel errors, and it rejoins once the peer answers again', async () => {
    const { t, statuses, errors } = realtime({ heartbeatIntervalMs: 100 })
    const beats: string[] = []
    t.onHeartbeat((status) => beats.push(status))
    await t.connect()
    await waitFor(() => beats.includes('ok'), 'an answered heartbeat', 5_000)
    peer.stall(true)
    await waitFor(() => beats.includes('timeout') && statuses.includes('CHANNEL_ERROR'), 'the heartbeat timeout', 5_000)
    expect(errors[0]).toBe('heartbeat timeout')
    peer.stall(false)
    await t.connect()
    expect(statuses.at(-1)).toBe('SUBSCRIBED')
    await t.send([event(1)])
  })
})

describe('close', () => {
  it('is bounded with a stalled peer; pending calls and later ones reject closed', async () => {
    const { t, statuses } = realtime({ ackTimeoutMs: 10_000, closeTimeoutMs: 1_000 })
    await t.connect()
    peer.stall(true)
    const sending = rejection(t.send([event(1)]))
    await waitFor(() => peer.counters().broadcastsIn === 1, 'the broadcast at the peer', 2_000)
    const started = performance.now()
    await t.close()
    expect(performance.now() - started).toBeLessThan(2_500)
    expectCode(await sending, 'closed')
    expect(statuses).toContain('CLOSED')
    expect(t.joined).toBe(false)
    expectCode(await rejection(t.connect()), 'closed')
    expectCode(await rejection(t.send([event(2)])), 'closed')
    await t.close()
  })

  it('leaves the channel and disconnects', async () => {
    const { t } = realtime()
    await t.connect()
    await t.close()
    await waitFor(() => peer.counters().openSockets === 0, 'the socket to close', 5_000)
    expect(peer.counters().leaves).toBe(1)
  })
})

describe('the service-role key', () => {
  it('appears in no log line (trace level, realtime-js included) and no error message, whatever fails', async () => {
    const key = peer.keys.serviceRole
    const messages: string[] = []
    const collect = (p: Promise<unknown>) => p.catch((e: Error) => messages.push(e.message))

    peer.refuseJoins(`Unauthorized: bad token ${key}`)
    const { t, errors } = realtime({ ackTimeoutMs: 300, joinTimeoutMs: 500 })
    await collect(t.connect())
    peer.refuseJoins(false)
    await t.connect()
    peer.rateLimit({ perSecond: 0, mode: 'reply' })
    await collect(t.send([event(1)]))
    peer.rateLimit(false)
    peer.stall(true)
    await collect(t.send([event(2)]))
    peer.stall(false)
    peer.closeChannel('monitoring', `shutdown for ${key}`)
    await waitFor(() => errors.length >= 2, 'the close', 5_000)
    await collect(t.send([event(3)]))
    peer.refuseConnections(403)
    peer.dropSockets()
    await collect(t.connect())
    peer.refuseConnections(false)
    await t.connect()
    await t.close()

    expect(messages.length).toBeGreaterThanOrEqual(4)
    for (const text of [...messages, ...errors]) expect(text).not.toContain(key)
    expect(errors.join('\n')).toContain('[redacted]')
    // The realtime-js trace lines were captured (so the check above covered them).
    expect(logLines.some((l) => l.realtimeJs === 'transport' && String(l.msg).includes('apikey=[redacted]'))).toBe(true)
    for (const line of rawLog) expect(line).not.toContain(key)
  })
})
