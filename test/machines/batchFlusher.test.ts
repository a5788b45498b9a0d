import { describe, expect, it } from 'vitest'
import { createActor, fromPromise, SimulatedClock, type AnyEventObject, type AnyMachineSnapshot, type AnyStateMachine, type EventObject, type StateValue } from 'xstate'
import { getShortestPaths, getStateNodes, type StatePath } from 'xstate/graph'
import {
  batchFlusherMachine,
  defaultFlusherProfiles,
  defaultRateThresholds,
  type BatchFlusherEmitted,
  type BatchFlusherEvent,
  type BatchFlusherInput,
  type DeadLetterInput,
  type DeadLetterOutput,
  type FlushBatchInput,
  type FlushBatchOutput,
} from '../../machines/batchFlusher.js'
import { MachineCoverage } from '../helpers/coverage.js'

const coverage = new MachineCoverage(batchFlusherMachine)
const settle = () => new Promise<void>((resolve) => setImmediate(resolve))

type Call<I, O> = { input: I; signal: AbortSignal; settled: boolean; resolve: (o: O) => void; reject: (e: Error) => void }

/** A promise actor whose every call the test settles by hand. */
function controlled<O, I>() {
  const calls: Array<Call<I, O>> = []
  const logic = fromPromise<O, I>(
    ({ input, signal }) =>
      new Promise((resolve, reject) => {
        const call: Call<I, O> = {
          input,
          signal,
          settled: false,
          resolve: (o) => ((call.settled = true), resolve(o)),
          reject: (e) => ((call.settled = true), reject(e)),
        }
        calls.push(call)
      }),
  )
  /** Calls still in flight: neither settled nor abandoned. */
  const live = () => calls.filter((c) => !c.settled && !c.signal.aborted)
  return { calls, live, logic }
}

/** flushBatch and deadLetter actors whose every call the test settles by hand. */
function controlledFlushes() {
  const flush = controlled<FlushBatchOutput, FlushBatchInput>()
  const deadLetter = controlled<DeadLetterOutput, DeadLetterInput>()
  const machine = batchFlusherMachine.provide({ actors: { flushBatch: flush.logic, deadLetter: deadLetter.logic } })
  return { calls: flush.calls, live: flush.live, deadLetters: deadLetter.calls, liveDeadLetters: deadLetter.live, machine }
}

// ---------------------------------------------------------------------------------------------
// Model-based: every shortest path of the statechart, replayed against the real actor.

// Small numbers keep the traversal finite; every delay length is distinct so the clock below
// can tell the timers apart.
const modelInput: BatchFlusherInput = {
  name: 'model',
  profiles: { low: { batchSize: 2, flushIntervalMs: 2000 }, medium: { batchSize: 3, flushIntervalMs: 500 }, high: { batchSize: 4, flushIntervalMs: 100 } },
  rate: { mediumAbove: 1, highAbove: 3, windowMs: 1000 },
  retry: { baseMs: 30, maxMs: 60 },
}
const delayLengths: Record<string, number[]> = {
  flushInterval: Object.values(modelInput.profiles).map((p) => p.flushIntervalMs),
  retryDelay: [30, 60],
  rateWindow: [modelInput.rate.windowMs],
}
const retryDelayFor = (attempt: number) => Math.min(modelInput.retry.maxMs, modelInput.retry.baseMs * 2 ** (attempt - 1))

/**
 * The model treats every delay as an event of its own, in any order; this clock fires exactly
 * the timer the path names and leaves the others pending.
 */
class StepClock {
  private nextId = 1
  readonly timers = new Map<number, { fn: () => void; ms: number }>()
  setTimeout = (fn: () => void, ms: number) => (this.timers.set(this.nextId, { fn, ms }), this.nextId++)
  clearTimeout = (id: number) => void this.timers.delete(id)
  pendingDelays = () => [...this.timers.values()].map((t) => delayOf(t.ms)).sort()
  fire(delay: string): number {
    const due = [...this.timers].filter(([, t]) => delayOf(t.ms) === delay)
    expect(due, `one pending '${delay}' timer`).toHaveLength(1)
    const [id, timer] = due[0]!
    this.timers.delete(id)
    timer.fn()
    return timer.ms
  }
}
const delayOf = (ms: number) => Object.keys(delayLengths).find((d) => delayLengths[d]!.includes(ms)) ?? `unknown ${ms} ms`

// One entry per (state, delay): a guarded `after` lists several transitions for one timer.
const delayedEvents = getStateNodes(batchFlusherMachine.root).flatMap((n) =>
  [...new Map(n.after.map((t) => [t.eventType, { type: t.eventType, delay: String(t.delay), path: n.path }])).values()],
)
const valueOf = (path: string[]): StateValue => path.reduceRight<StateValue | undefined>((v, k) => (v === undefined ? k : { [k]: v }), undefined)!
/** The timers the model says must be pending: one per active state with an `after`. */
const expectedDelays = (s: AnyMachineSnapshot) =>
  s.status !== 'active' ? [] : delayedEvents.filter((d) => s.matches(valueOf(d.path))).map((d) => d.delay).sort()

/** The batch size the in-flight flush (or dead-lettering of it) asked for (the profile may have changed since). */
const inFlightMax = (s: AnyMachineSnapshot): number | undefined =>
  (s.children.flushBatch ?? s.children.deadLetter)?.getSnapshot().input.max

const behaviour = (s: AnyMachineSnapshot) => {
  const { pending, batchSize, flushIntervalMs, attempt, drainRequested, addedInWindow } = s.context
  return { pending, batchSize, flushIntervalMs, attempt, drainRequested, addedInWindow, inFlightMax: inFlightMax(s) }
}

const modelEvents = (s: AnyMachineSnapshot): AnyEventObject[] => [
  { type: 'events.added', count: 1 },
  { type: 'events.added', count: 2 },
  { type: 'events.added', count: 4 },
  { type: 'drain' },
  ...(s.children.flushBatch
    ? [
        { type: 'xstate.done.actor.flushBatch', output: { flushed: Math.min(s.context.pending, inFlightMax(s)!) } },
        { type: 'xstate.error.actor.flushBatch', error: new Error('store down') },
      ]
    : []),
  ...(s.children.deadLetter
    ? [
        { type: 'xstate.done.actor.deadLetter', output: { moved: Math.min(s.context.pending, inFlightMax(s)!) } },
        { type: 'xstate.error.actor.deadLetter', error: new Error('dlq full') },
      ]
    : []),
  ...delayedEvents.map(({ type }) => ({ type })),
]

const paths = dedupe(
  getShortestPaths(batchFlusherMachine as AnyStateMachine, {
    input: modelInput,
    events: modelEvents,
    // Totals and the last error/rate only feed emits and output: leaving them out of the
    // state key merges states that behave the same.
    serializeState: (s) => JSON.stringify([s.value, s.status, behaviour(s)]),
    stopWhen: (s) => s.status !== 'active' || s.context.pending > 3 || s.context.attempt > 1 || s.context.addedInWindow > 4,
  }),
)

/** Keeps only paths that are not a prefix of a longer one. */
function dedupe<T extends StatePath<AnyMachineSnapshot, EventObject>>(all: T[]): T[] {
  const key = (p: T) => p.steps.map((s) => JSON.stringify(s.event)).join('\n') + '\n'
  const kept: string[] = []
  const out: T[] = []
  for (const p of [...all].sort((a, b) => b.steps.length - a.steps.length)) {
    const k = key(p)
    if (kept.some((longer) => longer.startsWith(k))) continue
    kept.push(k)
    out.push(p)
  }
  return out
}

// One provided machine for all paths (provide() rebuilds the state tree); calls are per path.
const flushes = controlledFlushes()

async function replay(path: StatePath<AnyMachineSnapshot, AnyEventObject>): Promise<void> {
  flushes.calls.length = 0
  flushes.deadLetters.length = 0
  const clock = new StepClock()
  const actor = createActor(flushes.machine, { input: modelInput, clock, inspect: coverage.inspect })
  actor.start()
  let before = path.steps[0]!.state
  for (const [i, { event, state }] of path.steps.entries()) {
    const where = `step ${i}: ${JSON.stringify(event)}`
    if (event.type === 'events.added' || event.type === 'drain') actor.send(event as BatchFlusherEvent)
    else if (event.type === 'xstate.done.actor.flushBatch' || event.type === 'xstate.error.actor.flushBatch') {
      const [call, ...extra] = flushes.live()
      expect(extra, where).toHaveLength(0)
      expect(flushes.liveDeadLetters(), where).toHaveLength(0)
      expect(call!.input, where).toEqual({ name: 'model', max: inFlightMax(before), draining: before.matches({ delivery: 'draining' }) })
      if (event.type === 'xstate.done.actor.flushBatch') call!.resolve(event.output)
      else call!.reject(new Error('store down'))
      await settle()
    } else if (event.type === 'xstate.done.actor.deadLetter' || event.type === 'xstate.error.actor.deadLetter') {
      const [call, ...extra] = flushes.liveDeadLetters()
      expect(extra, where).toHaveLength(0)
      expect(flushes.live(), where).toHaveLength(0)
      // The same batch the failed flush took, with that flush's error.
      expect(call!.input, where).toEqual({ name: 'model', max: inFlightMax(before), error: 'store down' })
      if (event.type === 'xstate.done.actor.deadLetter') call!.resolve(event.output)
      else call!.reject(new Error('dlq full'))
      await settle()
    } else if (event.type.startsWith('xstate.after.')) {
      const delay = delayedEvents.find((d) => d.type === event.type)!.delay
      const ms = clock.fire(delay)
      if (delay === 'retryDelay') expect(ms, where).toBe(retryDelayFor(before.context.attempt))
    }
    const snapshot = actor.getSnapshot()
    expect(snapshot.matches(state.value), `${where} → ${JSON.stringify(snapshot.value)}`).toBe(true)
    expect(snapshot.value, where).toEqual(state.value)
    expect(snapshot.status, where).toBe(state.status)
    expect(behaviour(snapshot), where).toEqual(behaviour(state))
    expect(clock.pendingDelays(), `${where}: pending timers`).toEqual(expectedDelays(state))
    before = state
  }
  actor.stop()
}

describe('batchFlusher (model-based)', () => {
  it('the traversal found paths ending in drained', () => {
    expect(paths.length).toBeGreaterThan(50)
    expect(paths.some((p) => p.state.status === 'done')).toBe(true)
  })

  it(`replays ${paths.length} shortest paths against the real actor`, async () => {
    for (const path of paths) await replay(path)
  })
})

// ---------------------------------------------------------------------------------------------
// Scenarios, on xstate's SimulatedClock.

const input = (over: Partial<BatchFlusherInput> = {}): BatchFlusherInput => ({
  name: 'store',
  profiles: defaultFlusherProfiles,
  rate: defaultRateThresholds,
  retry: { baseMs: 100, maxMs: 5000 },
  ...over,
})

interface Failures {
  /** flushBatch rejections before writes succeed. */
  flush?: number
  /** deadLetter rejections before the DLQ takes batches. */
  deadLetter?: number
}

/**
 * A queue in the test standing in for src/'s: flushBatch writes up to `max` from it,
 * deadLetter moves up to `max` of it to a dead-letter list.
 */
function fakeQueue(clock: SimulatedClock, failures: Failures) {
  const state = {
    queued: 0,
    written: 0,
    deadLettered: 0,
    flushFailuresLeft: failures.flush ?? 0,
    deadLetterFailuresLeft: failures.deadLetter ?? 0,
    calls: [] as Array<{ at: number } & FlushBatchInput>,
    deadLetterCalls: [] as Array<{ at: number } & DeadLetterInput>,
  }
  const flushBatch = fromPromise<FlushBatchOutput, FlushBatchInput>(async ({ input }) => {
    state.calls.push({ at: clock.now(), ...input })
    if (state.flushFailuresLeft-- > 0) throw new Error('connection refused')
    const flushed = Math.min(input.max, state.queued)
    state.queued -= flushed
    state.written += flushed
    return { flushed }
  })
  const deadLetter = fromPromise<DeadLetterOutput, DeadLetterInput>(async ({ input }) => {
    state.deadLetterCalls.push({ at: clock.now(), ...input })
    if (state.deadLetterFailuresLeft-- > 0) throw new Error('dlq full')
    const moved = Math.min(input.max, state.queued)
    state.queued -= moved
    state.deadLettered += moved
    return { moved }
  })
  return { state, machine: batchFlusherMachine.provide({ actors: { flushBatch, deadLetter } }) }
}

function start(over: Partial<BatchFlusherInput> = {}, failures: Failures = {}) {
  const clock = new SimulatedClock()
  const queue = fakeQueue(clock, failures)
  const actor = createActor(queue.machine, { input: input(over), clock, inspect: coverage.inspect })
  const emitted: BatchFlusherEmitted[] = []
  actor.on('*', (e) => emitted.push(e))
  actor.start()
  const add = (count: number) => {
    queue.state.queued += count
    actor.send({ type: 'events.added', count })
  }
  const advance = async (ms: number, step = 10) => {
    await settle()
    for (let t = 0; t < ms; t += step) {
      clock.increment(Math.min(step, ms - t))
      await settle()
    }
  }
  return { actor, clock, queue: queue.state, emitted, add, advance }
}

describe('batchFlusher scenarios', () => {
  it('switches low → medium → high → low with the rate, and batch size and interval follow', async () => {
    const { actor, emitted, add, advance, queue } = start()
    expect(actor.getSnapshot().context).toMatchObject({ batchSize: 10, flushIntervalMs: 2000 })

    add(20) // 20 events/s
    await advance(1000)
    expect(actor.getSnapshot().matches({ profile: 'medium' })).toBe(true)
    expect(actor.getSnapshot().context).toMatchObject({ batchSize: 50, flushIntervalMs: 500, lastRate: 20 })

    add(150) // 150 events/s
    await advance(1000)
    expect(actor.getSnapshot().matches({ profile: 'high' })).toBe(true)
    expect(actor.getSnapshot().context).toMatchObject({ batchSize: 100, flushIntervalMs: 100 })

    // High: a small batch waits one 100 ms interval.
    add(5)
    await advance(90)
    expect(actor.getSnapshot().matches({ delivery: 'collecting' })).toBe(true)
    await advance(20)
    expect(actor.getSnapshot().matches({ delivery: 'idle' })).toBe(true)

    await advance(1000) // 5 events/s
    expect(actor.getSnapshot().matches({ profile: 'low' })).toBe(true)
    expect(actor.getSnapshot().context).toMatchObject({ batchSize: 10, flushIntervalMs: 2000 })
    // Low: a small batch waits the full 2 s interval (window ticks in between change nothing).
    add(3)
    await advance(1900)
    expect(actor.getSnapshot().matches({ delivery: 'collecting' })).toBe(true)
    await advance(200)
    expect(actor.getSnapshot().matches({ delivery: 'idle' })).toBe(true)

    const changes = emitted.filter((e) => e.type === 'profile.changed')
    expect(changes.map((e) => [e.from, e.to, e.rate])).toEqual([
      ['low', 'medium', 20],
      ['medium', 'high', 150],
      ['high', 'low', 5],
    ])
    expect(queue.written).toBe(178)
    expect(queue.calls.some((c) => c.max === 50) && queue.calls.some((c) => c.max === 100)).toBe(true)
    actor.stop()
  })

  it('catches up a backlog in batches of up to backlogBatchSize, then returns to the profile batch', async () => {
    const { actor, add, advance, queue } = start({ backlogBatchSize: 1000 })
    add(2500) // a burst while the profile is still low (batch 10)
    await advance(10)
    add(15)
    await advance(2100)
    expect(queue.written).toBe(2515)
    expect(queue.calls.slice(0, 3).map((c) => c.max)).toEqual([1000, 1000, 500])
    // Below twice the batch size the profile's batch applies again.
    expect(queue.calls.slice(3).map((c) => c.max)).toEqual([10, 10])
    actor.stop()
  })

  it('without backlogBatchSize a backlog is written in profile-sized batches', async () => {
    const { actor, add, advance, queue } = start()
    add(50)
    await advance(10)
    expect(queue.written).toBe(50)
    expect(queue.calls.every((c) => c.max === 10)).toBe(true)
    actor.stop()
  })

  it('a flush that rejects moves the batch to deadLettering and on to idle, emitting batch.deadLettered', async () => {
    const flushes = controlledFlushes()
    const actor = createActor(flushes.machine, { input: input(), clock: new SimulatedClock(), inspect: coverage.inspect })
    const emitted: BatchFlusherEmitted[] = []
    actor.on('*', (e) => emitted.push(e))
    actor.start()
    actor.send({ type: 'events.added', count: 10 }) // a full low batch: flushes at once
    expect(flushes.calls.map((c) => c.input)).toEqual([{ name: 'store', max: 10, draining: false }])
    flushes.calls[0]!.reject(new Error('breaker open'))
    await settle()
    expect(actor.getSnapshot().matches({ delivery: 'deadLettering' })).toBe(true)
    expect(actor.getSnapshot().context).toMatchObject({ pending: 10, attempt: 1, lastError: 'breaker open' })
    expect(flushes.deadLetters.map((c) => c.input)).toEqual([{ name: 'store', max: 10, error: 'breaker open' }])
    actor.send({ type: 'events.added', count: 2 }) // still counted while the DLQ write is in flight

    flushes.deadLetters[0]!.resolve({ moved: 10 })
    await settle()
    expect(actor.getSnapshot().matches({ delivery: 'collecting' })).toBe(true)
    expect(actor.getSnapshot().context).toMatchObject({ pending: 2, attempt: 0, flushedTotal: 0 })
    expect(emitted.filter((e) => e.type.startsWith('batch.'))).toEqual([
      { type: 'batch.failed', name: 'store', error: 'breaker open', attempt: 1 },
      { type: 'batch.deadLettered', name: 'store', count: 10, error: 'breaker open' },
    ])
    actor.stop()

    // Exactly one batch pending: dead-lettering it leaves the flusher idle.
    const again = controlledFlushes()
    const idle = createActor(again.machine, { input: input(), inspect: coverage.inspect }).start()
    idle.send({ type: 'events.added', count: 10 })
    again.calls[0]!.reject(new Error('breaker open'))
    await settle()
    again.deadLetters[0]!.resolve({ moved: 10 })
    await settle()
    expect(idle.getSnapshot().matches({ delivery: 'idle' })).toBe(true)
    expect(idle.getSnapshot().context.pending).toBe(0)
    idle.stop()
  })

  it('retries with growing delay while the DLQ cannot take a failed batch, and loses nothing', async () => {
    const { actor, emitted, add, advance, queue } = start({ retry: { baseMs: 100, maxMs: 400 } }, { flush: 4, deadLetter: 4 })
    add(10) // a full low batch: flushes at once
    await advance(2000)
    expect(queue.calls.map((c) => c.at)).toEqual([0, 100, 300, 700, 1100])
    expect(queue.deadLetterCalls.map((c) => c.at)).toEqual([0, 100, 300, 700])
    const failed = emitted.filter((e) => e.type === 'batch.failed')
    expect(failed.map((e) => [e.attempt, e.error])).toEqual([1, 2, 3, 4].map((n) => [n, 'connection refused']))
    expect(emitted.some((e) => e.type === 'batch.deadLettered')).toBe(false)
    expect(actor.getSnapshot().context).toMatchObject({ pending: 0, attempt: 0, flushedTotal: 10, lastError: null })
    expect(queue.written).toBe(10)
    actor.stop()
  })

  it('a deadLetter failure retries: the next flush fails too and the DLQ then takes the batch', async () => {
    const { actor, emitted, add, advance, queue } = start({ retry: { baseMs: 100, maxMs: 400 } }, { flush: 2, deadLetter: 1 })
    add(10)
    await settle()
    expect(actor.getSnapshot().matches({ delivery: 'retrying' })).toBe(true)
    expect(actor.getSnapshot().context).toMatchObject({ attempt: 1, lastError: 'dlq full' })
    await advance(100)
    expect(actor.getSnapshot().matches({ delivery: 'idle' })).toBe(true)
    expect(queue.calls.map((c) => c.at)).toEqual([0, 100])
    expect(queue.deadLetterCalls.map((c) => [c.at, c.max, c.error])).toEqual([
      [0, 10, 'connection refused'],
      [100, 10, 'connection refused'],
    ])
    expect(actor.getSnapshot().context).toMatchObject({ pending: 0, attempt: 0, flushedTotal: 0, lastError: 'connection refused' })
    expect(emitted.filter((e) => e.type === 'batch.deadLettered')).toEqual([
      { type: 'batch.deadLettered', name: 'store', count: 10, error: 'connection refused' },
    ])
    expect([queue.written, queue.deadLettered, queue.queued]).toEqual([0, 10, 0])
    actor.stop()
  })

  it('draining with a failing sink ends drained with everything dead-lettered', async () => {
    const { actor, emitted, add, advance, queue } = start({}, { flush: Infinity })
    add(25) // a full low batch goes out at once; drain arrives while it is in flight
    actor.send({ type: 'drain' })
    await advance(100)
    expect(actor.getSnapshot().status).toBe('done')
    expect(actor.getSnapshot().value).toEqual({ delivery: 'drained', profile: 'stopped' })
    expect(actor.getSnapshot().output).toEqual({ name: 'store', flushedTotal: 0 })
    // Only the flush already in flight used the normal policy; the rest asked for the draining one.
    expect(queue.calls.map((c) => c.draining)).toEqual([false, true, true])
    expect(emitted.filter((e) => e.type === 'batch.deadLettered').map((e) => e.count)).toEqual([10, 10, 5])
    expect([queue.written, queue.deadLettered, queue.queued]).toEqual([0, 25, 0])
  })

  it('drain while dead-lettering waits for the DLQ write, then drains with the draining policy', async () => {
    const flushes = controlledFlushes()
    const actor = createActor(flushes.machine, { input: input(), clock: new SimulatedClock(), inspect: coverage.inspect }).start()
    actor.send({ type: 'events.added', count: 13 })
    flushes.calls[0]!.reject(new Error('connection refused'))
    await settle()
    actor.send({ type: 'drain' })
    expect(actor.getSnapshot().matches({ delivery: 'deadLettering' })).toBe(true)
    expect(flushes.deadLetters[0]!.signal.aborted).toBe(false)
    flushes.deadLetters[0]!.resolve({ moved: 10 })
    await settle()
    expect(actor.getSnapshot().matches({ delivery: { draining: 'flushing' } })).toBe(true)
    expect(flushes.live().map((c) => c.input)).toEqual([{ name: 'store', max: 10, draining: true }])
    flushes.live()[0]!.resolve({ flushed: 3 })
    await settle()
    expect(actor.getSnapshot().status).toBe('done')
    expect(actor.getSnapshot().output).toEqual({ name: 'store', flushedTotal: 3 })
  })

  it('a DLQ failure after drain was requested retries within draining until the batch is out', async () => {
    const flushes = controlledFlushes()
    const clock = new SimulatedClock()
    const actor = createActor(flushes.machine, { input: input({ retry: { baseMs: 100, maxMs: 400 } }), clock, inspect: coverage.inspect }).start()
    actor.send({ type: 'events.added', count: 13 })
    flushes.calls[0]!.reject(new Error('connection refused'))
    await settle()
    actor.send({ type: 'drain' })
    flushes.deadLetters[0]!.reject(new Error('disk full'))
    await settle()
    expect(actor.getSnapshot().matches({ delivery: { draining: 'retrying' } })).toBe(true)
    expect(actor.getSnapshot().context).toMatchObject({ pending: 13, attempt: 1, lastError: 'disk full' })
    clock.increment(99)
    expect(flushes.live()).toHaveLength(0)
    clock.increment(1)
    expect(flushes.live().map((c) => c.input)).toEqual([{ name: 'store', max: 10, draining: true }])
    flushes.live()[0]!.reject(new Error('connection refused'))
    await settle()
    expect(actor.getSnapshot().matches({ delivery: { draining: 'deadLettering' } })).toBe(true)
    flushes.liveDeadLetters()[0]!.resolve({ moved: 10 })
    await settle()
    flushes.live()[0]!.resolve({ flushed: 3 })
    await settle()
    expect(actor.getSnapshot().status).toBe('done')
    expect(actor.getSnapshot().output).toEqual({ name: 'store', flushedTotal: 3 })
  })

  it('counts events added while retrying and flushes them after recovery', async () => {
    const { actor, add, advance, queue } = start({ retry: { baseMs: 100, maxMs: 400 } }, { flush: 1, deadLetter: 1 })
    add(10)
    await settle()
    expect(actor.getSnapshot().matches({ delivery: 'retrying' })).toBe(true)
    add(4)
    expect(actor.getSnapshot().context.pending).toBe(14)
    await advance(2200)
    expect(actor.getSnapshot().context).toMatchObject({ pending: 0, flushedTotal: 14 })
    expect(queue.written).toBe(14)
    actor.stop()
  })

  it('drain during an in-flight flush waits for it, then drains the rest and completes with output', async () => {
    const flushes = controlledFlushes()
    const actor = createActor(flushes.machine, {
      input: input({ name: 'store' }),
      clock: new SimulatedClock(),
      inspect: coverage.inspect,
    }).start()
    actor.send({ type: 'events.added', count: 10 })
    expect(actor.getSnapshot().matches({ delivery: 'flushing' })).toBe(true)
    actor.send({ type: 'drain' })
    actor.send({ type: 'events.added', count: 3 }) // in-flight requests may still land
    expect(actor.getSnapshot().matches({ delivery: 'flushing' })).toBe(true)
    expect(actor.getSnapshot().context).toMatchObject({ drainRequested: true, pending: 13 })
    expect(flushes.calls).toHaveLength(1)
    expect(flushes.calls[0]!.signal.aborted).toBe(false)

    flushes.calls[0]!.resolve({ flushed: 10, durationMs: 7 })
    await settle()
    expect(actor.getSnapshot().matches({ delivery: { draining: 'flushing' } })).toBe(true)
    flushes.live()[0]!.resolve({ flushed: 3 })
    await settle()
    expect(actor.getSnapshot().status).toBe('done')
    expect(actor.getSnapshot().value).toEqual({ delivery: 'drained', profile: 'stopped' })
    expect(actor.getSnapshot().output).toEqual({ name: 'store', flushedTotal: 13 })
  })

  it('drain when idle completes at once, without a flush', async () => {
    const { actor, queue } = start()
    actor.send({ type: 'drain' })
    expect(actor.getSnapshot().status).toBe('done')
    expect(actor.getSnapshot().output).toEqual({ name: 'store', flushedTotal: 0 })
    await settle()
    expect(queue.calls).toEqual([])
  })

  it('emits batch.flushed with the count and, when reported, the duration', async () => {
    const flushes = controlledFlushes()
    const actor = createActor(flushes.machine, { input: input(), inspect: coverage.inspect })
    const flushed: BatchFlusherEmitted[] = []
    actor.on('batch.flushed', (e) => flushed.push(e))
    actor.start()
    actor.send({ type: 'events.added', count: 12 })
    flushes.calls[0]!.resolve({ flushed: 10, durationMs: 4 })
    await settle()
    expect(flushed).toEqual([{ type: 'batch.flushed', name: 'store', count: 10, durationMs: 4 }])
    actor.stop()
  })

  it('takes every state and transition of the machine', () => {
    coverage.assertComplete()
  })
})
