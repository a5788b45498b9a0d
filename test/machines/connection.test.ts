import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { createActor, SimulatedClock } from 'xstate'
import type { AnyActorRef } from 'xstate'
import {
  backoffCeilingMs,
  connectionMachine,
  fullJitterBackoffMs,
  isCodedError,
  toConnectionFault,
  type ConnectionEmitted,
  type ConnectionFault,
  type ConnectionInput,
  type ProbeInput,
} from '../../machines/connection.js'
import { MachineCoverage } from '../helpers/coverage.js'
import {
  advanceClock,
  advanceExactly,
  checkAgainstModel,
  edgeName,
  emittedBy,
  heldCallback,
  heldPromise,
  modelEdges,
  ownerOf,
  sendsOf,
  settle,
  type Driver,
  type ReferenceModel,
} from '../helpers/machines.js'

const coverage = new MachineCoverage(connectionMachine)

// ---------------------------------------------------------------------------------------------
// The oracle: a hand-written table, state × event → next state, with the counters, the fault and
// the reports each transition makes. No xstate in it.

type Phase = 'idle' | 'connecting' | 'connected' | 'reconnecting' | 'failed' | 'disconnecting' | 'stopped'

type Step =
  | { type: 'connect' }
  | { type: 'retry' }
  | { type: 'stop' }
  /** `connection.lost` sent in by src, by the probe (only while it runs) or by the watch. */
  | { type: 'lost'; via: 'src' | 'probe' | 'watch'; code: string; message: string }
  | { type: 'restored' }
  | { type: 'connectOk' }
  | { type: 'connectFail'; error: unknown }
  | { type: 'disconnectOk' }
  | { type: 'disconnectFail' }
  | { type: 'wait'; ms: number }

interface Link {
  state: Phase
  attempt: number
  backoffMs: number
  lastFault: ConnectionFault | null
  /** How many jitter draws the machine made: the next one is randoms[draws % randoms.length]. */
  draws: number
  /** Time in the current state (its timer: backoff, stable, failedRetry, disconnectTimeout). */
  elapsed: number
  /** connected: the link stayed up one probe interval, so the stable timer is spent. */
  stable: boolean
  abortedConnects: number
  /** Output of the last step. */
  emitted: ConnectionEmitted[]
}

interface Settings {
  name: string
  baseMs: number
  capMs: number
  maxAttempts?: number
  probeIntervalMs: number
  disconnectTimeoutMs: number
  failedRetryMs: number
  randoms: number[]
}

/** The documented rule: an Error with a string `code` keeps it, anything else is 'connectFailed'. */
const expectedFault = (error: unknown): ConnectionFault => {
  const code = error instanceof Error ? (error as Error & { code?: unknown }).code : undefined
  return { code: typeof code === 'string' ? code : 'connectFailed', message: error instanceof Error ? error.message : String(error) }
}

function linkModel(s: Settings): ReferenceModel<Link, Step> {
  const enter = (l: Link, state: Phase, emitted: ConnectionEmitted[] = []): Link => ({ ...l, state, elapsed: 0, stable: false, emitted: [...l.emitted, ...emitted] })
  /** A failed connect or a lost link: count it, then give up or back off. */
  const fail = (l: Link, fault: ConnectionFault): Link => {
    const attempt = l.attempt + 1
    const counted = { ...l, attempt, lastFault: fault }
    if (s.maxAttempts !== undefined && attempt >= s.maxAttempts) return enter(counted, 'failed', [{ type: 'connection.failed', name: s.name, attempts: attempt, ...fault }])
    const r = s.randoms[l.draws % s.randoms.length]!
    const backoffMs = Math.floor(r * Math.min(s.capMs, s.baseMs * 2 ** attempt))
    return enter({ ...counted, backoffMs, draws: l.draws + 1 }, 'reconnecting', [{ type: 'connection.lost', name: s.name, attempt, retryInMs: backoffMs, ...fault }])
  }
  const connecting = (l: Link): Link => enter(l, 'connecting')

  const table: Record<Phase, Partial<Record<Step['type'], (l: Link, e: Step) => Link>>> = {
    idle: { connect: connecting, stop: (l) => enter(l, 'stopped') },
    connecting: {
      connectOk: (l) => enter(l, 'connected', [{ type: 'connection.established', name: s.name, attempt: l.attempt }]),
      connectFail: (l, e) => fail(l, expectedFault((e as { error: unknown }).error)),
      stop: (l) => enter({ ...l, abortedConnects: l.abortedConnects + 1 }, 'stopped'),
    },
    connected: {
      lost: (l, e) => fail(l, { code: (e as { code: string }).code, message: (e as { message: string }).message }),
      stop: (l) => enter(l, 'disconnecting'),
      wait: (l, e) => {
        if (l.stable) return l
        const elapsed = l.elapsed + (e as { ms: number }).ms
        return elapsed >= s.probeIntervalMs ? { ...l, elapsed: 0, stable: true, attempt: 0 } : { ...l, elapsed }
      },
    },
    reconnecting: {
      wait: (l, e) => (l.elapsed + (e as { ms: number }).ms >= l.backoffMs ? connecting(l) : { ...l, elapsed: l.elapsed + (e as { ms: number }).ms }),
      stop: (l) => enter(l, 'stopped'),
      restored: connecting,
      retry: connecting,
    },
    failed: {
      wait: (l, e) => (l.elapsed + (e as { ms: number }).ms >= s.failedRetryMs ? connecting({ ...l, attempt: 0 }) : { ...l, elapsed: l.elapsed + (e as { ms: number }).ms }),
      retry: (l) => connecting({ ...l, attempt: 0 }),
      restored: (l) => connecting({ ...l, attempt: 0 }),
      stop: (l) => enter(l, 'stopped'),
    },
    disconnecting: {
      disconnectOk: (l) => enter(l, 'stopped'),
      disconnectFail: (l) => enter(l, 'stopped'),
      wait: (l, e) => (l.elapsed + (e as { ms: number }).ms >= s.disconnectTimeoutMs ? enter(l, 'stopped') : { ...l, elapsed: l.elapsed + (e as { ms: number }).ms }),
    },
    stopped: {},
  }

  const step = (prior: Link, e: Step): Link => {
    const l = { ...prior, emitted: [] }
    return table[l.state][e.type]?.(l, e) ?? l // anything else is ignored where it arrives
  }

  const initial: Link = { state: 'idle', attempt: 0, backoffMs: 0, lastFault: null, draws: 0, elapsed: 0, stable: false, abortedConnects: 0, emitted: [] }
  const timerOf = (l: Link): number | null =>
    l.state === 'reconnecting' ? l.backoffMs : l.state === 'connected' && !l.stable ? s.probeIntervalMs : l.state === 'failed' ? s.failedRetryMs : l.state === 'disconnecting' ? s.disconnectTimeoutMs : null
  const events = (l: Link): Step[] => {
    if (l.state === 'stopped') return []
    const timer = timerOf(l)
    const left = timer === null ? null : timer - l.elapsed
    return [
      { type: 'connect' },
      { type: 'retry' },
      { type: 'stop' },
      { type: 'lost', via: 'src', code: 'queryTimeout', message: 'pool query timed out' },
      ...(l.state === 'connected' ? [{ type: 'lost', via: 'probe', code: 'heartbeatTimeout', message: 'no pong in 1000 ms' } as const] : []),
      { type: 'lost', via: 'watch', code: 'channelClosed', message: 'CHANNEL_ERROR' },
      { type: 'restored' },
      ...(l.state === 'connecting'
        ? [
            { type: 'connectOk' } as const,
            { type: 'connectFail', error: refused } as const,
            { type: 'connectFail', error: new Error('getaddrinfo failed') } as const,
            { type: 'connectFail', error: Object.assign(new Error('numeric'), { code: 57 }) } as const,
            { type: 'connectFail', error: 'socket hang up' } as const,
            { type: 'connectFail', error: { code: 'ENOTAN_ERROR', message: 'a plain object' } } as const,
          ]
        : []),
      ...(l.state === 'disconnecting' ? [{ type: 'disconnectOk' } as const, { type: 'disconnectFail' } as const] : []),
      ...(left === null ? [{ type: 'wait', ms: s.failedRetryMs * 2 } as const] : [...(left > 1 ? [{ type: 'wait', ms: left - 1 } as const] : []), { type: 'wait', ms: left } as const]),
    ]
  }
  // The future depends on the phase, the attempt count (beyond the cap only the reported number
  // grows), the next jitter draw and the timer's progress; the fault and totals only get reported.
  const key = (l: Link) => JSON.stringify([l.state, Math.min(l.attempt, 4), l.draws % s.randoms.length, l.backoffMs, l.elapsed, l.stable])
  return { initial, step, events, key }
}

const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' })

const label = (e: Step): string =>
  e.type === 'wait' ? `wait(${e.ms})` : e.type === 'lost' ? `lost via ${e.via}` : e.type === 'connectFail' ? `connectFail(${e.error instanceof Error ? e.error.message : JSON.stringify(e.error)})` : e.type

// ---------------------------------------------------------------------------------------------
// Driving the real connection.

interface Run {
  clock: SimulatedClock
  link: () => AnyActorRef
  stop: () => void
  connects: ReturnType<typeof heldPromise<unknown, { name: string }>>
  disconnects: ReturnType<typeof heldPromise<void, { name: string }>>
  probe: ReturnType<typeof heldCallback<ProbeInput>>
  watch: ReturnType<typeof heldCallback<{ name: string }>>
  emitted: { take(): unknown[] }
  received?: { take(): unknown[] }
}

const inputOf = (s: Settings, reportTo?: string): ConnectionInput => {
  let draw = 0
  return {
    name: s.name,
    backoff: { baseMs: s.baseMs, capMs: s.capMs },
    ...(s.maxAttempts === undefined ? {} : { maxAttempts: s.maxAttempts }),
    probeIntervalMs: s.probeIntervalMs,
    disconnectTimeoutMs: s.disconnectTimeoutMs,
    failedRetryMs: s.failedRetryMs,
    random: () => s.randoms[draw++ % s.randoms.length]!,
    ...(reportTo === undefined ? {} : { reportTo }),
  }
}

const held = {
  connects: heldPromise<unknown, { name: string }>(),
  disconnects: heldPromise<void, { name: string }>(),
  probe: heldCallback<ProbeInput>(),
  watch: heldCallback<{ name: string }>(),
}
const heldMachine = connectionMachine.provide({
  actors: { connect: held.connects.logic, disconnect: held.disconnects.logic, probe: held.probe.logic, watch: held.watch.logic },
})

/** The machine with held actors, for one run at a time: the held calls belong to the latest run. */
function provided() {
  for (const h of Object.values(held)) h.reset()
  return { machine: heldMachine, ...held }
}

function startRoot(input: ConnectionInput): Run & { actor: ReturnType<typeof createActor<typeof connectionMachine>> } {
  const clock = new SimulatedClock()
  const p = provided()
  const actor = createActor(p.machine, { input, clock, inspect: coverage.inspect })
  const emitted = emittedBy(actor)
  actor.start()
  return { ...p, clock, actor, link: () => actor, stop: () => actor.stop(), emitted }
}

function startOwned(input: ConnectionInput): Run {
  const clock = new SimulatedClock()
  const p = provided()
  const owner = ownerOf(p.machine, 'connection', input)
  const actor = createActor(owner.machine, { systemId: 'storeDependency', clock, inspect: coverage.inspect }).start()
  const link = owner.child(actor)
  return { ...p, clock, link: () => link, stop: () => actor.stop(), emitted: emittedBy(link), received: owner }
}

function driver(s: Settings, owned: boolean): Driver<Link, Step, Run> {
  return {
    start: () => (owned ? startOwned(inputOf(s, 'storeDependency')) : startRoot(inputOf(s))),
    apply: async (run, e) => {
      const link = run.link()
      switch (e.type) {
        case 'connectOk':
          run.connects.one().resolve(undefined)
          break
        case 'connectFail':
          run.connects.one().reject(e.error)
          break
        case 'disconnectOk':
          run.disconnects.one().resolve()
          break
        case 'disconnectFail':
          run.disconnects.one().reject(new Error('socket already closed'))
          break
        case 'wait':
          advanceClock(run.clock, e.ms)
          break
        case 'lost': {
          const event = { type: 'connection.lost', code: e.code, message: e.message } as const
          if (e.via === 'src') link.send(event)
          else {
            const running = (e.via === 'probe' ? run.probe : run.watch).running()
            expect(running, `one ${e.via} running`).toHaveLength(1)
            running[0]!.sendBack(event)
          }
          break
        }
        case 'restored':
          expect(run.watch.running()).toHaveLength(1)
          run.watch.running()[0]!.sendBack({ type: 'connection.restored' })
          break
        default:
          link.send({ type: e.type })
      }
      // A settled call reaches the machine through promise callbacks: let them run.
      if (['connectOk', 'connectFail', 'disconnectOk', 'disconnectFail'].includes(e.type)) await settle()
    },
    observe: (run) => {
      const snapshot = run.link().getSnapshot()
      const { attempt, backoffMs, lastFault } = snapshot.context
      return {
        state: snapshot.value,
        status: snapshot.status,
        attempt,
        backoffMs,
        lastFault,
        emitted: run.emitted.take(),
        ...(run.received ? { received: run.received.take() } : {}),
        // A done actor's last snapshot still lists the children it stopped: what runs is in `watching`.
        children: snapshot.status === 'done' ? 'n/a' : Object.keys(snapshot.children).sort(),
        connecting: run.connects.live().map((c) => c.input),
        abortedConnects: run.connects.calls.filter((c) => c.signal.aborted).length,
        disconnecting: run.disconnects.live().map((c) => c.input),
        probing: run.probe.running().map((p) => p.input),
        watching: run.watch.running().map((w) => w.input),
      }
    },
    expected: (l) => {
      const { state, attempt, backoffMs, lastFault, emitted, abortedConnects } = l
      const name = { name: s.name }
      const child = { connecting: 'connect', connected: 'probe', disconnecting: 'disconnect' } as Partial<Record<Phase, string>>
      return {
        state,
        status: state === 'stopped' ? 'done' : 'active',
        attempt,
        backoffMs,
        lastFault,
        emitted,
        ...(owned ? { received: emitted } : {}),
        // The watch lives as long as the machine; connect, probe and disconnect as long as their state.
        children: state === 'stopped' ? 'n/a' : [...(child[state] ? [child[state]!] : []), 'watch'].sort(),
        connecting: state === 'connecting' ? [name] : [],
        abortedConnects,
        disconnecting: state === 'disconnecting' ? [name] : [],
        probing: state === 'connected' ? [{ name: s.name, probeIntervalMs: s.probeIntervalMs }] : [],
        watching: state === 'stopped' ? [] : [name],
      }
    },
    stop: (run) => run.stop(),
  }
}

// ---------------------------------------------------------------------------------------------

describe('connection against the reference table, every edge of its graph', () => {
  const cases: Array<[string, Settings, boolean]> = [
    [
      'owned, giving up after 2 attempts',
      { name: 'store', baseMs: 100, capMs: 300, maxAttempts: 2, probeIntervalMs: 1_000, disconnectTimeoutMs: 2_000, failedRetryMs: 5_000, randoms: [0.5, 0.999] },
      true,
    ],
    [
      'unowned, never giving up',
      { name: 'realtime', baseMs: 40, capMs: 100, probeIntervalMs: 700, disconnectTimeoutMs: 300, failedRetryMs: 9_000, randoms: [0.75, 0] },
      false,
    ],
  ]
  for (const [title, settings, owned] of cases) {
    describe(title, () => {
      const model = linkModel(settings)
      const edges = modelEdges(model)

      it('the table reaches every state', () => {
        const reached = new Set(edges.map((e) => e.to.state))
        expect([...reached].sort()).toEqual(
          (settings.maxAttempts === undefined ? ['connected', 'connecting', 'disconnecting', 'idle', 'reconnecting', 'stopped'] : ['connected', 'connecting', 'disconnecting', 'failed', 'idle', 'reconnecting', 'stopped']).sort(),
        )
      })

      it.each(edges.map((e) => [edgeName(e, label), e] as const))('%s', async (_name, edge) => {
        await checkAgainstModel(model, driver(settings, owned), [...edge.path, edge.event], label)
      })
    })
  }
})

describe('connection against the reference table, random settings and steps (fast-check)', () => {
  const settingsArb: fc.Arbitrary<Settings> = fc.record(
    {
      name: fc.constantFrom('store', 'realtime'),
      baseMs: fc.integer({ min: 1, max: 200 }),
      capMs: fc.integer({ min: 1, max: 1_000 }),
      maxAttempts: fc.integer({ min: 1, max: 4 }),
      probeIntervalMs: fc.integer({ min: 1, max: 500 }),
      disconnectTimeoutMs: fc.integer({ min: 1, max: 500 }),
      failedRetryMs: fc.integer({ min: 1, max: 2_000 }),
      randoms: fc.array(fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), { minLength: 1, maxLength: 4 }),
    },
    { requiredKeys: ['name', 'baseMs', 'capMs', 'probeIntervalMs', 'disconnectTimeoutMs', 'failedRetryMs', 'randoms'] },
  )
  const stepArb: fc.Arbitrary<Step> = fc.oneof(
    { arbitrary: fc.constantFrom<Step>({ type: 'connect' }, { type: 'retry' }, { type: 'restored' }, { type: 'connectOk' }, { type: 'disconnectOk' }, { type: 'disconnectFail' }), weight: 4 },
    { arbitrary: fc.constant<Step>({ type: 'stop' }), weight: 1 },
    { arbitrary: fc.constantFrom<Step>({ type: 'connectFail', error: refused }, { type: 'connectFail', error: 'socket hang up' }), weight: 3 },
    { arbitrary: fc.constantFrom<'src' | 'probe' | 'watch'>('src', 'probe', 'watch').map((via): Step => ({ type: 'lost', via, code: 'reset', message: 'ECONNRESET' })), weight: 2 },
    { arbitrary: fc.integer({ min: 0, max: 3_000 }).map((ms): Step => ({ type: 'wait', ms })), weight: 3 },
  )

  it('matches the table after every step (settling calls and probing only where the test can)', async () => {
    await fc.assert(
      fc.asyncProperty(settingsArb, fc.array(stepArb, { maxLength: 40 }), async (settings, raw) => {
        const model = linkModel(settings)
        const steps: Step[] = []
        let state = model.initial
        for (const e of raw) {
          const possible = state.state !== 'stopped' &&
            (e.type === 'connectOk' || e.type === 'connectFail' ? state.state === 'connecting'
              : e.type === 'disconnectOk' || e.type === 'disconnectFail' ? state.state === 'disconnecting'
              : e.type === 'lost' && e.via === 'probe' ? state.state === 'connected'
              : true)
          if (!possible) continue
          steps.push(e)
          state = model.step(state, e)
        }
        await checkAgainstModel(model, driver(settings, false), steps, label)
      }),
      { numRuns: 120 },
    )
  })
})

describe('connection, behaviour stated by hand', () => {
  const base: ConnectionInput = { name: 'store', backoff: { baseMs: 250, capMs: 30_000 }, probeIntervalMs: 5_000 }

  it('full-jitter backoff is a whole number in [0, min(cap, base·2^attempt)]', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 10_000 }),
        fc.integer({ min: 1, max: 120_000 }),
        fc.integer({ min: 0, max: 2_000 }),
        fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
        (baseMs, capMs, attempt, r) => {
          const delay = fullJitterBackoffMs({ baseMs, capMs }, attempt, () => r)
          expect(delay).toBe(Math.floor(r * Math.min(capMs, baseMs * 2 ** attempt)))
        },
      ),
    )
    expect(backoffCeilingMs({ baseMs: 250, capMs: 30_000 }, 3)).toBe(2_000)
    // A random source outside [0, 1) is clamped to the ceiling and to 0.
    expect(fullJitterBackoffMs({ baseMs: 100, capMs: 1_000 }, 1, () => 1.5)).toBe(200)
    expect(fullJitterBackoffMs({ baseMs: 100, capMs: 1_000 }, 1, () => -0.5)).toBe(0)
  })

  it('turns what connect rejected with into a fault, keeping a string code', () => {
    const rows: Array<[unknown, ConnectionFault]> = [
      [refused, { code: 'ECONNREFUSED', message: refused.message }],
      [new Error('boom'), { code: 'connectFailed', message: 'boom' }],
      [Object.assign(new Error('errno'), { code: 57 }), { code: 'connectFailed', message: 'errno' }],
      [{ code: 'EPIPE', message: 'not an Error' }, { code: 'connectFailed', message: '[object Object]' }],
      ['socket hang up', { code: 'connectFailed', message: 'socket hang up' }],
    ]
    for (const [error, fault] of rows) expect(toConnectionFault(error, 'connectFailed')).toStrictEqual(fault)
    expect(isCodedError(refused)).toBe(true)
    expect(isCodedError({ code: 'EPIPE' })).toBe(false)
  })

  it('after maxAttempts consecutive failures it fails, then tries again by itself after failedRetryMs (60 s by default)', async () => {
    const run = startRoot({ ...base, maxAttempts: 1, random: () => 0 })
    run.actor.send({ type: 'connect' })
    run.connects.one().reject(refused)
    await settle()
    expect(run.actor.getSnapshot().value).toBe('failed')
    expect(run.emitted.take()).toStrictEqual([{ type: 'connection.failed', name: 'store', attempts: 1, code: 'ECONNREFUSED', message: refused.message }])
    advanceExactly(run.clock, 60_000, () => run.actor.getSnapshot().value)
    expect(run.actor.getSnapshot().value).toBe('connecting')
    expect(run.actor.getSnapshot().context.attempt).toBe(0)
    run.actor.stop()
  })

  it('connection.restored ends the backoff at once; in failed it starts over with the count reset', async () => {
    const run = startRoot({ ...base, maxAttempts: 2, random: () => 0.5 })
    run.actor.send({ type: 'connect' })
    run.connects.one().reject(refused)
    await settle()
    expect(run.actor.getSnapshot().value).toBe('reconnecting')
    run.watch.running()[0]!.sendBack({ type: 'connection.restored' })
    expect(run.actor.getSnapshot().value).toBe('connecting')
    run.connects.one().reject(refused)
    await settle()
    expect(run.actor.getSnapshot()).toMatchObject({ value: 'failed', context: { attempt: 2 } })
    run.watch.running()[0]!.sendBack({ type: 'connection.restored' })
    expect(run.actor.getSnapshot()).toMatchObject({ value: 'connecting', context: { attempt: 0 } })
    run.actor.stop()
    expect(run.watch.running()).toEqual([])
  })

  it('a link that drops before it proved stable backs off further; a stable one starts over', async () => {
    const run = startRoot({ ...base, random: () => 0.5 })
    run.actor.send({ type: 'connect' })
    const flap = async () => {
      run.connects.one().resolve(undefined)
      await settle()
      run.probe.running()[0]!.sendBack({ type: 'connection.lost', code: 'reset', message: 'ECONNRESET' })
      const { attempt, backoffMs } = run.actor.getSnapshot().context
      run.clock.increment(backoffMs)
      return { attempt, backoffMs }
    }
    expect(await flap()).toEqual({ attempt: 1, backoffMs: 250 })
    expect(await flap()).toEqual({ attempt: 2, backoffMs: 500 })
    run.connects.one().resolve(undefined)
    await settle()
    expect(run.emitted.take().at(-1)).toStrictEqual({ type: 'connection.established', name: 'store', attempt: 2 })
    advanceExactly(run.clock, 5_000, () => run.actor.getSnapshot().context.attempt)
    expect(run.actor.getSnapshot().context.attempt).toBe(0)
    run.actor.send({ type: 'connection.lost', code: 'reset', message: 'ECONNRESET' })
    expect(run.actor.getSnapshot().context).toMatchObject({ attempt: 1, backoffMs: 250 })
    run.actor.stop()
  })

  it('stop while connected disconnects, bounded by disconnectTimeout (5 s by default); while connecting it aborts the attempt', async () => {
    const run = startRoot(base)
    run.actor.send({ type: 'connect' })
    run.connects.one().resolve(undefined)
    await settle()
    run.actor.send({ type: 'stop' })
    expect(run.actor.getSnapshot().value).toBe('disconnecting')
    expect(run.probe.running()).toEqual([])
    advanceExactly(run.clock, 5_000, () => run.actor.getSnapshot().value)
    expect(run.actor.getSnapshot().status).toBe('done')

    const connecting = startRoot(base)
    connecting.actor.send({ type: 'connect' })
    connecting.actor.send({ type: 'stop' })
    expect(connecting.actor.getSnapshot().value).toBe('stopped')
    expect(connecting.connects.calls[0]!.signal.aborted).toBe(true)
    expect(connecting.disconnects.calls).toHaveLength(0)
  })

  it('uses Math.random when no random source is given', async () => {
    const run = startRoot(base)
    run.actor.send({ type: 'connect' })
    run.connects.one().reject(refused)
    await settle()
    const { backoffMs } = run.actor.getSnapshot().context
    expect(Number.isInteger(backoffMs) && backoffMs >= 0 && backoffMs <= 500).toBe(true)
    run.actor.stop()
  })

  it('reports to nobody without reportTo, and to nobody (without failing) when reportTo names no actor', async () => {
    for (const reportTo of [undefined, 'nobody']) {
      let link: AnyActorRef | undefined
      const sends = sendsOf(() => link)
      const p = provided()
      const actor = createActor(p.machine, { input: { ...base, maxAttempts: 1, ...(reportTo ? { reportTo } : {}) }, inspect: sends.inspect })
      link = actor
      const errors: unknown[] = []
      actor.subscribe({ error: (e) => void errors.push(e) })
      actor.start()
      actor.send({ type: 'connect' })
      p.connects.one().resolve(undefined)
      await settle()
      actor.send({ type: 'connection.lost', code: 'reset', message: 'ECONNRESET' })
      await settle()
      expect(actor.getSnapshot()).toMatchObject({ value: 'failed', status: 'active' })
      expect(errors).toEqual([])
      expect(sends.sent).toEqual([])
      actor.stop()
    }
  })

  it('the placeholder actors: connect says what is missing; disconnect, probe and watch do nothing', async () => {
    const actor = createActor(connectionMachine, { input: { ...base, maxAttempts: 1 }, inspect: coverage.inspect })
    const failed = new Promise<ConnectionEmitted>((resolve) => actor.on('connection.failed', resolve))
    actor.start()
    actor.send({ type: 'connect' })
    expect(await failed).toMatchObject({ code: 'connectFailed', message: "connection 'store': no connect actor provided" })
    actor.stop()

    // The default disconnect closes nothing and resolves: a stop goes to stopped without waiting out the timeout.
    const connects = heldPromise<unknown, { name: string }>()
    const stopping = createActor(connectionMachine.provide({ actors: { connect: connects.logic } }), { input: base, clock: new SimulatedClock() })
    stopping.start()
    stopping.send({ type: 'connect' })
    connects.one().resolve(undefined)
    await settle()
    expect(stopping.getSnapshot().value).toBe('connected')
    stopping.send({ type: 'stop' })
    await settle()
    expect(stopping.getSnapshot().status).toBe('done')
  })

  it('is the machine named connection', () => {
    expect(connectionMachine.id).toBe('connection')
  })

  it('covers every state and transition of the machine', () => {
    coverage.assertComplete()
  })
})
