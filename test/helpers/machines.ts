import { expect } from 'vitest'
import { createMachine, fromCallback, fromPromise, fromTransition, SimulatedClock } from 'xstate'
import type { AnyActorLogic, AnyActorRef, AnyEventObject, AnyMachineSnapshot, EventObject, InspectionEvent } from 'xstate'
import { adjacencyMapToArray, getAdjacencyMap, getShortestPaths } from 'xstate/graph'

/** Lets every promise settled so far, and the actors that react to it, run. */
export const settle = (): Promise<void> => new Promise<void>((resolve) => setImmediate(resolve))

// ---------------------------------------------------------------------------------------------
// Actors the test controls.

export interface HeldCall<I, O> {
  input: I
  signal: AbortSignal
  settled: boolean
  resolve: (output: O) => void
  reject: (error: unknown) => void
}

/**
 * A `fromPromise` logic whose every call waits for the test to settle it. One machine provided
 * with it can serve many runs in turn (provide() is the costly part): `reset()` between runs.
 */
export function heldPromise<O, I>() {
  const calls: Array<HeldCall<I, O>> = []
  const logic = fromPromise<O, I>(
    ({ input, signal }) =>
      new Promise<O>((resolve, reject) => {
        const call: HeldCall<I, O> = {
          input,
          signal,
          settled: false,
          resolve: (o) => ((call.settled = true), resolve(o)),
          reject: (e) => ((call.settled = true), reject(e)),
        }
        calls.push(call)
      }),
  )
  /** Calls in flight: neither settled nor abandoned (their actor stopped, so their signal aborted). */
  const live = () => calls.filter((c) => !c.settled && !c.signal.aborted)
  /** The one call in flight; fails the test when there is none or more than one. */
  const one = (): HeldCall<I, O> => {
    const now = live()
    expect(now, 'exactly one call in flight').toHaveLength(1)
    return now[0]!
  }
  const reset = () => void (calls.length = 0)
  return { logic, calls, live, one, reset }
}

export interface HeldCallbackInstance<I> {
  input: I
  sendBack: (event: AnyEventObject) => void
  stopped: boolean
}

/** A `fromCallback` logic that hands each start's `sendBack` to the test and records its cleanup. */
export function heldCallback<I>() {
  const instances: Array<HeldCallbackInstance<I>> = []
  const logic = fromCallback<EventObject, I>(({ input, sendBack }) => {
    const instance: HeldCallbackInstance<I> = { input, sendBack, stopped: false }
    instances.push(instance)
    return () => void (instance.stopped = true)
  })
  const running = () => instances.filter((i) => !i.stopped)
  const reset = () => void (instances.length = 0)
  return { logic, instances, running, reset }
}

// ---------------------------------------------------------------------------------------------
// Time.

/**
 * Moves a SimulatedClock on `ms` the way real time passes: timer by timer, so a timer set while
 * another fires starts when that one fired (SimulatedClock.increment starts it at the end of the
 * whole increment instead).
 */
export function advanceClock(clock: SimulatedClock, ms: number): void {
  const target = clock.now() + ms
  const timers = (clock as unknown as { timeouts: Map<number, { start: number; timeout: number }> }).timeouts
  for (;;) {
    const due = [...timers.values()].map((t) => t.start + t.timeout).filter((at) => at <= target)
    if (due.length === 0) break
    clock.set(Math.max(clock.now(), Math.min(...due)))
  }
  clock.set(target)
}

/** Moves a SimulatedClock on `ms` in steps of at most `step`, letting promises settle in between. */
export async function advanceSettling(clock: SimulatedClock, ms: number, step = 10): Promise<void> {
  await settle()
  for (let t = 0; t < ms; t += step) {
    clock.increment(Math.min(step, ms - t))
    await settle()
  }
}

/** Advances to 1 ms before `ms` (`observe` must not change), then the last millisecond. */
export function advanceExactly(clock: SimulatedClock, ms: number, observe: () => unknown): void {
  if (ms > 1) {
    const before = observe()
    clock.increment(ms - 1)
    expect(observe(), `nothing happens before ${ms} ms`).toEqual(before)
    clock.increment(1)
  } else clock.increment(ms)
}

// ---------------------------------------------------------------------------------------------
// Recording what an actor emits and what an owner receives.

/** Records everything `actor` emits from now on; `take()` returns and forgets it. */
export function emittedBy(actor: Pick<AnyActorRef, 'on'>) {
  let log: AnyEventObject[] = []
  actor.on('*', (event: AnyEventObject) => void log.push(event))
  return {
    take(): AnyEventObject[] {
      const taken = log
      log = []
      return taken
    },
  }
}

/**
 * A tiny owner: a parent machine that invokes `logic` as child `childId` and records every event
 * sent to it (xstate's own done/error events excluded). Create its actor with the systemId the
 * child's `reportTo` names.
 */
export function ownerOf(logic: AnyActorLogic, childId: string, input: unknown) {
  let received: AnyEventObject[] = []
  const machine = createMachine({
    id: 'owner',
    invoke: { id: childId, src: logic, input },
    on: { '*': { actions: ({ event }) => void (event.type.startsWith('xstate.') || received.push(event)) } },
  })
  return {
    machine,
    child: (owner: { getSnapshot(): AnyMachineSnapshot }): AnyActorRef => owner.getSnapshot().children[childId] as AnyActorRef,
    /** Returns and forgets what the owner received so far. */
    take(): AnyEventObject[] {
      const taken = received
      received = []
      return taken
    },
  }
}

/**
 * Events the actor sent, to others or to itself (xstate's own timer and init events excluded),
 * recorded from the inspection stream: to check that nothing is sent.
 */
export function sendsOf(from: () => AnyActorRef | undefined) {
  const sent: AnyEventObject[] = []
  const inspect = (event: InspectionEvent) => {
    if (event.type !== '@xstate.event' || !event.sourceRef || event.sourceRef !== from()) return
    if (!event.event.type.startsWith('xstate.')) sent.push(event.event)
  }
  return { inspect, sent }
}

// ---------------------------------------------------------------------------------------------
// Reference models: a reducer written in the test is the oracle; xstate/graph walks it.

export interface ReferenceModel<S, E extends AnyEventObject> {
  initial: S
  step: (state: S, event: E) => S
  /** The events the test can cause in a state. */
  events: (state: S) => E[]
  /** Identifies states that behave alike; per-step outputs and unbounded totals are left out. */
  key: (state: S) => string
}

export interface ModelEdge<S, E> {
  /** Model events from the initial state to `from`, the shortest way. */
  path: E[]
  from: S
  event: E
  to: S
}

/**
 * Every edge (state × event) of the model's graph, each with the shortest path to its source. The
 * expected states come from the model alone; the real machine is only ever driven, never asked.
 */
export function modelEdges<S, E extends AnyEventObject>(model: ReferenceModel<S, E>, limit = 100_000): Array<ModelEdge<S, E>> {
  const logic = fromTransition((state: S, event: E) => model.step(state, event), model.initial)
  const serializeState = (snapshot: { context: S }) => model.key(snapshot.context)
  const options = { serializeState, events: (snapshot: { context: S }) => model.events(snapshot.context), limit }
  const shortest = new Map(getShortestPaths(logic, options).map((p) => [serializeState(p.state), p]))
  return adjacencyMapToArray(getAdjacencyMap(logic, options)).map(({ state, event, nextState }) => ({
    path: shortest.get(serializeState(state))!.steps.slice(1).map((s) => s.event),
    from: state.context,
    event,
    to: nextState.context,
  }))
}

/** The model's states along `events`, the initial one first. */
export function runModel<S, E extends AnyEventObject>(model: ReferenceModel<S, E>, events: readonly E[]): S[] {
  const states = [model.initial]
  for (const event of events) states.push(model.step(states.at(-1)!, event))
  return states
}

/** How a test drives the real machine through model events and reads back what the model predicts. */
export interface Driver<S, E, R> {
  start: () => R
  /** Makes the real actor take `event` (send it, settle a held call, move the clock). */
  apply: (run: R, event: E, before: S) => void | Promise<void>
  /** What the real actor shows now (state, context, emitted since the last step, calls in flight…). */
  observe: (run: R) => unknown
  /** The same, as the model predicts it for `state`. */
  expected: (state: S) => unknown
  stop?: (run: R) => void
}

/**
 * The table-driven runner: replays `events` on a fresh real actor and, after every step, compares
 * what it shows with what the model predicts.
 */
export async function checkAgainstModel<S, E extends AnyEventObject, R>(
  model: ReferenceModel<S, E>,
  driver: Driver<S, E, R>,
  events: readonly E[],
  label: (event: E) => string = (e) => JSON.stringify(e),
): Promise<void> {
  const states = runModel(model, events)
  const run = driver.start()
  try {
    expect(driver.observe(run), 'at start').toStrictEqual(driver.expected(states[0]!))
    for (const [i, event] of events.entries()) {
      await driver.apply(run, event, states[i]!)
      const where = `step ${i + 1} of ${events.length}: ${events.slice(0, i + 1).map(label).join(' → ')}`
      expect(driver.observe(run), where).toStrictEqual(driver.expected(states[i + 1]!))
    }
  } finally {
    driver.stop?.(run)
  }
}

/** Test names for model edges: `path → event`. */
export const edgeName = <E>(edge: { path: E[]; event: E }, label: (event: E) => string): string =>
  [...edge.path, edge.event].map(label).join(' → ')
