import { assign, enqueueActions, setup } from 'xstate'
import type { ActorRefFrom, SnapshotFrom } from 'xstate'

export interface CircuitBreakerSettings {
  /** Percent of failed (or slow) calls in the window at which the breaker opens. */
  failureRateThreshold: number
  /** How many of the most recent outcomes the failure rate is computed over. */
  slidingWindowSize: number
  /** Outcomes needed in the window before the rate is trusted (clamped to the window size). */
  minimumNumberOfCalls: number
  /** A call that succeeds but takes longer than this counts as a failure. */
  slowCallDurationMs: number
  /** Cool-down in `open` before probes are let through. */
  openDurationMs: number
  /** Probe calls permitted in `halfOpen`; all must succeed to close. */
  halfOpenProbes: number
}

/**
 * Defaults for a relay that writes a batch about every 100 ms to a store it owns.
 *
 * - failureRateThreshold 50 % — as resilience4j and opossum: a majority of failures is not noise.
 * - slidingWindowSize 20, minimumNumberOfCalls 10 — resilience4j's 100/100 means ten seconds of
 *   failing batches (each retried and each growing the backlog) before it reacts; 10 calls is about
 *   one second of writes, enough that a single timeout or two cannot trip it, and a window of 20
 *   forgets an old incident after two seconds of healthy traffic.
 * - halfOpenProbes 5 — resilience4j's 10 takes a second of traffic to decide; opossum's single
 *   probe closes on one lucky call and flaps. Five consecutive successes are solid evidence and
 *   cost at most five calls per cool-down against a store that may still be down.
 * - openDurationMs 10 s — shorter than opossum's 30 s and resilience4j's 60 s, which protect shared
 *   remote services from many clients. Here the dependency is our own database, nothing is lost
 *   while open (batches go to the durable DLQ), probe load is bounded by 5 calls / 10 s, and every
 *   second of cool-down after the store is back is a second of DLQ backlog and stale dashboards.
 * - slowCallDurationMs 2 s — a batch insert takes ~10–20 ms here; resilience4j's 60 s would let a
 *   stalled store hold every flush for a minute before counting it.
 */
export const defaultBreakerSettings: CircuitBreakerSettings = {
  failureRateThreshold: 50,
  slidingWindowSize: 20,
  minimumNumberOfCalls: 10,
  slowCallDurationMs: 2_000,
  openDurationMs: 10_000,
  halfOpenProbes: 5,
}

export interface CircuitBreakerInput extends Partial<CircuitBreakerSettings> {
  /** The guarded dependency, e.g. 'store'; carried by every emitted event. */
  name: string
  /** systemId of the machine told of every change (the dependency that owns this breaker); none when absent. */
  reportTo?: string
}

export type CallOutcome = 'success' | 'failure'

export type CircuitBreakerEvent =
  | { type: 'call.succeeded'; durationMs: number }
  | { type: 'call.failed'; reason?: string }
  | { type: 'call.permitted' }
  | { type: 'reset' }
  | { type: 'forceOpen' }
  /** The dependency is reachable again (its connection was re-established): probe now, not after the cool-down. */
  | { type: 'probe' }

export type CircuitBreakerEmitted =
  | { type: 'breaker.opened'; name: string; failureRate: number }
  | { type: 'breaker.halfOpened'; name: string; failureRate: number }
  | { type: 'breaker.closed'; name: string; failureRate: number }

interface CircuitBreakerContext extends CircuitBreakerSettings {
  name: string
  reportTo: string | undefined
  /** The last `slidingWindowSize` outcomes, oldest first (in halfOpen: the probe outcomes). */
  window: CallOutcome[]
  /** Percent of failures in `window`. */
  failureRate: number
  /** halfOpen: probe slots taken with `call.permitted`. */
  probesPermitted: number
  /** halfOpen: probes that succeeded. */
  probesSucceeded: number
}

function outcomeOf(event: CircuitBreakerEvent, slowCallDurationMs: number): CallOutcome {
  return event.type === 'call.succeeded' && event.durationMs <= slowCallDurationMs ? 'success' : 'failure'
}

function failureRateOf(window: readonly CallOutcome[]): number {
  return window.length === 0 ? 0 : (window.filter((o) => o === 'failure').length * 100) / window.length
}

/**
 * A count-based circuit breaker: closed → open when the failure rate over the last
 * `slidingWindowSize` outcomes reaches the threshold; open → halfOpen after `openDuration`;
 * halfOpen → closed when `halfOpenProbes` probes succeed, → open at the first failed or slow one.
 *
 * src reports every guarded call's outcome (`call.succeeded { durationMs }` / `call.failed`) and
 * asks before each call with {@link tryAcquirePermission}. Every permitted call must report an
 * outcome (wrap calls in a timeout), or a halfOpen breaker waits for its probes forever.
 * `reset` closes and `forceOpen` trips it at once (admin, a lost connection); the normal cool-down
 * follows, unless `probe` (the connection is back) ends it early. Every change is emitted and sent
 * to `reportTo`.
 */
export const circuitBreakerMachine = setup({
  types: {
    context: {} as CircuitBreakerContext,
    input: {} as CircuitBreakerInput,
    events: {} as CircuitBreakerEvent,
    emitted: {} as CircuitBreakerEmitted,
  },
  delays: {
    openDuration: ({ context }) => context.openDurationMs,
  },
  guards: {
    isFailureRateOverThreshold: ({ context }) =>
      context.window.length >= Math.min(context.minimumNumberOfCalls, context.slidingWindowSize) &&
      context.window.filter((o) => o === 'failure').length * 100 >= context.failureRateThreshold * context.window.length,
    isSlowCall: ({ context, event }) => outcomeOf(event, context.slowCallDurationMs) === 'failure',
    hasProbeSlot: ({ context }) => context.probesPermitted < context.halfOpenProbes,
    allProbesSucceeded: ({ context }) => context.probesSucceeded >= context.halfOpenProbes,
  },
  actions: {
    recordOutcome: assign(({ context, event }) => {
      const window = [...context.window, outcomeOf(event, context.slowCallDurationMs)].slice(-context.slidingWindowSize)
      return { window, failureRate: failureRateOf(window) }
    }),
    clearWindow: assign({ window: [], failureRate: 0 }),
    startProbing: assign({ window: [], probesPermitted: 0, probesSucceeded: 0 }),
    takeProbeSlot: assign({ probesPermitted: ({ context }) => context.probesPermitted + 1 }),
    countProbeSuccess: assign({ probesSucceeded: ({ context }) => context.probesSucceeded + 1 }),
    // Emitted for observers (logs, metrics) and sent to the owner, which reacts.
    report: enqueueActions(({ context, enqueue, system }, { type }: { type: CircuitBreakerEmitted['type'] }) => {
      const event = { type, name: context.name, failureRate: context.failureRate }
      enqueue.emit(event)
      const owner = context.reportTo === undefined ? undefined : system.get(context.reportTo)
      if (owner) enqueue.sendTo(owner, event)
    }),
  },
}).createMachine({
  id: 'circuitBreaker',
  context: ({ input }) => {
    const { name, reportTo, ...overrides } = input
    const settings = { ...defaultBreakerSettings, ...definedOnly(overrides) }
    return { name, reportTo, ...settings, window: [], failureRate: 0, probesPermitted: 0, probesSucceeded: 0 }
  },
  initial: 'closed',
  states: {
    closed: {
      // Emitted on entry, the initial one included, so listeners learn the starting health.
      entry: ['clearWindow', { type: 'report', params: { type: 'breaker.closed' } }],
      always: { guard: 'isFailureRateOverThreshold', target: 'open' },
      on: {
        'call.succeeded': { actions: 'recordOutcome' },
        'call.failed': { actions: 'recordOutcome' },
        reset: { target: 'closed', reenter: true },
        forceOpen: 'open',
      },
    },
    open: {
      entry: { type: 'report', params: { type: 'breaker.opened' } },
      after: { openDuration: 'halfOpen' },
      on: { reset: 'closed', probe: 'halfOpen' },
    },
    halfOpen: {
      entry: [{ type: 'report', params: { type: 'breaker.halfOpened' } }, 'startProbing'],
      always: { guard: 'allProbesSucceeded', target: 'closed' },
      on: {
        'call.permitted': { guard: 'hasProbeSlot', actions: 'takeProbeSlot' },
        'call.succeeded': [
          { guard: 'isSlowCall', target: 'open', actions: 'recordOutcome' },
          { actions: ['recordOutcome', 'countProbeSuccess'] },
        ],
        'call.failed': { target: 'open', actions: 'recordOutcome' },
        reset: 'closed',
        forceOpen: 'open',
      },
    },
  },
})

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>
}

export type CircuitBreakerSnapshot = SnapshotFrom<typeof circuitBreakerMachine>

/** Whether a call may go to the dependency now: closed yes, open no, halfOpen while probe slots remain. */
export function isCallPermitted(snapshot: CircuitBreakerSnapshot): boolean {
  if (snapshot.matches('closed')) return true
  if (snapshot.matches('halfOpen')) return snapshot.context.probesPermitted < snapshot.context.halfOpenProbes
  return false
}

/**
 * Asks the breaker for a call and, in halfOpen, takes a probe slot in the same synchronous step,
 * so concurrent callers can never overrun `halfOpenProbes`. Returns false when the call must not be made.
 */
export function tryAcquirePermission(breaker: Pick<ActorRefFrom<typeof circuitBreakerMachine>, 'getSnapshot' | 'send'>): boolean {
  const snapshot = breaker.getSnapshot()
  if (!isCallPermitted(snapshot)) return false
  if (snapshot.matches('halfOpen')) breaker.send({ type: 'call.permitted' })
  return true
}
