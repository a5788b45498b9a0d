import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { createActor, SimulatedClock } from 'xstate'
import type { AnyEventObject, AnyMachineSnapshot, AnyStateMachine } from 'xstate'
import { adjacencyMapToArray, getAdjacencyMap, getShortestPaths } from 'xstate/graph'
import {
  circuitBreakerMachine,
  defaultBreakerSettings,
  isCallPermitted,
  tryAcquirePermission,
  type CircuitBreakerEmitted,
  type CircuitBreakerInput,
  type CircuitBreakerSettings,
} from '../../machines/circuitBreaker.js'
import { MachineCoverage } from '../helpers/coverage.js'

const coverage = new MachineCoverage(circuitBreakerMachine)

function startBreaker(input: CircuitBreakerInput) {
  const clock = new SimulatedClock()
  const actor = createActor(circuitBreakerMachine, { input, clock, inspect: coverage.inspect })
  const emitted: CircuitBreakerEmitted[] = []
  actor.on('*', (event) => emitted.push(event))
  actor.start()
  return { actor, clock, emitted }
}

type Running = ReturnType<typeof startBreaker>

/** Advances the clock to 1 ms before the delay (nothing may happen), then to the delay. */
function advanceExactly({ actor, clock }: Running, ms: number): void {
  const before = actor.getSnapshot().value
  clock.increment(ms - 1)
  expect(actor.getSnapshot().value).toEqual(before)
  clock.increment(1)
}

function cause(run: Running, event: AnyEventObject): void {
  if (event.type === 'xstate.after.openDuration.circuitBreaker.open') return advanceExactly(run, run.actor.getSnapshot().context.openDurationMs)
  if (event.type === 'call.permitted') {
    expect(tryAcquirePermission(run.actor)).toBe(true)
    return
  }
  run.actor.send(event as Parameters<typeof run.actor.send>[0])
}

describe('circuit breaker, model-based', () => {
  const input: CircuitBreakerInput = {
    name: 'store',
    failureRateThreshold: 50,
    slidingWindowSize: 3,
    minimumNumberOfCalls: 2,
    slowCallDurationMs: 100,
    openDurationMs: 1_000,
    halfOpenProbes: 2,
  }
  const model: AnyStateMachine = circuitBreakerMachine
  const allEvents: AnyEventObject[] = [
    { type: 'call.succeeded', durationMs: 10 },
    { type: 'call.succeeded', durationMs: 500 },
    { type: 'call.failed', reason: 'timeout' },
    { type: 'call.permitted' },
    { type: 'reset' },
    { type: 'forceOpen' },
    { type: 'xstate.after.openDuration.circuitBreaker.open' },
  ]
  const options = { input, limit: 10_000, events: (snapshot: AnyMachineSnapshot) => allEvents.filter((e) => snapshot.can(e)) }
  const serialize = (s: AnyMachineSnapshot) => JSON.stringify({ value: s.value, context: s.context })
  const adjacency = getAdjacencyMap(model, options)
  const shortest = new Map(getShortestPaths(model, options).map((p) => [serialize(p.state), p]))
  const label = (e: AnyEventObject) => (e.type === 'call.succeeded' ? `${e.type}(${e.durationMs} ms)` : e.type)
  const edges = adjacencyMapToArray(adjacency).map(({ state, event, nextState: next }) => {
    const head = shortest.get(serialize(state))!
    return { head, event, next, name: `${head.steps.slice(1).map((s) => label(s.event)).join(' → ') || '(start)'} → ${label(event)}` }
  })

  it('the model reaches every state', () => {
    expect(new Set([...shortest.values()].map((p) => p.state.value))).toEqual(new Set(['closed', 'open', 'halfOpen']))
  })

  it.each(edges.map((e) => [e.name, e] as const))('%s', (_name, { head, event, next }) => {
    const run = startBreaker(input)
    expect(run.emitted).toEqual([{ type: 'breaker.closed', name: 'store', failureRate: 0 }])
    let previous = head.steps[0]!.state
    for (const step of [...head.steps.slice(1), { event, state: next }]) {
      run.emitted.length = 0
      cause(run, step.event)
      const actual = run.actor.getSnapshot()
      expect(actual.value).toEqual(step.state.value)
      expect(actual.context).toEqual(step.state.context)
      expect(isCallPermitted(actual)).toBe(isCallPermitted(step.state as typeof actual))
      const entered = step.event.type === 'reset' || previous.value !== step.state.value ? step.state.value : null
      const expected = entered ? [{ type: `breaker.${entered === 'halfOpen' ? 'halfOpened' : entered === 'open' ? 'opened' : 'closed'}`, name: 'store', failureRate: step.state.context.failureRate }] : []
      expect(run.emitted).toEqual(expected)
      previous = step.state
    }
    run.actor.stop()
  })
})

// ---------------------------------------------------------------------------------------------
// An independent reference: the breaker as a loop over an array, no xstate.

type Step = { kind: 'call'; durationMs: number } | { kind: 'fail' } | { kind: 'tick'; ms: number } | { kind: 'permit' }
type BreakerState = 'closed' | 'open' | 'halfOpen'

function referenceBreaker(s: CircuitBreakerSettings, steps: Step[]): Array<{ state: BreakerState; permitted: boolean }> {
  let state: BreakerState = 'closed'
  let recent: boolean[] = [] // true = bad call
  let now = 0
  let openedAt = 0
  let permits = 0
  let goodProbes = 0
  const out: Array<{ state: BreakerState; permitted: boolean }> = []
  for (const step of steps) {
    if (step.kind === 'tick') {
      now += step.ms
      if (state === 'open' && now - openedAt >= s.openDurationMs) {
        state = 'halfOpen'
        permits = 0
        goodProbes = 0
      }
    } else if (step.kind === 'permit') {
      if (state === 'halfOpen' && permits < s.halfOpenProbes) permits++
    } else {
      const bad = step.kind === 'fail' || step.durationMs > s.slowCallDurationMs
      if (state === 'closed') {
        recent.push(bad)
        if (recent.length > s.slidingWindowSize) recent.shift()
        const bads = recent.filter(Boolean).length
        if (recent.length >= Math.min(s.minimumNumberOfCalls, s.slidingWindowSize) && bads * 100 >= s.failureRateThreshold * recent.length) {
          state = 'open'
          openedAt = now
        }
      } else if (state === 'halfOpen') {
        if (bad) {
          state = 'open'
          openedAt = now
        } else if (++goodProbes >= s.halfOpenProbes) {
          state = 'closed'
          recent = []
        }
      }
    }
    out.push({ state, permitted: state === 'closed' || (state === 'halfOpen' && permits < s.halfOpenProbes) })
  }
  return out
}

describe('circuit breaker against the reference model (fast-check)', () => {
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
        fc.record({ kind: fc.constant('call' as const), durationMs: fc.integer({ min: 0, max: 2 * s.slowCallDurationMs }) }),
        fc.record({ kind: fc.constant('fail' as const) }),
        fc.record({ kind: fc.constant('tick' as const), ms: fc.integer({ min: 1, max: Math.ceil(s.openDurationMs * 1.5) }) }),
        fc.record({ kind: fc.constant('permit' as const) }),
      ),
      { maxLength: 80 },
    )

  function check(settings: CircuitBreakerSettings, steps: Step[]): void {
    const expected = referenceBreaker(settings, steps)
    const run = startBreaker({ name: 'store', ...settings })
    steps.forEach((step, i) => {
      let permitted: boolean | undefined
      if (step.kind === 'tick') run.clock.increment(step.ms)
      else if (step.kind === 'permit') permitted = tryAcquirePermission(run.actor)
      else if (step.kind === 'fail') run.actor.send({ type: 'call.failed', reason: 'boom' })
      else run.actor.send({ type: 'call.succeeded', durationMs: step.durationMs })
      if (permitted !== undefined) expect(permitted, `step ${i}: permission`).toBe(i === 0 ? true : expected[i - 1]!.permitted)
      const snapshot = run.actor.getSnapshot()
      expect({ state: snapshot.value, permitted: isCallPermitted(snapshot) }, `after step ${i} (${JSON.stringify(step)})`).toEqual(expected[i])
    })
    run.actor.stop()
  }

  it('matches the reference after every step, for random settings', () => {
    fc.assert(fc.property(settingsArb.chain((s) => fc.tuple(fc.constant(s), stepsArb(s))), ([s, steps]) => check(s, steps)), { numRuns: 400 })
  })

  it.each([
    ['a window of one, trip on any failure', { failureRateThreshold: 100, slidingWindowSize: 1, minimumNumberOfCalls: 1, slowCallDurationMs: 5, openDurationMs: 10, halfOpenProbes: 1 }],
    ['minimum larger than the window (clamped)', { failureRateThreshold: 50, slidingWindowSize: 3, minimumNumberOfCalls: 10, slowCallDurationMs: 5, openDurationMs: 10, halfOpenProbes: 2 }],
    ['a low threshold', { failureRateThreshold: 1, slidingWindowSize: 5, minimumNumberOfCalls: 3, slowCallDurationMs: 5, openDurationMs: 20, halfOpenProbes: 3 }],
    ['the defaults', defaultBreakerSettings],
  ] as const)('matches the reference with %s', (_name, settings) => {
    fc.assert(fc.property(stepsArb(settings), (steps) => check(settings, steps)), { numRuns: 150 })
  })
})

describe('circuit breaker, behaviour', () => {
  const settings: CircuitBreakerInput = { name: 'store', failureRateThreshold: 50, slidingWindowSize: 4, minimumNumberOfCalls: 4, slowCallDurationMs: 100, openDurationMs: 30_000, halfOpenProbes: 2 }

  it('opens only once the minimum number of calls is recorded, and reports the rate', () => {
    const run = startBreaker(settings)
    run.actor.send({ type: 'call.failed' })
    run.actor.send({ type: 'call.failed' })
    run.actor.send({ type: 'call.failed' })
    expect(run.actor.getSnapshot().value).toBe('closed')
    run.actor.send({ type: 'call.succeeded', durationMs: 5 })
    expect(run.actor.getSnapshot().value).toBe('open')
    expect(run.emitted.at(-1)).toEqual({ type: 'breaker.opened', name: 'store', failureRate: 75 })
    expect(isCallPermitted(run.actor.getSnapshot())).toBe(false)
    expect(tryAcquirePermission(run.actor)).toBe(false)
  })

  it('counts a success slower than slowCallDurationMs as a failure, one at the threshold as a success', () => {
    const run = startBreaker({ ...settings, failureRateThreshold: 100, minimumNumberOfCalls: 2, slidingWindowSize: 2 })
    run.actor.send({ type: 'call.succeeded', durationMs: 101 })
    run.actor.send({ type: 'call.succeeded', durationMs: 100 })
    expect(run.actor.getSnapshot().context.window).toEqual(['failure', 'success'])
    expect(run.actor.getSnapshot().value).toBe('closed')
    run.actor.send({ type: 'call.succeeded', durationMs: 5_000 })
    expect(run.actor.getSnapshot().value).toBe('closed')
    run.actor.send({ type: 'call.succeeded', durationMs: 101 })
    expect(run.actor.getSnapshot().value).toBe('open')
    expect(run.emitted.at(-1)).toEqual({ type: 'breaker.opened', name: 'store', failureRate: 100 })
  })

  it('the window forgets outcomes older than its size', () => {
    const run = startBreaker(settings)
    for (const durationMs of [1, 1, 1, 1, 1, 1]) run.actor.send({ type: 'call.succeeded', durationMs })
    run.actor.send({ type: 'call.failed' })
    run.actor.send({ type: 'call.failed' })
    expect(run.actor.getSnapshot().context.window).toEqual(['success', 'success', 'failure', 'failure'])
    expect(run.actor.getSnapshot().value).toBe('open')
  })

  it('halfOpen hands out exactly halfOpenProbes permissions, closes when they all succeed', () => {
    const run = startBreaker(settings)
    run.actor.send({ type: 'forceOpen' })
    advanceExactly(run, 30_000)
    expect(run.actor.getSnapshot().value).toBe('halfOpen')
    expect(run.emitted.at(-1)).toMatchObject({ type: 'breaker.halfOpened', name: 'store' })
    // Five callers race for two probe slots.
    expect([1, 2, 3, 4, 5].map(() => tryAcquirePermission(run.actor))).toEqual([true, true, false, false, false])
    run.actor.send({ type: 'call.succeeded', durationMs: 3 })
    expect(run.actor.getSnapshot().value).toBe('halfOpen')
    run.actor.send({ type: 'call.succeeded', durationMs: 3 })
    expect(run.actor.getSnapshot().value).toBe('closed')
    expect(run.actor.getSnapshot().context.window).toEqual([])
    expect(run.emitted.at(-1)).toEqual({ type: 'breaker.closed', name: 'store', failureRate: 0 })
  })

  it('any failed or slow probe opens it again for a full cool-down', () => {
    const run = startBreaker(settings)
    run.actor.send({ type: 'forceOpen' })
    run.clock.increment(30_000)
    run.actor.send({ type: 'call.succeeded', durationMs: 3 })
    run.actor.send({ type: 'call.succeeded', durationMs: 500 })
    expect(run.actor.getSnapshot().value).toBe('open')
    expect(run.emitted.at(-1)).toEqual({ type: 'breaker.opened', name: 'store', failureRate: 50 })
    run.clock.increment(29_999)
    expect(run.actor.getSnapshot().value).toBe('open')
    run.clock.increment(1)
    run.actor.send({ type: 'call.failed', reason: 'ECONNREFUSED' })
    expect(run.actor.getSnapshot().value).toBe('open')
  })

  it('reset closes from anywhere; outcomes while open are ignored', () => {
    const run = startBreaker(settings)
    run.actor.send({ type: 'forceOpen' })
    run.actor.send({ type: 'call.succeeded', durationMs: 1 })
    expect(run.actor.getSnapshot().context.window).toEqual([])
    run.actor.send({ type: 'reset' })
    expect(run.actor.getSnapshot().value).toBe('closed')
    // The cool-down timer was cancelled with the state.
    run.clock.increment(60_000)
    expect(run.actor.getSnapshot().value).toBe('closed')
  })

  it('takes the defaults for settings not given, and announces its initial state', () => {
    const run = startBreaker({ name: 'realtime' })
    expect(run.actor.getSnapshot().context).toMatchObject(defaultBreakerSettings)
    expect(run.emitted).toEqual([{ type: 'breaker.closed', name: 'realtime', failureRate: 0 }])
    expect(defaultBreakerSettings).toEqual({
      failureRateThreshold: 50,
      slidingWindowSize: 20,
      minimumNumberOfCalls: 10,
      slowCallDurationMs: 2_000,
      openDurationMs: 10_000,
      halfOpenProbes: 5,
    })
  })

  it('covers every state and transition of the machine', () => {
    coverage.assertComplete()
  })
})
