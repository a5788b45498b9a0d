import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { createActor, SimulatedClock } from 'xstate'
import type { AnyActorRef } from 'xstate'
import {
  circuitBreakerMachine,
  defaultBreakerSettings,
  isCallPermitted,
  tryAcquirePermission,
  type CallOutcome,
  type CircuitBreakerEmitted,
  type CircuitBreakerInput,
  type CircuitBreakerSettings,
  type CircuitBreakerSnapshot,
} from '../../machines/circuitBreaker.js'
import { MachineCoverage } from '../helpers/coverage.js'
import { advanceClock, checkAgainstModel, edgeName, emittedBy, modelEdges, ownerOf, sendsOf, type Driver, type ReferenceModel } from '../helpers/machines.js'

const coverage = new MachineCoverage(circuitBreakerMachine)

// ---------------------------------------------------------------------------------------------
// The oracle: the breaker as the docs describe it, written out by hand. No xstate in it.

type BreakerState = 'closed' | 'open' | 'halfOpen'

/** What the test can do to a breaker. */
type Step =
  | { type: 'ok'; ms: number }
  | { type: 'fail' }
  | { type: 'permit' }
  /** `call.permitted` sent straight to the breaker, not through tryAcquirePermission. */
  | { type: 'slot' }
  | { type: 'reset' }
  | { type: 'forceOpen' }
  | { type: 'probe' }
  | { type: 'wait'; ms: number }

interface Breaker {
  state: BreakerState
  window: CallOutcome[]
  failureRate: number
  probesPermitted: number
  probesSucceeded: number
  /** Time spent in open so far (the cool-down runs from the last entry). */
  openFor: number
  /** Outputs of the last step: the reports made, and what tryAcquirePermission answered. */
  reports: CircuitBreakerEmitted[]
  granted: boolean | null
}

const reportType = { closed: 'breaker.closed', open: 'breaker.opened', halfOpen: 'breaker.halfOpened' } as const

function breakerModel(name: string, s: CircuitBreakerSettings): ReferenceModel<Breaker, Step> {
  const rateOf = (w: CallOutcome[]) => (w.length === 0 ? 0 : (w.filter((o) => o === 'failure').length * 100) / w.length)
  const trips = (w: CallOutcome[]) =>
    w.length >= Math.min(s.minimumNumberOfCalls, s.slidingWindowSize) && w.filter((o) => o === 'failure').length * 100 >= s.failureRateThreshold * w.length
  const report = (b: Breaker, to: BreakerState): CircuitBreakerEmitted => ({ type: reportType[to], name, failureRate: b.failureRate })
  /** Entering a state (re-entering closed on reset too): its entry effects and its report. */
  const enter = (b: Breaker, to: BreakerState): Breaker => {
    if (to === 'closed') {
      const cleared = { ...b, state: to, window: [], failureRate: 0 }
      return { ...cleared, reports: [...b.reports, report(cleared, to)] }
    }
    if (to === 'open') return { ...b, state: to, openFor: 0, reports: [...b.reports, report(b, to)] }
    // halfOpen reports the rate it opened with, then starts a fresh probe window.
    const entered = { ...b, state: to, window: [], probesPermitted: 0, probesSucceeded: 0, reports: [...b.reports, report(b, to)] }
    return entered.probesSucceeded >= s.halfOpenProbes ? enter(entered, 'closed') : entered
  }
  const record = (b: Breaker, outcome: CallOutcome): Breaker => {
    const window = [...b.window, outcome].slice(-s.slidingWindowSize)
    return { ...b, window, failureRate: rateOf(window) }
  }
  const outcomeOf = (step: Step): CallOutcome => (step.type === 'ok' && step.ms <= s.slowCallDurationMs ? 'success' : 'failure')

  const step = (prior: Breaker, e: Step): Breaker => {
    const b: Breaker = { ...prior, reports: [], granted: null }
    if (e.type === 'permit') {
      if (b.state === 'closed') return { ...b, granted: true }
      if (b.state === 'halfOpen' && b.probesPermitted < s.halfOpenProbes) return { ...b, granted: true, probesPermitted: b.probesPermitted + 1 }
      return { ...b, granted: false }
    }
    // A slot taken by hand still cannot overrun halfOpenProbes; elsewhere it means nothing.
    if (e.type === 'slot') return b.state === 'halfOpen' && b.probesPermitted < s.halfOpenProbes ? { ...b, probesPermitted: b.probesPermitted + 1 } : b
    switch (b.state) {
      case 'closed': {
        if (e.type === 'ok' || e.type === 'fail') {
          const next = record(b, outcomeOf(e))
          return trips(next.window) ? enter(next, 'open') : next
        }
        if (e.type === 'reset') return enter(b, 'closed')
        if (e.type === 'forceOpen') return enter(b, 'open')
        return b // probe, wait: nothing
      }
      case 'open': {
        if (e.type === 'reset') return enter(b, 'closed')
        if (e.type === 'probe') return enter(b, 'halfOpen')
        if (e.type === 'wait') return b.openFor + e.ms >= s.openDurationMs ? enter(b, 'halfOpen') : { ...b, openFor: b.openFor + e.ms }
        return b // outcomes of calls made before it opened, and forceOpen, change nothing
      }
      case 'halfOpen': {
        if (e.type === 'ok' || e.type === 'fail') {
          const outcome = outcomeOf(e)
          const next = record(b, outcome)
          if (outcome === 'failure') return enter(next, 'open')
          const counted = { ...next, probesSucceeded: next.probesSucceeded + 1 }
          return counted.probesSucceeded >= s.halfOpenProbes ? enter(counted, 'closed') : counted
        }
        if (e.type === 'reset') return enter(b, 'closed')
        if (e.type === 'forceOpen') return enter(b, 'open')
        return b // probe, wait
      }
    }
  }

  const initial: Breaker = { state: 'closed', window: [], failureRate: 0, probesPermitted: 0, probesSucceeded: 0, openFor: 0, reports: [{ type: 'breaker.closed', name, failureRate: 0 }], granted: null }
  const events = (b: Breaker): Step[] => {
    const waits: Step[] =
      b.state === 'open'
        ? [...(s.openDurationMs - b.openFor > 1 ? [{ type: 'wait', ms: s.openDurationMs - b.openFor - 1 } as const] : []), { type: 'wait', ms: s.openDurationMs - b.openFor }]
        : [{ type: 'wait', ms: s.openDurationMs * 10 }]
    const calls: Step[] = [{ type: 'ok', ms: s.slowCallDurationMs }, { type: 'ok', ms: s.slowCallDurationMs + 1 }, { type: 'fail' }]
    return [...calls, { type: 'permit' }, { type: 'slot' }, { type: 'reset' }, { type: 'forceOpen' }, { type: 'probe' }, ...waits]
  }
  // What decides the future: the window outside open (open only waits to clear it), the cool-down
  // in open, the probe counts in halfOpen (elsewhere they are stale until halfOpen resets them).
  const key = (b: Breaker) =>
    JSON.stringify([b.state, b.failureRate, b.state === 'open' ? b.openFor : b.window, b.state === 'halfOpen' ? [b.probesPermitted, b.probesSucceeded] : null])
  return { initial, step, events, key }
}

const label = (e: Step) => (e.type === 'ok' || e.type === 'wait' ? `${e.type}(${e.ms})` : e.type)

// ---------------------------------------------------------------------------------------------
// Driving the real breaker.

interface Run {
  clock: SimulatedClock
  breaker: () => AnyActorRef
  stop: () => void
  emitted: { take(): unknown[] }
  received?: { take(): unknown[] }
  granted: boolean | null
}

function observe(run: Run) {
  const snapshot = run.breaker().getSnapshot() as CircuitBreakerSnapshot
  const { window, failureRate, probesPermitted, probesSucceeded } = snapshot.context
  return {
    state: snapshot.value,
    window,
    failureRate,
    probesPermitted,
    probesSucceeded,
    permitted: isCallPermitted(snapshot),
    granted: run.granted,
    reports: run.emitted.take(),
    ...(run.received ? { received: run.received.take() } : {}),
  }
}

/** What the model says the observation must be; `permitted` is the documented rule: closed, or halfOpen with a slot left. */
function expected(b: Breaker, s: CircuitBreakerSettings, withOwner: boolean) {
  const { state, window, failureRate, probesPermitted, probesSucceeded, granted, reports } = b
  const permitted = state === 'closed' || (state === 'halfOpen' && probesPermitted < s.halfOpenProbes)
  return { state, window, failureRate, probesPermitted, probesSucceeded, permitted, granted, reports, ...(withOwner ? { received: reports } : {}) }
}

function apply(run: Run, e: Step): void {
  run.granted = null
  const breaker = run.breaker()
  if (e.type === 'ok') breaker.send({ type: 'call.succeeded', durationMs: e.ms })
  else if (e.type === 'fail') breaker.send({ type: 'call.failed', reason: 'timeout' })
  else if (e.type === 'permit') run.granted = tryAcquirePermission(breaker as Parameters<typeof tryAcquirePermission>[0])
  else if (e.type === 'slot') breaker.send({ type: 'call.permitted' })
  else if (e.type === 'wait') advanceClock(run.clock, e.ms)
  else breaker.send({ type: e.type })
}

/** The breaker as the root actor, its emitted events recorded from the start. */
function rootDriver(name: string, settings: CircuitBreakerSettings): Driver<Breaker, Step, Run> {
  return {
    start: () => {
      const clock = new SimulatedClock()
      const actor = createActor(circuitBreakerMachine, { input: { name, ...settings }, clock, inspect: coverage.inspect })
      const emitted = emittedBy(actor)
      actor.start()
      return { clock, breaker: () => actor, stop: () => actor.stop(), emitted, granted: null }
    },
    apply,
    observe,
    expected: (b) => expected(b, settings, false),
    stop: (run) => run.stop(),
  }
}

/** The breaker as the child of a tiny owner registered under the systemId `reportTo` names. */
function ownedDriver(name: string, settings: CircuitBreakerSettings): Driver<Breaker, Step, Run> {
  return {
    start: () => {
      const clock = new SimulatedClock()
      const owner = ownerOf(circuitBreakerMachine, 'breaker', { name, reportTo: 'storeDependency', ...settings })
      const actor = createActor(owner.machine, { systemId: 'storeDependency', clock, inspect: coverage.inspect }).start()
      const breaker = owner.child(actor)
      const emitted = emittedBy(breaker)
      // The initial report went out before anyone could listen to the child: only the owner saw it.
      const initial = owner.take()
      let atStart = true
      return {
        clock,
        breaker: () => breaker,
        stop: () => actor.stop(),
        emitted: { take: () => (atStart ? initial : emitted.take()) },
        received: { take: () => (atStart ? ((atStart = false), initial) : owner.take()) },
        granted: null,
      }
    },
    apply,
    observe,
    expected: (b) => expected(b, settings, true),
    stop: (run) => run.stop(),
  }
}

// ---------------------------------------------------------------------------------------------

describe('circuit breaker against the reference model, every edge of its graph', () => {
  const settings: CircuitBreakerSettings = { failureRateThreshold: 50, slidingWindowSize: 3, minimumNumberOfCalls: 2, slowCallDurationMs: 100, openDurationMs: 1_000, halfOpenProbes: 2 }
  const model = breakerModel('store', settings)
  const edges = modelEdges(model)

  it('the model reaches every state', () => {
    expect(new Set(edges.map((e) => e.to.state))).toEqual(new Set(['closed', 'open', 'halfOpen']))
  })

  // Each edge, replayed on a breaker owned by a parent registered as its reportTo: every report is
  // both emitted and received by the owner.
  it.each(edges.map((e) => [edgeName(e, label), e] as const))('%s', async (_name, edge) => {
    await checkAgainstModel(model, ownedDriver('store', settings), [...edge.path, edge.event], label)
  })
})

describe('circuit breaker against the reference model, random settings and steps (fast-check)', () => {
  const settingsArb = fc.record({
    failureRateThreshold: fc.oneof(fc.constantFrom(1, 25, 34, 50, 67, 100), fc.integer({ min: 1, max: 100 })),
    slidingWindowSize: fc.integer({ min: 1, max: 6 }),
    minimumNumberOfCalls: fc.integer({ min: 1, max: 8 }),
    slowCallDurationMs: fc.integer({ min: 1, max: 50 }),
    openDurationMs: fc.integer({ min: 1, max: 100 }),
    halfOpenProbes: fc.integer({ min: 1, max: 4 }),
  })
  const stepsArb = (s: CircuitBreakerSettings) =>
    fc.array(
      fc.oneof(
        { arbitrary: fc.record({ type: fc.constant('ok' as const), ms: fc.integer({ min: 0, max: 2 * s.slowCallDurationMs }) }), weight: 4 },
        { arbitrary: fc.constant({ type: 'fail' as const }), weight: 3 },
        { arbitrary: fc.record({ type: fc.constant('wait' as const), ms: fc.integer({ min: 1, max: Math.ceil(s.openDurationMs * 1.5) }) }), weight: 2 },
        { arbitrary: fc.constantFrom({ type: 'permit' as const }, { type: 'slot' as const }), weight: 3 },
        { arbitrary: fc.constantFrom({ type: 'reset' as const }, { type: 'forceOpen' as const }, { type: 'probe' as const }), weight: 1 },
      ),
      { maxLength: 60 },
    )

  it('matches the model after every step', async () => {
    await fc.assert(
      fc.asyncProperty(settingsArb.chain((s) => fc.tuple(fc.constant(s), stepsArb(s))), async ([s, steps]) => {
        await checkAgainstModel(breakerModel('store', s), rootDriver('store', s), steps, label)
      }),
      { numRuns: 150 },
    )
  })

  it('matches the model with the default settings', async () => {
    await fc.assert(
      fc.asyncProperty(stepsArb(defaultBreakerSettings), async (steps) => {
        await checkAgainstModel(breakerModel('realtime', defaultBreakerSettings), rootDriver('realtime', defaultBreakerSettings), steps, label)
      }),
      { numRuns: 50 },
    )
  })
})

describe('circuit breaker, behaviour stated by hand', () => {
  const settings: CircuitBreakerInput = { name: 'store', failureRateThreshold: 50, slidingWindowSize: 4, minimumNumberOfCalls: 4, slowCallDurationMs: 100, openDurationMs: 30_000, halfOpenProbes: 2 }

  function start(input: CircuitBreakerInput) {
    const clock = new SimulatedClock()
    const actor = createActor(circuitBreakerMachine, { input, clock, inspect: coverage.inspect })
    const emitted: CircuitBreakerEmitted[] = []
    actor.on('*', (event) => emitted.push(event))
    actor.start()
    return { actor, clock, emitted }
  }

  it('opens only once the minimum number of calls is recorded, and reports the rate', () => {
    const run = start(settings)
    run.actor.send({ type: 'call.failed' })
    run.actor.send({ type: 'call.failed' })
    run.actor.send({ type: 'call.failed' })
    expect(run.actor.getSnapshot().value).toBe('closed')
    run.actor.send({ type: 'call.succeeded', durationMs: 5 })
    expect(run.actor.getSnapshot().value).toBe('open')
    expect(run.emitted.at(-1)).toStrictEqual({ type: 'breaker.opened', name: 'store', failureRate: 75 })
    expect(tryAcquirePermission(run.actor)).toBe(false)
  })

  it('a success slower than slowCallDurationMs counts as a failure, one at the limit as a success', () => {
    const run = start({ ...settings, failureRateThreshold: 100, minimumNumberOfCalls: 2, slidingWindowSize: 2 })
    run.actor.send({ type: 'call.succeeded', durationMs: 101 })
    run.actor.send({ type: 'call.succeeded', durationMs: 100 })
    expect(run.actor.getSnapshot().context.window).toEqual(['failure', 'success'])
    expect(run.actor.getSnapshot().value).toBe('closed')
    run.actor.send({ type: 'call.succeeded', durationMs: 5_000 })
    expect(run.actor.getSnapshot().value).toBe('closed')
    run.actor.send({ type: 'call.succeeded', durationMs: 101 })
    expect(run.actor.getSnapshot().value).toBe('open')
  })

  it('halfOpen hands out exactly halfOpenProbes permissions to racing callers, and closes when they all succeed', () => {
    const run = start(settings)
    run.actor.send({ type: 'forceOpen' })
    run.clock.increment(30_000)
    expect(run.actor.getSnapshot().value).toBe('halfOpen')
    expect([1, 2, 3, 4, 5].map(() => tryAcquirePermission(run.actor))).toEqual([true, true, false, false, false])
    run.actor.send({ type: 'call.succeeded', durationMs: 3 })
    run.actor.send({ type: 'call.succeeded', durationMs: 3 })
    expect(run.actor.getSnapshot().value).toBe('closed')
    expect(run.emitted.map((e) => e.type)).toEqual(['breaker.closed', 'breaker.opened', 'breaker.halfOpened', 'breaker.closed'])
  })

  it('probe ends the cool-down at once; forceOpen while open does not restart it', () => {
    const run = start(settings)
    run.actor.send({ type: 'forceOpen' })
    run.clock.increment(20_000)
    run.actor.send({ type: 'forceOpen' })
    run.clock.increment(10_000)
    expect(run.actor.getSnapshot().value).toBe('halfOpen')
    run.actor.send({ type: 'call.failed' })
    expect(run.actor.getSnapshot().value).toBe('open')
    run.actor.send({ type: 'probe' })
    expect(run.actor.getSnapshot().value).toBe('halfOpen')
    // The cancelled cool-down does not fire later.
    run.actor.send({ type: 'call.permitted' })
    run.clock.increment(30_000)
    expect(run.actor.getSnapshot().context.probesPermitted).toBe(1)
  })

  it('tryAcquirePermission sends nothing while closed, and sends call.permitted only in halfOpen', () => {
    const inspected: string[] = []
    let breaker: unknown
    const actor = createActor(circuitBreakerMachine, {
      input: settings,
      clock: new SimulatedClock(),
      inspect: (e) => void (e.type === '@xstate.event' && e.actorRef === breaker && inspected.push(e.event.type)),
    })
    breaker = actor
    actor.start()
    inspected.length = 0
    expect(tryAcquirePermission(actor)).toBe(true)
    expect(inspected).toEqual([])
    actor.send({ type: 'forceOpen' })
    expect(tryAcquirePermission(actor)).toBe(false)
    actor.send({ type: 'probe' })
    expect(tryAcquirePermission(actor)).toBe(true)
    expect(inspected).toEqual(['forceOpen', 'probe', 'call.permitted'])
  })

  it('takes the defaults for settings not given or given as undefined', () => {
    const run = start({ name: 'realtime', failureRateThreshold: undefined, openDurationMs: undefined, halfOpenProbes: 3 })
    expect(run.actor.getSnapshot().context).toMatchObject({ ...defaultBreakerSettings, halfOpenProbes: 3 })
    expect(run.emitted).toStrictEqual([{ type: 'breaker.closed', name: 'realtime', failureRate: 0 }])
    expect(defaultBreakerSettings).toEqual({
      failureRateThreshold: 50,
      slidingWindowSize: 20,
      minimumNumberOfCalls: 10,
      slowCallDurationMs: 2_000,
      openDurationMs: 10_000,
      halfOpenProbes: 5,
    })
  })

  it('sends nothing to anyone without reportTo, and nothing (without failing) when reportTo names no actor', () => {
    for (const reportTo of [undefined, 'nobody']) {
      let breaker: AnyActorRef | undefined
      const sends = sendsOf(() => breaker)
      const actor = createActor(circuitBreakerMachine, { input: { ...settings, reportTo }, inspect: sends.inspect })
      breaker = actor
      const errors: unknown[] = []
      actor.subscribe({ error: (e) => void errors.push(e) })
      actor.start()
      actor.send({ type: 'forceOpen' })
      actor.send({ type: 'reset' })
      expect(actor.getSnapshot().status).toBe('active')
      expect(errors).toEqual([])
      expect(sends.sent).toEqual([])
      actor.stop()
    }
  })

  it('is the machine named circuitBreaker (the inspector and the coverage report show it)', () => {
    expect(circuitBreakerMachine.id).toBe('circuitBreaker')
  })

  it('covers every state and transition of the machine', () => {
    coverage.assertComplete()
  })
})
