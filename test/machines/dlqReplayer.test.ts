import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { createActor, SimulatedClock } from 'xstate'
import {
  dlqReplayerMachine,
  type DlqReplayerEmitted,
  type DlqReplayerInput,
  type ReplayBatchInput,
  type ReplayBatchOutput,
} from '../../machines/dlqReplayer.js'
import { MachineCoverage } from '../helpers/coverage.js'
import { advanceClock, advanceExactly, checkAgainstModel, edgeName, emittedBy, heldPromise, modelEdges, settle, type Driver, type ReferenceModel } from '../helpers/machines.js'

const coverage = new MachineCoverage(dlqReplayerMachine)

// ---------------------------------------------------------------------------------------------
// The oracle: the replayer's rules as a reducer written from its documentation.

type Phase = 'waiting' | 'replaying' | 'idle'

type Step =
  | { type: 'healthy' }
  | { type: 'unhealthy' }
  | { type: 'changed'; depth: number }
  | { type: 'replay' }
  | { type: 'done'; output: ReplayBatchOutput }
  | { type: 'error'; error: unknown }
  | { type: 'wait'; ms: number }

interface Replayer {
  state: Phase
  depth: number
  sinkHealthy: boolean
  replayed: number
  parked: number
  lastError: string | null
  /** Time since waiting last (re-)entered: the poll fires at pollIntervalMs. */
  waitedFor: number
  /** Output of the last step. */
  emitted: DlqReplayerEmitted[]
}

function replayerModel(input: DlqReplayerInput): ReferenceModel<Replayer, Step> {
  const { name, sink, pollIntervalMs: poll } = input
  const toWaiting = (r: Replayer): Replayer => ({ ...r, state: 'waiting', waitedFor: 0 })

  // A poll in waiting: replay if it may, rest if the sink is healthy and the DLQ empty, else wait again.
  const wait = (r: Replayer, ms: number): Replayer => {
    if (r.state !== 'waiting') return r
    if (r.waitedFor + ms < poll) return { ...r, waitedFor: r.waitedFor + ms }
    const left = ms - (poll - r.waitedFor)
    if (r.sinkHealthy && r.depth > 0) return { ...r, state: 'replaying' }
    if (r.sinkHealthy) return { ...r, state: 'idle' }
    return wait(toWaiting(r), left)
  }

  const step = (prior: Replayer, e: Step): Replayer => {
    const r: Replayer = { ...prior, emitted: [] }
    if (e.type === 'wait') return wait(r, e.ms)
    // Health and depth are recorded in every state.
    const noted: Replayer =
      e.type === 'healthy' ? { ...r, sinkHealthy: true } : e.type === 'unhealthy' ? { ...r, sinkHealthy: false } : e.type === 'changed' ? { ...r, depth: e.depth } : r
    switch (r.state) {
      case 'waiting':
        if (e.type === 'healthy') return { ...noted, state: noted.depth > 0 ? 'replaying' : 'idle' }
        if (e.type === 'replay') return r.sinkHealthy ? { ...r, state: 'replaying' } : r
        return noted
      case 'replaying':
        if (e.type === 'done') {
          const { replayed, parked, remaining } = e.output
          const common = { name, sink, remaining }
          const emitted: DlqReplayerEmitted[] = [
            ...(replayed > 0 ? [{ type: 'dlq.replayed' as const, ...common, replayed }] : []),
            ...(parked > 0 ? [{ type: 'dlq.parked' as const, ...common, parked }] : []),
          ]
          const next = { ...r, depth: remaining, replayed: r.replayed + replayed, parked: r.parked + parked, lastError: null, emitted }
          if (remaining > 0 && r.sinkHealthy) return next // the next batch, at once
          return remaining > 0 ? toWaiting(next) : { ...next, state: 'idle' }
        }
        if (e.type === 'error') return toWaiting({ ...r, lastError: e.error instanceof Error ? e.error.message : String(e.error) })
        return noted // a call in flight always settles: health and depth are only noted
      case 'idle':
        if (e.type === 'changed' && e.depth > 0) return noted.sinkHealthy ? { ...noted, state: 'replaying' } : toWaiting(noted)
        if (e.type === 'replay') return r.sinkHealthy ? { ...r, state: 'replaying' } : toWaiting(r)
        return noted
    }
  }

  const initial: Replayer = { state: 'waiting', depth: input.depth ?? 0, sinkHealthy: input.sinkHealthy ?? false, replayed: 0, parked: 0, lastError: null, waitedFor: 0, emitted: [] }
  const events = (r: Replayer): Step[] => [
    { type: 'healthy' },
    { type: 'unhealthy' },
    { type: 'changed', depth: 0 },
    { type: 'changed', depth: 4 },
    { type: 'replay' },
    ...(r.state === 'replaying'
      ? [
          { type: 'done', output: { replayed: 2, parked: 0, remaining: 2 } } as const,
          { type: 'done', output: { replayed: 0, parked: 1, remaining: 1 } } as const,
          { type: 'done', output: { replayed: 1, parked: 1, remaining: 0 } } as const,
          { type: 'done', output: { replayed: 0, parked: 0, remaining: 0 } } as const,
          { type: 'error', error: new Error('connect ECONNREFUSED 127.0.0.1:5432') } as const,
          { type: 'error', error: 'store unavailable' } as const,
        ]
      : []),
    ...(r.state === 'waiting' ? [{ type: 'wait', ms: poll - r.waitedFor - 1 } as const, { type: 'wait', ms: poll - r.waitedFor } as const].filter((w) => w.ms > 0) : []),
    { type: 'wait', ms: poll * 3 },
  ]
  // What decides the next step: whether entries are left (not how many), health, and the poll's progress.
  const key = (r: Replayer) => JSON.stringify([r.state, r.depth > 0, r.sinkHealthy, r.state === 'waiting' ? r.waitedFor : null])
  return { initial, step, events, key }
}

const label = (e: Step): string =>
  e.type === 'changed' ? `changed(${e.depth})` : e.type === 'wait' ? `wait(${e.ms})` : e.type === 'done' ? `done(${JSON.stringify(e.output)})` : e.type === 'error' ? `error(${String(e.error)})` : e.type

// ---------------------------------------------------------------------------------------------
// Driving the real replayer.

function driver(input: DlqReplayerInput): Driver<Replayer, Step, ReturnType<typeof startReplayer>> {
  return {
    start: () => startReplayer(input),
    apply: async (run, e) => {
      if (e.type === 'done') run.replays.one().resolve(e.output)
      else if (e.type === 'error') run.replays.one().reject(e.error)
      else if (e.type === 'wait') advanceClock(run.clock, e.ms)
      else if (e.type === 'healthy') run.actor.send({ type: 'sink.healthy' })
      else if (e.type === 'unhealthy') run.actor.send({ type: 'sink.unhealthy' })
      else if (e.type === 'changed') run.actor.send({ type: 'dlq.changed', depth: e.depth })
      else run.actor.send({ type: 'replay' })
      // A settled call reaches the machine through promise callbacks: let them run.
      if (e.type === 'done' || e.type === 'error') await settle()
    },
    observe: (run) => {
      const snapshot = run.actor.getSnapshot()
      const { depth, sinkHealthy, replayed, parked, lastError } = snapshot.context
      return {
        state: snapshot.value,
        depth,
        sinkHealthy,
        replayed,
        parked,
        lastError,
        emitted: run.emitted.take(),
        // A replay is in flight exactly while replaying, and none is ever abandoned.
        inFlight: run.replays.live().map((c) => c.input),
        children: Object.keys(snapshot.children),
        abandoned: run.replays.calls.filter((c) => c.signal.aborted).length,
      }
    },
    expected: (r) => {
      const { state, depth, sinkHealthy, replayed, parked, lastError, emitted } = r
      const replaying = state === 'replaying'
      return { state, depth, sinkHealthy, replayed, parked, lastError, emitted, inFlight: replaying ? [{ sink: input.sink }] : [], children: replaying ? ['replayBatch'] : [], abandoned: 0 }
    },
    stop: (run) => run.actor.stop(),
  }
}

/** The real machine with a replayBatch whose calls the test holds and settles. */
const replays = heldPromise<ReplayBatchOutput, ReplayBatchInput>()
const heldMachine = dlqReplayerMachine.provide({ actors: { replayBatch: replays.logic } })

/** One run at a time: the held calls belong to the latest run. */
function startReplayer(input: DlqReplayerInput) {
  const clock = new SimulatedClock()
  replays.reset()
  const actor = createActor(heldMachine, { input, clock, inspect: coverage.inspect })
  const emitted = emittedBy(actor)
  actor.start()
  return { actor, clock, replays, emitted }
}

// ---------------------------------------------------------------------------------------------

describe('dlqReplayer against the reference model, every edge of its graph', () => {
  for (const input of [
    { name: 'dlqReplayer.store', sink: 'store', pollIntervalMs: 500 },
    { name: 'dlqReplayer.realtime', sink: 'realtime', pollIntervalMs: 300, depth: 3, sinkHealthy: true },
  ] satisfies DlqReplayerInput[]) {
    describe(`${input.name}, starting with depth ${input.depth ?? 'absent'}, healthy ${input.sinkHealthy ?? 'absent'}`, () => {
      const model = replayerModel(input)
      const edges = modelEdges(model)

      it('the model reaches every state', () => {
        expect(new Set(edges.map((e) => e.to.state))).toEqual(new Set(['waiting', 'replaying', 'idle']))
      })

      it.each(edges.map((e) => [edgeName(e, label), e] as const))('%s', async (_name, edge) => {
        await checkAgainstModel(model, driver(input), [...edge.path, edge.event], label)
      })
    })
  }
})

describe('dlqReplayer against the reference model, random inputs and steps (fast-check)', () => {
  const inputArb = fc.record(
    {
      name: fc.constant('dlqReplayer.store'),
      sink: fc.constantFrom('store', 'realtime'),
      pollIntervalMs: fc.integer({ min: 1, max: 50 }),
      depth: fc.integer({ min: 0, max: 5 }),
      sinkHealthy: fc.boolean(),
    },
    { requiredKeys: ['name', 'sink', 'pollIntervalMs'] },
  )
  const outputArb = fc.record({ replayed: fc.integer({ min: 0, max: 3 }), parked: fc.integer({ min: 0, max: 2 }), remaining: fc.integer({ min: 0, max: 4 }) })
  const stepArb = fc.oneof(
    fc.constantFrom<Step>({ type: 'healthy' }, { type: 'unhealthy' }, { type: 'replay' }),
    fc.integer({ min: 0, max: 5 }).map((depth): Step => ({ type: 'changed', depth })),
    outputArb.map((output): Step => ({ type: 'done', output })),
    fc.constantFrom<Step>({ type: 'error', error: new Error('ECONNREFUSED') }, { type: 'error', error: 'unavailable' }),
    fc.integer({ min: 1, max: 120 }).map((ms): Step => ({ type: 'wait', ms })),
  )

  it('matches the model after every step (settling a call only while one is in flight)', async () => {
    await fc.assert(
      fc.asyncProperty(inputArb, fc.array(stepArb, { maxLength: 40 }), async (input, raw) => {
        const model = replayerModel(input)
        // Keep the steps the test can cause: a call is settled only while replaying.
        const steps: Step[] = []
        let state = model.initial
        for (const e of raw) {
          if ((e.type === 'done' || e.type === 'error') && state.state !== 'replaying') continue
          steps.push(e)
          state = model.step(state, e)
        }
        await checkAgainstModel(model, driver(input), steps, label)
      }),
      { numRuns: 120 },
    )
  })
})

describe('dlqReplayer, scenarios stated by hand', () => {
  const input: DlqReplayerInput = { name: 'dlqReplayer.store', sink: 'store', pollIntervalMs: 1_000 }

  it('waits for a healthy sink, then drains batches until nothing remains', async () => {
    const run = startReplayer({ ...input, depth: 5 })
    run.clock.increment(10_000)
    expect(run.replays.calls).toHaveLength(0)
    run.actor.send({ type: 'sink.healthy' })
    expect(run.actor.getSnapshot().value).toBe('replaying')
    run.replays.one().resolve({ replayed: 2, parked: 0, remaining: 3 })
    await settle()
    run.replays.one().resolve({ replayed: 2, parked: 1, remaining: 0 })
    await settle()
    expect(run.actor.getSnapshot().value).toBe('idle')
    expect(run.actor.getSnapshot().context).toMatchObject({ depth: 0, replayed: 4, parked: 1 })
    expect(run.emitted.take()).toStrictEqual([
      { type: 'dlq.replayed', name: 'dlqReplayer.store', sink: 'store', replayed: 2, remaining: 3 },
      { type: 'dlq.replayed', name: 'dlqReplayer.store', sink: 'store', replayed: 2, remaining: 0 },
      { type: 'dlq.parked', name: 'dlqReplayer.store', sink: 'store', parked: 1, remaining: 0 },
    ])
  })

  it('sink.unhealthy during a replay lets the call settle, then waits; polls keep waiting while unhealthy', async () => {
    const run = startReplayer({ ...input, depth: 5, sinkHealthy: true })
    advanceExactly(run.clock, 1_000, () => run.actor.getSnapshot().value)
    expect(run.actor.getSnapshot().value).toBe('replaying')
    run.actor.send({ type: 'sink.unhealthy' })
    expect(run.replays.calls[0]!.signal.aborted).toBe(false)
    run.replays.one().resolve({ replayed: 1, parked: 0, remaining: 4 })
    await settle()
    expect(run.actor.getSnapshot().value).toBe('waiting')
    run.clock.increment(5_000)
    expect(run.actor.getSnapshot().value).toBe('waiting')
    expect(run.replays.calls).toHaveLength(1)
    run.actor.send({ type: 'sink.healthy' })
    expect(run.actor.getSnapshot().value).toBe('replaying')
  })

  it('a failed replay waits one poll interval before trying again, even if the sink still looks healthy', async () => {
    const run = startReplayer({ ...input, depth: 2, sinkHealthy: true })
    run.actor.send({ type: 'replay' })
    run.replays.one().reject(new Error('connect ECONNREFUSED 127.0.0.1:5432'))
    await settle()
    expect(run.actor.getSnapshot().value).toBe('waiting')
    expect(run.actor.getSnapshot().context.lastError).toBe('connect ECONNREFUSED 127.0.0.1:5432')
    advanceExactly(run.clock, 1_000, () => run.actor.getSnapshot().value)
    expect(run.actor.getSnapshot().value).toBe('replaying')
    expect(run.replays.calls).toHaveLength(2)
  })

  it('the placeholder replayBatch says what is missing', async () => {
    const actor = createActor(dlqReplayerMachine, { input: { ...input, depth: 1 }, inspect: coverage.inspect }).start()
    actor.send({ type: 'sink.healthy' })
    await settle()
    expect(actor.getSnapshot().value).toBe('waiting')
    expect(actor.getSnapshot().context.lastError).toBe("dlqReplayer 'store': no replayBatch actor provided")
    actor.stop()
  })

  it('is the machine named dlqReplayer', () => {
    expect(dlqReplayerMachine.id).toBe('dlqReplayer')
  })

  it('covers every state and transition of the machine', () => {
    coverage.assertComplete()
  })
})
