import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { createActor, fromPromise, SimulatedClock } from 'xstate'
import {
  batchFlusherMachine,
  batchMaxFor,
  defaultFlusherProfiles,
  defaultRateThresholds,
  defaultRetryPolicy,
  type BatchFlusherEmitted,
  type BatchFlusherInput,
  type DeadLetterInput,
  type DeadLetterOutput,
  type FlushBatchInput,
  type FlushBatchOutput,
  type Profile,
  type ProfileName,
} from '../../machines/batchFlusher.js'
import { MachineCoverage } from '../helpers/coverage.js'
import { advanceClock, advanceExactly, advanceSettling, checkAgainstModel, edgeName, emittedBy, heldPromise, modelEdges, settle, type Driver, type ReferenceModel } from '../helpers/machines.js'

const coverage = new MachineCoverage(batchFlusherMachine)

// =============================================================================================
// Oracle 1, delivery: pending, batches, retry, dead-lettering and drain, written from the docs.
// The rate window is set so long that the profile (oracle 2) never changes under it.

type Phase = 'idle' | 'collecting' | 'flushing' | 'deadLettering' | 'retrying' | 'draining.flushing' | 'draining.deadLettering' | 'draining.retrying' | 'drained'

type Step =
  | { type: 'added'; count: number }
  | { type: 'discarded'; count: number }
  | { type: 'drain' }
  | { type: 'recovered' }
  | { type: 'flushOk'; flushed: number; durationMs?: number }
  | { type: 'flushFail'; error: unknown }
  | { type: 'dlqOk'; moved: number }
  | { type: 'dlqFail'; error: unknown }
  | { type: 'wait'; ms: number }

interface Flusher {
  phase: Phase
  pending: number
  batchMax: number
  attempt: number
  lastError: string | null
  drainRequested: boolean
  flushedTotal: number
  /** Time since the current state's timer started (collecting: flush interval; retrying: backoff). */
  elapsed: number
  /** Calls stopped before they settled. */
  abandoned: number
  /** Output of the last step. */
  emitted: BatchFlusherEmitted[]
}

interface DeliverySettings {
  name: string
  batchSize: number
  flushIntervalMs: number
  backlogBatchSize?: number
  retry: { baseMs: number; maxMs: number }
}

const messageOf = (error: unknown) => (error instanceof Error ? error.message : String(error))
const isDraining = (p: Phase) => p.startsWith('draining.')

function deliveryModel(s: DeliverySettings): ReferenceModel<Flusher, Step> {
  // The profile's batch; a backlog of at least two batches goes out in one of up to backlogBatchSize.
  const maxFor = (pending: number) => (pending >= 2 * s.batchSize ? Math.max(s.batchSize, Math.min(pending, s.backlogBatchSize ?? s.batchSize)) : s.batchSize)
  // The first retry waits baseMs, each next one twice as long, never more than maxMs.
  const retryDelay = (attempt: number) => Math.min(s.retry.maxMs, s.retry.baseMs * 2 ** Math.max(0, attempt - 1))

  /** Draining ends as soon as nothing is pending, even with a call in flight (which is then abandoned). */
  const drainedIfEmpty = (f: Flusher, callInFlight: boolean): Flusher =>
    isDraining(f.phase) && f.pending === 0 ? { ...f, phase: 'drained', elapsed: 0, abandoned: f.abandoned + (callInFlight ? 1 : 0) } : f
  /** collecting routes every arrival: nothing left → idle, a full batch → flush, else wait for the interval. */
  const route = (f: Flusher): Flusher => (f.phase !== 'collecting' ? f : f.pending === 0 ? enter(f, 'idle') : f.pending >= s.batchSize ? enter(f, 'flushing') : f)
  const enter = (f: Flusher, phase: Phase): Flusher => {
    const entered = { ...f, phase, elapsed: 0 }
    if (phase === 'collecting') return route(entered)
    if (phase === 'flushing') return { ...entered, batchMax: maxFor(f.pending) }
    if (phase === 'draining.flushing') return drainedIfEmpty({ ...entered, batchMax: maxFor(f.pending) }, false)
    return drainedIfEmpty(entered, false)
  }
  const timerOf = (f: Flusher): number | null =>
    f.phase === 'collecting' ? s.flushIntervalMs : f.phase === 'retrying' || f.phase === 'draining.retrying' ? retryDelay(f.attempt) : null

  const step = (prior: Flusher, e: Step): Flusher => {
    const f: Flusher = { ...prior, emitted: [] }
    if (f.phase === 'drained') return f
    const inFlight = f.phase === 'draining.flushing' || f.phase === 'draining.deadLettering'
    switch (e.type) {
      case 'added': {
        const more = { ...f, pending: f.pending + e.count }
        return f.phase === 'idle' ? enter(more, 'collecting') : drainedIfEmpty(route(more), inFlight)
      }
      case 'discarded':
        return drainedIfEmpty(route({ ...f, pending: Math.max(0, f.pending - e.count) }), inFlight)
      case 'drain':
        if (f.phase === 'idle' || f.phase === 'collecting' || f.phase === 'retrying') return enter(f, 'draining.flushing')
        // Never abandon a write in flight: drain once it settles.
        if (f.phase === 'flushing' || f.phase === 'deadLettering') return { ...f, drainRequested: true }
        return f
      case 'recovered':
        if (f.phase === 'retrying') return enter(f, 'flushing')
        if (f.phase === 'draining.retrying') return enter(f, 'draining.flushing')
        return f
      case 'flushOk': {
        const done: Flusher = {
          ...f,
          pending: Math.max(0, f.pending - e.flushed),
          flushedTotal: f.flushedTotal + e.flushed,
          attempt: 0,
          lastError: null,
          emitted: [{ type: 'batch.flushed', name: s.name, count: e.flushed, ...(e.durationMs === undefined ? {} : { durationMs: e.durationMs }) }],
        }
        if (f.phase === 'draining.flushing' || f.drainRequested) return enter(done, 'draining.flushing')
        return enter(done, 'collecting')
      }
      case 'flushFail': {
        const error = messageOf(e.error)
        const failed: Flusher = { ...f, attempt: f.attempt + 1, lastError: error, emitted: [{ type: 'batch.failed', name: s.name, error, attempt: f.attempt + 1 }] }
        return enter(failed, f.phase === 'draining.flushing' || f.drainRequested ? 'draining.deadLettering' : 'deadLettering')
      }
      case 'dlqOk': {
        const moved: Flusher = { ...f, pending: Math.max(0, f.pending - e.moved), attempt: 0, emitted: [{ type: 'batch.deadLettered', name: s.name, count: e.moved, error: f.lastError ?? '' }] }
        return enter(moved, f.phase === 'draining.deadLettering' || f.drainRequested ? 'draining.flushing' : 'collecting')
      }
      case 'dlqFail': {
        // The DLQ could not take it either: keep the batch and try it again after the backoff.
        const kept = { ...f, lastError: messageOf(e.error) }
        return enter(kept, f.phase === 'draining.deadLettering' || f.drainRequested ? 'draining.retrying' : 'retrying')
      }
      case 'wait': {
        const timer = timerOf(f)
        if (timer === null) return f
        if (f.elapsed + e.ms < timer) return { ...f, elapsed: f.elapsed + e.ms }
        return enter(f, f.phase === 'draining.retrying' ? 'draining.flushing' : 'flushing')
      }
    }
  }

  const initial: Flusher = { phase: 'idle', pending: 0, batchMax: s.batchSize, attempt: 0, lastError: null, drainRequested: false, flushedTotal: 0, elapsed: 0, abandoned: 0, emitted: [] }
  const events = (f: Flusher): Step[] => {
    if (f.phase === 'drained') return []
    const timer = timerOf(f)
    const left = timer === null ? null : timer - f.elapsed
    const flushing = f.phase === 'flushing' || f.phase === 'draining.flushing'
    const deadLettering = f.phase === 'deadLettering' || f.phase === 'draining.deadLettering'
    const whole = Math.min(f.pending, f.batchMax)
    return [
      ...(f.pending < 4 ? [{ type: 'added', count: 1 } as const, { type: 'added', count: s.batchSize } as const] : []),
      ...(f.pending === 0 ? [{ type: 'added', count: 2 * s.batchSize + 1 } as const] : []),
      ...(f.pending > 0 ? [{ type: 'discarded', count: 1 } as const, { type: 'discarded', count: 100 } as const] : []),
      { type: 'drain' },
      { type: 'recovered' },
      ...(flushing
        ? [{ type: 'flushOk', flushed: whole, durationMs: 4 } as const, ...(whole > 1 ? [{ type: 'flushOk', flushed: 1 } as const] : []), { type: 'flushFail', error: new Error('store down') } as const]
        : []),
      ...(deadLettering ? [{ type: 'dlqOk', moved: whole } as const, { type: 'dlqFail', error: new Error('dlq full') } as const] : []),
      ...(left === null ? [] : [...(left > 1 ? [{ type: 'wait', ms: left - 1 } as const] : []), { type: 'wait', ms: left } as const]),
    ]
  }
  // What decides the future, coarsely (the replay recomputes every state exactly): the phase, how
  // much is pending (up to a batch and a half), whether the batch in flight is a backlog one, the
  // backoff (capped after two failures here), a drain asked for, the timer's progress.
  const key = (f: Flusher) =>
    JSON.stringify([f.phase, Math.min(f.pending, 3), f.batchMax > s.batchSize, Math.min(f.attempt, 2), isDraining(f.phase) ? null : f.drainRequested, f.elapsed])
  return { initial, step, events, key }
}

const label = (e: Step): string => {
  switch (e.type) {
    case 'added':
    case 'discarded':
      return `${e.type}(${e.count})`
    case 'flushOk':
      return `flushOk(${e.flushed})`
    case 'dlqOk':
      return `dlqOk(${e.moved})`
    case 'flushFail':
    case 'dlqFail':
      return `${e.type}(${messageOf(e.error)})`
    case 'wait':
      return `wait(${e.ms})`
    default:
      return e.type
  }
}

/** Far beyond any test's clock: the profile stays low while the delivery oracle runs. */
const neverMs = 1e9

function deliveryInput(s: DeliverySettings): BatchFlusherInput {
  const low: Profile = { batchSize: s.batchSize, flushIntervalMs: s.flushIntervalMs }
  return {
    name: s.name,
    profiles: { low, medium: { batchSize: 999, flushIntervalMs: 999 }, high: { batchSize: 998, flushIntervalMs: 998 } },
    rate: { mediumAbove: neverMs, highAbove: neverMs, windowMs: neverMs },
    retry: s.retry,
    ...(s.backlogBatchSize === undefined ? {} : { backlogBatchSize: s.backlogBatchSize }),
  }
}

/** The real flusher with flushBatch and deadLetter calls the test holds and settles. */
const flushes = heldPromise<FlushBatchOutput, FlushBatchInput>()
const deadLetters = heldPromise<DeadLetterOutput, DeadLetterInput>()
const heldMachine = batchFlusherMachine.provide({ actors: { flushBatch: flushes.logic, deadLetter: deadLetters.logic } })

/** One run at a time: the held calls belong to the latest run. */
function startHeld(input: BatchFlusherInput) {
  const clock = new SimulatedClock()
  flushes.reset()
  deadLetters.reset()
  const machine = heldMachine
  const actor = createActor(machine, { input, clock, inspect: coverage.inspect })
  const emitted = emittedBy(actor)
  actor.start()
  return { actor, clock, flushes, deadLetters, emitted }
}

type Held = ReturnType<typeof startHeld>

const phaseOf = (value: unknown): string => {
  const delivery = (value as { delivery: string | Record<string, string> }).delivery
  return typeof delivery === 'string' ? delivery : Object.entries(delivery).map(([k, v]) => `${k}.${v}`)[0]!
}

function deliveryDriver(s: DeliverySettings): Driver<Flusher, Step, Held> {
  return {
    start: () => startHeld(deliveryInput(s)),
    apply: async (run, e) => {
      switch (e.type) {
        case 'added':
          run.actor.send({ type: 'events.added', count: e.count })
          break
        case 'discarded':
          run.actor.send({ type: 'events.discarded', count: e.count })
          break
        case 'drain':
          run.actor.send({ type: 'drain' })
          break
        case 'recovered':
          run.actor.send({ type: 'sink.recovered' })
          break
        case 'flushOk':
          run.flushes.one().resolve({ flushed: e.flushed, ...(e.durationMs === undefined ? {} : { durationMs: e.durationMs }) })
          break
        case 'flushFail':
          run.flushes.one().reject(e.error)
          break
        case 'dlqOk':
          run.deadLetters.one().resolve({ moved: e.moved })
          break
        case 'dlqFail':
          run.deadLetters.one().reject(e.error)
          break
        case 'wait':
          advanceClock(run.clock, e.ms)
      }
      // A settled call reaches the machine through promise callbacks: let them run.
      if (['flushOk', 'flushFail', 'dlqOk', 'dlqFail'].includes(e.type)) await settle()
    },
    observe: (run) => {
      const snapshot = run.actor.getSnapshot()
      const { pending, batchMax, attempt, lastError, drainRequested, flushedTotal } = snapshot.context
      return {
        phase: phaseOf(snapshot.value),
        profile: (snapshot.value as { profile: string }).profile,
        status: snapshot.status,
        output: snapshot.output,
        pending,
        batchMax,
        attempt,
        lastError,
        drainRequested,
        flushedTotal,
        emitted: run.emitted.take(),
        flushing: run.flushes.live().map((c) => c.input),
        deadLettering: run.deadLetters.live().map((c) => c.input),
        abandoned: [...run.flushes.calls, ...run.deadLetters.calls].filter((c) => c.signal.aborted).length,
        children: snapshot.status === 'done' ? 'n/a' : Object.keys(snapshot.children),
      }
    },
    expected: (f) => {
      const draining = isDraining(f.phase)
      const flushing = f.phase === 'flushing' || f.phase === 'draining.flushing'
      const deadLettering = f.phase === 'deadLettering' || f.phase === 'draining.deadLettering'
      const done = f.phase === 'drained'
      return {
        phase: f.phase,
        profile: done ? 'stopped' : 'low',
        status: done ? 'done' : 'active',
        output: done ? { name: s.name, flushedTotal: f.flushedTotal } : undefined,
        pending: f.pending,
        batchMax: f.batchMax,
        attempt: f.attempt,
        lastError: f.lastError,
        drainRequested: f.drainRequested,
        flushedTotal: f.flushedTotal,
        emitted: f.emitted,
        flushing: flushing ? [{ name: s.name, max: f.batchMax, draining }] : [],
        deadLettering: deadLettering ? [{ name: s.name, max: f.batchMax, error: f.lastError ?? '', draining }] : [],
        abandoned: f.abandoned,
        children: done ? 'n/a' : flushing ? ['flushBatch'] : deadLettering ? ['deadLetter'] : [],
      }
    },
    stop: (run) => run.actor.stop(),
  }
}

describe('batchFlusher delivery against the reference model, every edge of its graph', () => {
  const settings: DeliverySettings = { name: 'store', batchSize: 2, flushIntervalMs: 300, backlogBatchSize: 5, retry: { baseMs: 30, maxMs: 60 } }
  const model = deliveryModel(settings)
  const edges = modelEdges(model)

  it('the model reaches every phase', () => {
    expect(new Set(edges.map((e) => e.to.phase))).toEqual(
      new Set(['idle', 'collecting', 'flushing', 'deadLettering', 'retrying', 'draining.flushing', 'draining.deadLettering', 'draining.retrying', 'drained']),
    )
  })

  it.each(edges.map((e) => [edgeName(e, label), e] as const))('%s', async (_name, edge) => {
    await checkAgainstModel(model, deliveryDriver(settings), [...edge.path, edge.event], label)
  })
})

describe('batchFlusher delivery against the reference model, random settings and steps (fast-check)', () => {
  const settingsArb: fc.Arbitrary<DeliverySettings> = fc.record(
    {
      name: fc.constantFrom('store', 'realtime'),
      batchSize: fc.integer({ min: 1, max: 6 }),
      flushIntervalMs: fc.integer({ min: 1, max: 500 }),
      backlogBatchSize: fc.integer({ min: 1, max: 30 }),
      retry: fc.record({ baseMs: fc.integer({ min: 1, max: 100 }), maxMs: fc.integer({ min: 1, max: 400 }) }),
    },
    { requiredKeys: ['name', 'batchSize', 'flushIntervalMs', 'retry'] },
  )
  const stepArb = (s: DeliverySettings): fc.Arbitrary<Step> =>
    fc.oneof(
      { arbitrary: fc.integer({ min: 0, max: 4 * s.batchSize }).map((count): Step => ({ type: 'added', count })), weight: 4 },
      { arbitrary: fc.integer({ min: 0, max: 2 * s.batchSize }).map((count): Step => ({ type: 'discarded', count })), weight: 1 },
      { arbitrary: fc.constantFrom<Step>({ type: 'drain' }, { type: 'recovered' }), weight: 1 },
      // Settlements: the count is a share of the batch in flight, worked out when the step is used.
      { arbitrary: fc.double({ min: 0, max: 1, noNaN: true }).map((share): Step => ({ type: 'flushOk', flushed: share })), weight: 3 },
      { arbitrary: fc.constantFrom<Step>({ type: 'flushFail', error: new Error('connection refused') }, { type: 'flushFail', error: 'breaker open' }), weight: 2 },
      { arbitrary: fc.double({ min: 0, max: 1, noNaN: true }).map((share): Step => ({ type: 'dlqOk', moved: share })), weight: 2 },
      { arbitrary: fc.constant<Step>({ type: 'dlqFail', error: new Error('dlq full') }), weight: 2 },
      { arbitrary: fc.integer({ min: 1, max: 600 }).map((ms): Step => ({ type: 'wait', ms })), weight: 3 },
    )

  it('matches the model after every step (settling calls only while one is in flight)', async () => {
    await fc.assert(
      fc.asyncProperty(
        settingsArb.chain((s) => fc.tuple(fc.constant(s), fc.array(stepArb(s), { maxLength: 40 }))),
        async ([settings, raw]) => {
          const model = deliveryModel(settings)
          const steps: Step[] = []
          let state = model.initial
          for (const e of raw) {
            const whole = Math.min(state.pending, state.batchMax)
            let concrete: Step = e
            if (e.type === 'flushOk' || e.type === 'flushFail') {
              if (state.phase !== 'flushing' && state.phase !== 'draining.flushing') continue
              if (e.type === 'flushOk') concrete = { type: 'flushOk', flushed: Math.round(e.flushed * whole) }
            }
            if (e.type === 'dlqOk' || e.type === 'dlqFail') {
              if (state.phase !== 'deadLettering' && state.phase !== 'draining.deadLettering') continue
              if (e.type === 'dlqOk') concrete = { type: 'dlqOk', moved: Math.round(e.moved * whole) }
            }
            steps.push(concrete)
            state = model.step(state, concrete)
          }
          await checkAgainstModel(model, deliveryDriver(settings), steps, label)
        },
      ),
      { numRuns: 120 },
    )
  })
})

describe('batchMaxFor, by hand', () => {
  it.each([
    // pending, batchSize, backlogBatchSize → max
    [0, 10, undefined, 10],
    [19, 10, 1_000, 10],
    [20, 10, 1_000, 20],
    [2_500, 10, 1_000, 1_000],
    [2_500, 10, undefined, 10],
    [30, 10, 5, 10],
  ] as const)('%i pending, batch %i, backlog %s → %i', (pending, batchSize, backlogBatchSize, max) => {
    expect(batchMaxFor({ pending, batchSize, backlogBatchSize })).toBe(max)
  })
})

// =============================================================================================
// Oracle 2, profile: the rate over each window picks the profile. Batches are so large and
// intervals so long here that delivery never flushes under it.

interface Rate {
  profile: ProfileName
  addedInWindow: number
  lastRate: number
  elapsed: number
  emitted: BatchFlusherEmitted[]
}

type RateStep = { type: 'added'; count: number } | { type: 'wait'; ms: number }

interface RateSettings {
  name: string
  windowMs: number
  mediumAbove: number
  highAbove: number
  profiles: Record<ProfileName, Profile>
}

function rateModel(s: RateSettings): ReferenceModel<Rate, RateStep> {
  const closeWindow = (r: Rate): Rate => {
    const rate = r.addedInWindow / (s.windowMs / 1000)
    const to: ProfileName = rate > s.highAbove ? 'high' : rate > s.mediumAbove ? 'medium' : 'low'
    const emitted = to === r.profile ? [] : [{ type: 'profile.changed' as const, name: s.name, from: r.profile, to, rate }]
    return { profile: to, addedInWindow: 0, lastRate: rate, elapsed: 0, emitted: [...r.emitted, ...emitted] }
  }
  const step = (prior: Rate, e: RateStep): Rate => {
    const r: Rate = { ...prior, emitted: [] }
    if (e.type === 'added') return { ...r, addedInWindow: r.addedInWindow + e.count }
    let now = r
    let ms = e.ms
    while (now.elapsed + ms >= s.windowMs) {
      ms -= s.windowMs - now.elapsed
      now = closeWindow(now)
    }
    return { ...now, elapsed: now.elapsed + ms }
  }
  return {
    initial: { profile: 'low', addedInWindow: 0, lastRate: 0, elapsed: 0, emitted: [] },
    step,
    events: (r) => [
      ...(r.addedInWindow < 5 ? [{ type: 'added', count: 1 } as const, { type: 'added', count: 2 } as const] : []),
      ...(s.windowMs - r.elapsed > 1 ? [{ type: 'wait', ms: s.windowMs - r.elapsed - 1 } as const] : []),
      { type: 'wait', ms: s.windowMs - r.elapsed },
    ],
    key: (r) => JSON.stringify([r.profile, r.addedInWindow, r.elapsed]),
  }
}

const rateLabel = (e: RateStep) => `${e.type}(${e.type === 'added' ? e.count : e.ms})`

function rateDriver(s: RateSettings): Driver<Rate, RateStep, Held> {
  return {
    start: () => startHeld({ name: s.name, profiles: s.profiles, rate: { mediumAbove: s.mediumAbove, highAbove: s.highAbove, windowMs: s.windowMs }, retry: defaultRetryPolicy }),
    apply: (run, e) => {
      if (e.type === 'added') run.actor.send({ type: 'events.added', count: e.count })
      else advanceClock(run.clock, e.ms)
    },
    observe: (run) => {
      const snapshot = run.actor.getSnapshot()
      const { addedInWindow, lastRate, batchSize, flushIntervalMs } = snapshot.context
      return { profile: (snapshot.value as { profile: string }).profile, addedInWindow, lastRate, batchSize, flushIntervalMs, emitted: run.emitted.take() }
    },
    expected: (r) => {
      const { batchSize, flushIntervalMs } = s.profiles[r.profile]
      return { profile: r.profile, addedInWindow: r.addedInWindow, lastRate: r.lastRate, batchSize, flushIntervalMs, emitted: r.emitted }
    },
    stop: (run) => run.actor.stop(),
  }
}

describe('batchFlusher profile against the reference model', () => {
  // A 500 ms window: the rate is twice the count. Distinct sizes and intervals per profile.
  const settings: RateSettings = {
    name: 'store',
    windowMs: 500,
    mediumAbove: 2,
    highAbove: 6,
    profiles: { low: { batchSize: 10_000, flushIntervalMs: 1e7 }, medium: { batchSize: 20_000, flushIntervalMs: 2e7 }, high: { batchSize: 30_000, flushIntervalMs: 3e7 } },
  }
  const model = rateModel(settings)
  const edges = modelEdges(model)

  it('the model reaches every profile', () => {
    expect(new Set(edges.map((e) => e.to.profile))).toEqual(new Set(['low', 'medium', 'high']))
  })

  it.each(edges.map((e) => [edgeName(e, rateLabel), e] as const))('%s', async (_name, edge) => {
    await checkAgainstModel(model, rateDriver(settings), [...edge.path, edge.event], rateLabel)
  })

  it('matches the model for random thresholds, windows and traffic (fast-check)', async () => {
    const settingsArb = fc.record({
      name: fc.constant('realtime'),
      windowMs: fc.constantFrom(100, 250, 1_000, 2_000),
      mediumAbove: fc.integer({ min: 0, max: 20 }),
      highAbove: fc.integer({ min: 0, max: 60 }),
      profiles: fc.constant(settings.profiles),
    })
    const stepArb = fc.oneof(fc.integer({ min: 0, max: 30 }).map((count): RateStep => ({ type: 'added', count })), fc.integer({ min: 1, max: 3_000 }).map((ms): RateStep => ({ type: 'wait', ms })))
    await fc.assert(
      fc.asyncProperty(settingsArb, fc.array(stepArb, { maxLength: 30 }), async (s, steps) => {
        await checkAgainstModel(rateModel(s), rateDriver(s), steps, rateLabel)
      }),
      { numRuns: 100 },
    )
  })
})

// =============================================================================================
// Scenarios stated by hand: the two regions together, and a queue standing in for src/'s that
// checks nothing is lost.

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

/** flushBatch writes up to `max` from the queue, deadLetter moves up to `max` of it to a dead-letter list. */
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
  return { actor, clock, queue: queue.state, emitted, add, advance: (ms: number, step?: number) => advanceSettling(clock, ms, step) }
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


  it('a batch being collected keeps the interval it started with when the profile changes; the next one takes the new one', async () => {
    const slowThenFast = { low: { batchSize: 1_000, flushIntervalMs: 2_000 }, medium: { batchSize: 1_000, flushIntervalMs: 700 }, high: { batchSize: 1_000, flushIntervalMs: 100 } }
    const { actor, add, advance, queue } = start({ profiles: slowThenFast, rate: { mediumAbove: 2, highAbove: 5, windowMs: 1_000 } })
    add(10) // collecting under low: due at 2000
    await advance(1_100) // the window at 1000 found 10/s: high, interval 100
    expect(actor.getSnapshot().matches({ profile: 'high' })).toBe(true)
    expect(queue.calls).toEqual([])
    await advance(900)
    expect(queue.calls.map((c) => [c.at, c.max])).toEqual([[2_000, 1_000]])
    add(1) // at 2000, under low again (the window at 2000 found 0/s): 2000 ms
    await advance(10)
    add(6) // 2010: counted for the next window
    await advance(1_000) // 3010: the window at 3000 found 7/s, high; the batch begun at 2000 is still due at 4000
    expect(queue.calls).toHaveLength(1)
    await advance(1_000)
    expect(queue.calls.map((c) => c.at)).toEqual([2_000, 4_000])
    add(1) // 4010: the window at 4000 found 0/s, low again, so 2000 ms once more
    await advance(1_990)
    expect(queue.calls).toHaveLength(2)
    await advance(10)
    expect(queue.calls.map((c) => c.at)).toEqual([2_000, 4_000, 6_010])
    actor.stop()
  })

  it('high → low at a window boundary flushes at once what was collected, because the smaller batch is full', async () => {
    const { actor, add, advance, queue } = start()
    add(150)
    await advance(1_000)
    expect(actor.getSnapshot().matches({ profile: 'high' })).toBe(true) // 150/s: batch 100, 100 ms
    queue.calls.length = 0
    await advance(950)
    add(10) // 1950: 10 < 100, collecting, due at 2050
    await advance(40)
    expect(queue.calls).toEqual([])
    // At 2000 the window closes at 10/s (not above 10): low, batch 10, which the 10 pending fill.
    await advance(10)
    expect(actor.getSnapshot().matches({ profile: 'low' })).toBe(true)
    expect(queue.calls.map((c) => [c.at, c.max])).toEqual([[2_000, 10]])
    actor.stop()
  })

  it('sink.recovered ends a retry backoff at once, in normal running and while draining', async () => {
    const flushes = startHeld(input({ retry: { baseMs: 1_000, maxMs: 5_000 } }))
    flushes.actor.send({ type: 'events.added', count: 10 })
    flushes.flushes.one().reject(new Error('connection refused'))
    await settle()
    flushes.deadLetters.one().reject(new Error('dlq full'))
    await settle()
    expect(phaseOf(flushes.actor.getSnapshot().value)).toBe('retrying')
    flushes.clock.increment(10)
    flushes.actor.send({ type: 'sink.recovered' })
    expect(flushes.flushes.one().input).toStrictEqual({ name: 'store', max: 10, draining: false })
    flushes.actor.send({ type: 'drain' })
    flushes.flushes.one().reject(new Error('connection refused'))
    await settle()
    flushes.deadLetters.one().reject(new Error('dlq full'))
    await settle()
    expect(phaseOf(flushes.actor.getSnapshot().value)).toBe('draining.retrying')
    flushes.actor.send({ type: 'sink.recovered' })
    expect(flushes.flushes.one().input).toStrictEqual({ name: 'store', max: 10, draining: true })
    flushes.flushes.one().resolve({ flushed: 10 })
    await settle()
    expect(flushes.actor.getSnapshot().status).toBe('done')
  })

  it('events.discarded keeps the count in step with a queue that dropped events over its bound', async () => {
    const { actor, add, advance, queue } = start()
    add(8)
    queue.queued -= 5
    actor.send({ type: 'events.discarded', count: 5 })
    expect(actor.getSnapshot().context.pending).toBe(3)
    actor.send({ type: 'events.discarded', count: 50 })
    expect(actor.getSnapshot().context.pending).toBe(0)
    expect(actor.getSnapshot().matches({ delivery: 'idle' })).toBe(true)
    await advance(3000)
    expect(queue.calls).toEqual([])
    actor.stop()
  })

  it('the placeholder actors say what is missing, and a failing DLQ keeps the batch for a retry', async () => {
    const actor = createActor(batchFlusherMachine, { input: input(), clock: new SimulatedClock(), inspect: coverage.inspect })
    const emitted = emittedBy(actor)
    actor.start()
    actor.send({ type: 'events.added', count: 10 })
    await settle()
    await settle()
    expect(emitted.take()).toStrictEqual([{ type: 'batch.failed', name: 'store', error: 'flushBatch not provided', attempt: 1 }])
    expect(phaseOf(actor.getSnapshot().value)).toBe('retrying')
    expect(actor.getSnapshot().context).toMatchObject({ pending: 10, lastError: 'deadLetter not provided' })
    actor.stop()
  })

  it('the default profiles, thresholds and retry policy', () => {
    expect(defaultFlusherProfiles).toEqual({ low: { batchSize: 10, flushIntervalMs: 2_000 }, medium: { batchSize: 50, flushIntervalMs: 500 }, high: { batchSize: 100, flushIntervalMs: 100 } })
    expect(defaultRateThresholds).toEqual({ mediumAbove: 10, highAbove: 100, windowMs: 1_000 })
    expect(defaultRetryPolicy).toEqual({ baseMs: 100, maxMs: 5_000 })
  })

  it('is the machine named batchFlusher', () => {
    expect(batchFlusherMachine.id).toBe('batchFlusher')
  })

  it('takes every state and transition of the machine', () => {
    coverage.assertComplete()
  })
})
