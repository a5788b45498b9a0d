import { describe, expect, it } from 'vitest'
import { createActor, fromPromise, SimulatedClock } from 'xstate'
import type { AnyEventObject, AnyMachineSnapshot, AnyStateMachine } from 'xstate'
import { adjacencyMapToArray, getAdjacencyMap, getShortestPaths } from 'xstate/graph'
import {
  defaultRetryApplyMs,
  defaultRolloutGates,
  defaultRolloutStages,
  evaluateGates,
  persistedRolloutOf,
  rolloutControllerMachine,
  type ApplyPercentInput,
  type ApplyPercentOutput,
  type HealthReport,
  type PersistedRollout,
  type RolloutEmitted,
  type RolloutEvent,
  type RolloutInput,
} from '../../machines/rolloutController.js'
import { MachineCoverage } from '../helpers/coverage.js'

const coverage = new MachineCoverage(rolloutControllerMachine)
const settle = () => new Promise<void>((resolve) => setImmediate(resolve))

interface ApplyCall {
  input: ApplyPercentInput
  signal: AbortSignal
  settled: boolean
  resolve: (output: ApplyPercentOutput) => void
  reject: (error: Error) => void
}

/**
 * The real machine with an applyPercent the test controls: `held` calls wait to be settled by
 * hand; otherwise each call is settled at once by `decide` (an Error rejects, else it resolves at
 * the simulated clock's time).
 */
function harness(decide?: (input: ApplyPercentInput, clock: SimulatedClock) => Error | null) {
  const calls: ApplyCall[] = []
  let clock = new SimulatedClock()
  const machine = rolloutControllerMachine.provide({
    actors: {
      applyPercent: fromPromise<ApplyPercentOutput, ApplyPercentInput>(
        ({ input, signal }) =>
          new Promise<ApplyPercentOutput>((resolve, reject) => {
            const call: ApplyCall = {
              input,
              signal,
              settled: false,
              resolve: (o) => ((call.settled = true), resolve(o)),
              reject: (e) => ((call.settled = true), reject(e)),
            }
            calls.push(call)
            const error = decide?.(input, clock)
            if (error) call.reject(error)
            else if (decide) call.resolve({ at: clock.now() })
          }),
      ),
    },
  })
  const start = (input: RolloutInput) => {
    calls.length = 0
    clock = new SimulatedClock()
    const actor = createActor(machine, { input, clock, inspect: coverage.inspect })
    const emitted: RolloutEmitted[] = []
    actor.on('*', (e) => emitted.push(e))
    actor.start()
    const send = async (event: RolloutEvent) => {
      actor.send(event)
      await settle()
    }
    const tick = async (ms: number) => {
      clock.increment(ms)
      await settle()
    }
    const live = () => calls.filter((c) => !c.settled && !c.signal.aborted)
    const snap = () => actor.getSnapshot()
    return { actor, clock, calls, live, emitted, send, tick, snap, applied: () => calls.map((c) => c.input.percent) }
  }
  return { machine, calls, start }
}

const report = (at: number, over: Partial<HealthReport> = {}): RolloutEvent => ({
  type: 'health.reported',
  consistencyPct: 99.97,
  errorRatePct: 0.02,
  p99LatencyMs: 45,
  samples: 5_000,
  breakerClosed: true,
  at,
  ...over,
})

// ---------------------------------------------------------------------------------------------
// Model-based: every edge of the statechart (under the behaviour-relevant state key), reached by
// its shortest path and replayed against the real actor with held applyPercent calls.

describe('rolloutController, model-based', () => {
  const input: RolloutInput = { stages: [50, 100], soakMs: 1_000, gates: { ...defaultRolloutGates, minSamples: 10 }, retryApplyMs: 300 }
  const model: AnyStateMachine = rolloutControllerMachine
  const reports: Record<string, AnyEventObject> = {
    good: { type: 'health.reported', consistencyPct: 100, errorRatePct: 0, p99LatencyMs: 20, samples: 50, breakerClosed: true, at: 1 },
    badConsistency: { type: 'health.reported', consistencyPct: 99.2, errorRatePct: 0, p99LatencyMs: 20, samples: 50, breakerClosed: true, at: 2 },
    missing: { type: 'health.reported', consistencyPct: null, errorRatePct: null, p99LatencyMs: null, samples: 0, breakerClosed: true, at: 3 },
    breakerOpen: { type: 'health.reported', consistencyPct: 100, errorRatePct: 0, p99LatencyMs: 20, samples: 50, breakerClosed: false, at: 4 },
  }
  const soakEvent = 'xstate.after.soak.rolloutController.soaking.live'
  const retryEvent = 'xstate.after.retryApply.rolloutController.rollingBack.waiting'
  const allEvents: AnyEventObject[] = [
    ...Object.values(reports),
    { type: 'breaker.opened', at: 5 },
    ...['start', 'pause', 'resume', 'abort'].map((c) => ({ type: `rollout.${c}`, at: 6 })),
    ...[0, 40, 100, 101].map((percent) => ({ type: 'rollout.set', percent, at: 6 })),
    { type: 'xstate.done.actor.applyPercent', output: { at: 7 } },
    { type: 'xstate.error.actor.applyPercent', error: new Error('store down') },
    { type: soakEvent },
    { type: retryEvent },
  ]
  // History and report counts grow without bound and only record; the latest report matters only while soaking.
  const serialize = (s: AnyMachineSnapshot) =>
    JSON.stringify({ value: s.value, percent: s.context.percent, target: s.context.target?.percent ?? null, latest: s.matches({ soaking: 'live' }) ? s.context.latest : null })
  const options = { input, serializeState: serialize, limit: 10_000, events: (s: AnyMachineSnapshot) => allEvents.filter((e) => s.can(e)) }
  const adjacency = getAdjacencyMap(model, options)
  const shortest = new Map(getShortestPaths(model, options).map((p) => [serialize(p.state), p]))
  const label = (e: AnyEventObject) =>
    e.type === 'health.reported'
      ? `report(${Object.keys(reports).find((k) => reports[k]!.at === e.at)})`
      : e.type === 'rollout.set'
        ? `set(${e.percent})`
        : e.type.replace('xstate.after.', 'after ').replace(/\.rolloutController.*$/, '').replace('xstate.', '')
  const edges = adjacencyMapToArray(adjacency).map(({ state, event, nextState: next }) => {
    const head = shortest.get(serialize(state))!
    return { head, event, next, name: `${head.steps.slice(1).map((s) => label(s.event)).join(' → ') || '(start)'} → ${label(event)}` }
  })
  const { start } = harness()
  const applyingStates = [{ soaking: 'applying' }, { rollingBack: 'applying' }, { complete: 'applying' }]
  const phaseOf = (s: AnyMachineSnapshot) => (typeof s.value === 'string' ? s.value : Object.keys(s.value)[0])

  it('the model reaches every resting state, and the invalid percent is never accepted', () => {
    const values = new Set([...shortest.values()].map((p) => JSON.stringify(p.state.value)))
    expect(values).toEqual(
      new Set(['inactive', { soaking: 'applying' }, { soaking: 'live' }, 'paused', { rollingBack: 'applying' }, { rollingBack: 'waiting' }, 'rolledBack', { complete: 'applying' }, { complete: 'done' }].map((v) => JSON.stringify(v))),
    )
    expect(edges.some((e) => e.event.type === 'rollout.set' && e.event.percent === 101)).toBe(false)
    expect(edges.length).toBeGreaterThan(200)
  })

  // Path states are the traversal's representatives of their key: compared by key; the real
  // actor's own previous snapshot is what each step's announcements are checked against.
  it.each(edges.map((e) => [e.name, e] as const))('%s', async (_name, { head, event, next }) => {
    const run = start(input)
    let before = run.snap()
    expect(serialize(before)).toEqual(serialize(head.steps[0]!.state))
    for (const [i, step] of [...head.steps.slice(1), { event, state: next }].entries()) {
      const where = `step ${i}: ${label(step.event)}`
      run.emitted.length = 0
      if (step.event.type === 'xstate.done.actor.applyPercent' || step.event.type === 'xstate.error.actor.applyPercent') {
        const [call, ...extra] = run.live()
        expect(extra, where).toHaveLength(0)
        if (step.event.type === 'xstate.done.actor.applyPercent') call!.resolve(step.event.output)
        else call!.reject(step.event.error)
        await settle()
      } else if (step.event.type === soakEvent || step.event.type === retryEvent) {
        const ms = step.event.type === soakEvent ? input.soakMs : input.retryApplyMs!
        run.clock.increment(ms - 1)
        expect(run.snap().value, `${where}: nothing before the delay`).toEqual(before.value)
        await run.tick(1)
      } else await run.send(step.event as RolloutEvent)

      const actual = run.snap()
      expect(serialize(actual), where).toEqual(serialize(step.state))
      const { percent, reason, manual, target, stageIndex, history } = actual.context
      expect(stageIndex, where).toBe(input.stages!.filter((s) => s <= percent).length - 1)
      // One applyPercent call in flight exactly while applying, for the target.
      const applying = applyingStates.some((v) => actual.matches(v))
      expect(run.live().map((c) => c.input), where).toEqual(applying ? [target] : [])
      // rollout.changed once a change is applied (and in history), rollout.evaluated at each soak's end.
      const changed = { type: 'rollout.changed', percent, state: phaseOf(actual), reason, manual }
      const committed = { at: 7, from: before.context.history.at(-1)?.to ?? 'inactive', to: phaseOf(actual), percent, reason, ...(manual ? { manual } : {}) }
      if (step.event.type === 'xstate.done.actor.applyPercent') {
        expect(percent, where).toBe(before.context.target!.percent)
        expect(run.emitted, where).toEqual([changed])
        expect(history.at(-1), where).toEqual(committed)
      } else if (step.event.type === soakEvent) {
        const { pass, results, reason: failed } = evaluateGates(before.context.latest, input.gates)
        const completed = actual.matches({ complete: 'done' })
        expect(run.emitted, where).toEqual([{ type: 'rollout.evaluated', pass, gateResults: results, ...(failed ? { reason: failed } : {}) }, ...(completed ? [changed] : [])])
        expect(actual.context.gateResults, where).toEqual(results)
        if (!pass) expect(target, where).toEqual({ percent: 0, reason: failed, manual: false })
        if (completed) expect(history.at(-1), where).toEqual({ ...committed, at: before.context.latest!.at })
      } else expect(run.emitted, where).toEqual([])
      before = actual
    }
    run.actor.stop()
  })
})

// ---------------------------------------------------------------------------------------------
// Scenarios on xstate's SimulatedClock, with applyPercent succeeding (or failing) at once.

const gates = defaultRolloutGates
const soakMs = 60_000
type Run = ReturnType<ReturnType<typeof harness>['start']>

/** Soaks the current stage with a report every 5 s, checking nothing happens before soakMs. */
async function soak(run: Run, over: Partial<HealthReport> | null = {}): Promise<void> {
  expect(run.snap().value).toEqual({ soaking: 'live' })
  for (let t = 5_000; t < soakMs; t += 5_000) {
    await run.tick(5_000)
    if (over) await run.send(report(run.clock.now(), over))
  }
  await run.tick(4_999)
  expect(run.snap().value).toEqual({ soaking: 'live' })
  await run.tick(1)
}

const changes = (run: Run) => run.emitted.filter((e) => e.type === 'rollout.changed')

describe('rolloutController, scenarios', () => {
  const ok = harness(() => null)

  it('a full run on fake clocks: 0 → 25 → 50 → 75 → 100 with good reports', async () => {
    const run = ok.start({ soakMs, gates })
    expect(run.snap().value).toBe('inactive')
    expect(run.snap().context).toMatchObject({ percent: 0, stageIndex: -1, stages: [25, 50, 75, 100] })
    await run.send({ type: 'rollout.start', at: 0 })
    for (const stage of [25, 50, 75, 100]) {
      expect(run.snap().context).toMatchObject({ percent: stage, stageIndex: [25, 50, 75, 100].indexOf(stage), manual: false })
      await soak(run)
    }
    const s = run.snap()
    expect(s.value).toEqual({ complete: 'done' })
    expect(run.applied()).toEqual([25, 50, 75, 100])
    expect(run.calls.map((c) => c.input)).toEqual([
      { percent: 25, reason: 'started', manual: false },
      ...[50, 75, 100].map((percent) => ({ percent, reason: 'gatesPassed', manual: false })),
    ])
    expect(changes(run)).toEqual([
      { type: 'rollout.changed', percent: 25, state: 'soaking', reason: 'started', manual: false },
      ...[50, 75, 100].map((percent) => ({ type: 'rollout.changed', percent, state: 'soaking', reason: 'gatesPassed', manual: false })),
      { type: 'rollout.changed', percent: 100, state: 'complete', reason: 'gatesPassed', manual: false },
    ])
    expect(run.emitted.filter((e) => e.type === 'rollout.evaluated').map((e) => e.type === 'rollout.evaluated' && e.pass)).toEqual([true, true, true, true])
    expect(s.context.gateResults.every((g) => g.pass)).toBe(true)
    expect(s.context.history).toEqual([
      { at: 0, from: 'inactive', to: 'soaking', percent: 25, reason: 'started' },
      { at: 60_000, from: 'soaking', to: 'soaking', percent: 50, reason: 'gatesPassed' },
      { at: 120_000, from: 'soaking', to: 'soaking', percent: 75, reason: 'gatesPassed' },
      { at: 180_000, from: 'soaking', to: 'soaking', percent: 100, reason: 'gatesPassed' },
      { at: 235_000, from: 'soaking', to: 'complete', percent: 100, reason: 'gatesPassed' },
    ])
    expect(s.context.reports).toBe(11)
    expect(persistedRolloutOf(s)).toEqual({ state: 'complete', percent: 100, stageIndex: 3, reason: 'gatesPassed', manual: false, history: s.context.history })
    // complete is not a stage: start is refused (src answers 409), the percent stays.
    expect(s.can({ type: 'rollout.start', at: 1 })).toBe(false)
  })

  it('consistency drops at 50 % → rolled back to 0 with the reason naming consistency', async () => {
    const run = ok.start({ soakMs, gates })
    await run.send({ type: 'rollout.start', at: 0 })
    await soak(run)
    expect(run.snap().context.percent).toBe(50)
    await soak(run, { consistencyPct: 99.2 })
    const s = run.snap()
    expect(s.value).toBe('rolledBack')
    expect(s.context).toMatchObject({ percent: 0, stageIndex: -1, reason: 'consistency 99.2% < 99.9%', target: null })
    expect(s.context.gateResults.find((g) => g.gate === 'consistency')).toEqual({ gate: 'consistency', value: 99.2, threshold: 99.9, pass: false })
    expect(run.calls.map((c) => c.input)).toEqual([
      { percent: 25, reason: 'started', manual: false },
      { percent: 50, reason: 'gatesPassed', manual: false },
      { percent: 0, reason: 'consistency 99.2% < 99.9%', manual: false },
    ])
    expect(run.emitted.at(-2)).toMatchObject({ type: 'rollout.evaluated', pass: false, reason: 'consistency 99.2% < 99.9%' })
    expect(changes(run).at(-1)).toEqual({ type: 'rollout.changed', percent: 0, state: 'rolledBack', reason: 'consistency 99.2% < 99.9%', manual: false })
    expect(s.context.history.at(-1)).toEqual({ at: 120_000, from: 'soaking', to: 'rolledBack', percent: 0, reason: 'consistency 99.2% < 99.9%' })
    expect(persistedRolloutOf(s)).toMatchObject({ state: 'rolledBack', percent: 0, reason: 'consistency 99.2% < 99.9%' })
    // A rolled-back rollout can be started again, from the first stage.
    await run.send({ type: 'rollout.start', at: 130_000 })
    expect(run.snap().context).toMatchObject({ percent: 25, reason: 'started' })
  })

  it.each([
    ['null figures', { consistencyPct: null, errorRatePct: null, p99LatencyMs: null }, 'consistency missing; error rate missing; p99 latency missing'],
    ['too few samples', { samples: 10 }, 'samples 10 < 1000'],
    ['several gates at once', { errorRatePct: 0.5, p99LatencyMs: 250 }, 'error rate 0.5% ≥ 0.1%; p99 latency 250 ms ≥ 100 ms'],
    ['no report at all in the soak', null, 'no health report'],
  ] as const)('missing or failing metrics roll back: %s', async (_name, over, reason) => {
    const run = ok.start({ soakMs, gates })
    await run.send({ type: 'rollout.start', at: 0 })
    await soak(run, over)
    expect(run.snap().value).toBe('rolledBack')
    expect(run.snap().context.reason).toBe(reason)
    expect(run.applied()).toEqual([25, 0])
  })

  it('a report from the previous stage is not evidence for the next one', async () => {
    const run = ok.start({ soakMs, gates })
    await run.send({ type: 'rollout.start', at: 0 })
    await soak(run)
    expect(run.snap().context).toMatchObject({ percent: 50, latest: null, reports: 0 })
    await soak(run, null)
    expect(run.snap().context.reason).toBe('no health report')
  })

  it.each([
    ['breaker.opened', { type: 'breaker.opened', at: 30_000 }],
    ['a report with the breaker open', report(30_000, { breakerClosed: false })],
  ] as const)('%s mid-soak rolls back at once', async (_name, event) => {
    const run = ok.start({ soakMs, gates })
    await run.send({ type: 'rollout.start', at: 0 })
    await run.tick(30_000)
    run.actor.send(event)
    expect(run.snap().value).toEqual({ rollingBack: 'applying' })
    await settle()
    expect(run.snap().value).toBe('rolledBack')
    expect(run.snap().context).toMatchObject({ percent: 0, reason: 'breakerOpen' })
    expect(run.applied()).toEqual([25, 0])
    // The soak timer went with the state.
    await run.tick(soakMs)
    expect(run.emitted.some((e) => e.type === 'rollout.evaluated')).toBe(false)
  })

  it('breaker open reports outside a stage are only recorded', async () => {
    const run = ok.start({ soakMs, gates })
    await run.send(report(1, { breakerClosed: false }))
    expect(run.snap().value).toBe('inactive')
    expect(run.snap().context.latest).toMatchObject({ breakerClosed: false, at: 1 })
    expect(run.snap().can({ type: 'breaker.opened', at: 2 })).toBe(false)
  })

  it('pause holds the stage past its soak; resume restarts the soak', async () => {
    const run = ok.start({ soakMs, gates })
    await run.send({ type: 'rollout.start', at: 0 })
    await run.tick(30_000)
    await run.send({ type: 'rollout.pause', at: 30_000 })
    expect(run.snap().value).toBe('paused')
    await run.tick(10 * soakMs)
    expect(run.snap().value).toBe('paused')
    expect(run.emitted.some((e) => e.type === 'rollout.evaluated')).toBe(false)
    expect(run.snap().can({ type: 'rollout.pause', at: 1 })).toBe(false)
    await run.send({ type: 'rollout.resume', at: 630_000 })
    expect(run.snap().value).toEqual({ soaking: 'live' })
    await soak(run)
    expect(run.snap().context.percent).toBe(50)
    expect(run.applied()).toEqual([25, 50])
    expect(run.snap().context.history.slice(1, 3)).toEqual([
      { at: 30_000, from: 'soaking', to: 'paused', percent: 25 },
      { at: 630_000, from: 'paused', to: 'soaking', percent: 25 },
    ])
    expect(persistedRolloutOf(run.snap())).toMatchObject({ state: 'soaking', percent: 50, stageIndex: 1 })
  })

  it.each([
    ['breaker.opened', { type: 'breaker.opened', at: 2 }],
    ['a report with the breaker open', report(2, { breakerClosed: false })],
  ] as const)('%s while paused rolls back', async (_name, event) => {
    const run = ok.start({ soakMs, gates })
    await run.send({ type: 'rollout.start', at: 0 })
    await run.send({ type: 'rollout.pause', at: 1 })
    expect(persistedRolloutOf(run.snap())).toMatchObject({ state: 'paused', percent: 25 })
    await run.send(event)
    expect(run.snap().context).toMatchObject({ percent: 0, reason: 'breakerOpen' })
  })

  it.each(['soaking', 'paused'] as const)('abort from %s rolls back with reason aborted', async (from) => {
    const run = ok.start({ soakMs, gates })
    await run.send({ type: 'rollout.start', at: 0 })
    if (from === 'paused') await run.send({ type: 'rollout.pause', at: 1 })
    await run.send({ type: 'rollout.abort', at: 2 })
    expect(run.snap().value).toBe('rolledBack')
    expect(run.snap().context).toMatchObject({ percent: 0, reason: 'aborted', manual: false })
    expect(run.calls.at(-1)!.input).toEqual({ percent: 0, reason: 'aborted', manual: false })
    expect(run.snap().can({ type: 'rollout.abort', at: 3 })).toBe(false)
  })

  it('a manual override is recorded as manual; the gates carry on from there', async () => {
    const run = ok.start({ soakMs, gates })
    await run.send({ type: 'rollout.set', percent: 40, at: 5 })
    expect(run.snap().value).toEqual({ soaking: 'live' })
    expect(run.snap().context).toMatchObject({ percent: 40, stageIndex: 0, manual: true, reason: 'manual' })
    expect(run.calls.at(-1)!.input).toEqual({ percent: 40, reason: 'manual', manual: true })
    expect(changes(run).at(-1)).toEqual({ type: 'rollout.changed', percent: 40, state: 'soaking', reason: 'manual', manual: true })
    expect(run.snap().context.history).toEqual([{ at: 0, from: 'inactive', to: 'soaking', percent: 40, reason: 'manual', manual: true }])
    await soak(run)
    expect(run.snap().context).toMatchObject({ percent: 50, manual: false, reason: 'gatesPassed' })

    await run.send({ type: 'rollout.set', percent: 100, at: 70_000 })
    expect(run.snap().value).toEqual({ complete: 'done' })
    expect(run.snap().context).toMatchObject({ percent: 100, manual: true })
    await run.send({ type: 'rollout.set', percent: 0, at: 80_000 })
    expect(run.snap().value).toBe('rolledBack')
    expect(run.snap().context).toMatchObject({ percent: 0, manual: true, reason: 'manual' })
    expect(run.applied()).toEqual([40, 50, 100, 0])
    expect(run.snap().context.history.slice(-2)).toEqual([
      { at: 60_000, from: 'soaking', to: 'complete', percent: 100, reason: 'manual', manual: true },
      { at: 60_000, from: 'complete', to: 'rolledBack', percent: 0, reason: 'manual', manual: true },
    ])
  })

  it.each([-1, 101, 12.5, Number.NaN, Infinity])('an invalid percent (%s) is ignored', async (percent) => {
    const run = ok.start({ soakMs, gates })
    await run.send({ type: 'rollout.start', at: 0 })
    const before = run.snap()
    const event: RolloutEvent = { type: 'rollout.set', percent, at: 1 }
    expect(before.can(event)).toBe(false)
    await run.send(event)
    expect(run.snap().value).toEqual(before.value)
    expect(run.snap().context).toEqual(before.context)
    expect(run.applied()).toEqual([25])
  })

  it('restore mid-rollout (soaking at 50) resumes the stage: the soak restarts, then 75', async () => {
    const history = [
      { at: 0, from: 'inactive', to: 'soaking', percent: 25, reason: 'started' },
      { at: 60_000, from: 'soaking', to: 'soaking', percent: 50, reason: 'gatesPassed' },
    ] as const
    const restore: PersistedRollout = { state: 'soaking', percent: 50, stageIndex: 1, reason: 'gatesPassed', history: [...history] }
    const run = ok.start({ soakMs, gates, restore })
    expect(run.snap().value).toEqual({ soaking: 'live' })
    expect(run.snap().context).toMatchObject({ percent: 50, stageIndex: 1, restoredAs: 'soaking', latest: null })
    expect(run.calls).toEqual([])
    expect(run.emitted).toEqual([])
    expect(persistedRolloutOf(run.snap())).toEqual({ ...restore, manual: false })
    await soak(run)
    expect(run.applied()).toEqual([75])
    expect(run.snap().context.history).toEqual([...history, { at: 60_000, from: 'soaking', to: 'soaking', percent: 75, reason: 'gatesPassed' }])
  })

  it.each([
    [{ state: 'paused', percent: 75, stageIndex: 2, history: [] }, 'paused', 75],
    [{ state: 'rolledBack', percent: 0, stageIndex: -1, reason: 'breakerOpen', history: [] }, 'rolledBack', 0],
    [{ state: 'complete', percent: 100, stageIndex: 3, history: [] }, { complete: 'done' }, 100],
    [{ state: 'inactive', percent: 0, stageIndex: -1, history: [] }, 'inactive', 0],
  ] as const)('restore %j resumes as it was, applying nothing', async (restore, value, percent) => {
    const run = ok.start({ soakMs, gates, restore: { ...restore, history: [] } })
    expect(run.snap().value).toEqual(value)
    expect(run.snap().context.percent).toBe(percent)
    expect(run.calls).toEqual([])
    expect(persistedRolloutOf(run.snap())).toMatchObject({ state: restore.state, percent })
  })

  it('restore of a rollback in progress completes the rollback', async () => {
    const held = harness()
    const run = held.start({ soakMs, gates, restore: { state: 'rollingBack', percent: 50, stageIndex: 1, reason: 'consistency 99.2% < 99.9%', history: [] } })
    expect(run.snap().value).toEqual({ rollingBack: 'applying' })
    expect(persistedRolloutOf(run.snap())).toMatchObject({ state: 'rollingBack', percent: 50, reason: 'consistency 99.2% < 99.9%' })
    expect(run.live().map((c) => c.input)).toEqual([{ percent: 0, reason: 'consistency 99.2% < 99.9%', manual: false }])
    run.live()[0]!.resolve({ at: 9 })
    await settle()
    expect(run.snap().value).toBe('rolledBack')
    expect(run.snap().context.history).toEqual([{ at: 9, from: 'inactive', to: 'rolledBack', percent: 0, reason: 'consistency 99.2% < 99.9%' }])
  })

  it.each([
    { state: 'soaking', percent: 0 },
    { state: 'complete', percent: 75 },
    { state: 'rolledBack', percent: 25 },
    { state: 'paused', percent: 250 },
    { state: 'evaluating', percent: 50 },
  ] as const)('an inconsistent restore record %j rolls back, saying why', async (bad) => {
    const run = ok.start({ soakMs, gates, restore: { ...bad, stageIndex: 0, history: [] } as unknown as PersistedRollout })
    await settle()
    expect(run.snap().value).toBe('rolledBack')
    expect(run.snap().context.reason).toBe(`invalid restore record: ${bad.state} at ${bad.percent} %`)
    expect(run.applied()).toEqual([0])
  })

  it('a failed advance rolls back; a failed rollback is retried after retryApply until it lands', async () => {
    let failures = 0
    const flaky = harness((input) => (input.percent === 50 || (input.percent === 0 && failures++ < 2) ? new Error('store down') : null))
    const run = flaky.start({ soakMs, gates })
    expect(run.snap().context.retryApplyMs).toBe(defaultRetryApplyMs)
    await run.send({ type: 'rollout.start', at: 0 })
    await soak(run)
    expect(run.snap().value).toEqual({ rollingBack: 'waiting' })
    expect(run.snap().context).toMatchObject({ percent: 25, lastError: 'store down', target: { percent: 0, reason: 'applyFailed: store down' } })
    expect(persistedRolloutOf(run.snap())).toMatchObject({ state: 'rollingBack', percent: 25, reason: 'applyFailed: store down' })
    await run.tick(defaultRetryApplyMs - 1)
    expect(run.applied()).toEqual([25, 50, 0])
    await run.tick(1)
    expect(run.snap().value).toEqual({ rollingBack: 'waiting' })
    await run.tick(defaultRetryApplyMs)
    expect(run.snap().value).toBe('rolledBack')
    expect(run.snap().context).toMatchObject({ percent: 0, reason: 'applyFailed: store down', lastError: null })
    expect(run.applied()).toEqual([25, 50, 0, 0, 0])
  })

  it('a failed move to 100 % rolls back', async () => {
    const run = harness((input) => (input.percent === 100 ? new Error('publish failed') : null)).start({ soakMs, gates })
    await run.send({ type: 'rollout.set', percent: 100, at: 0 })
    expect(run.snap().value).toBe('rolledBack')
    expect(run.snap().context.reason).toBe('applyFailed: publish failed')
  })

  it('stages are sorted and deduplicated; passing a last stage below 100 % applies 100 %', async () => {
    const run = ok.start({ soakMs, gates, stages: [50, 25, 25, 0, 150, 12.5] })
    expect(run.snap().context.stages).toEqual([25, 50])
    await run.send({ type: 'rollout.start', at: 0 })
    await soak(run)
    await soak(run)
    expect(run.snap().value).toEqual({ complete: 'done' })
    expect(run.applied()).toEqual([25, 50, 100])
    expect(ok.start({ soakMs, gates, stages: [] }).snap().context.stages).toEqual([...defaultRolloutStages])
  })

  it('an advance in flight persists at its target', () => {
    const run = harness().start({ soakMs, gates })
    run.actor.send({ type: 'rollout.start', at: 0 })
    expect(run.snap().value).toEqual({ soaking: 'applying' })
    expect(persistedRolloutOf(run.snap())).toEqual({ state: 'soaking', percent: 25, stageIndex: 0, reason: 'started', manual: false, history: [] })
    run.actor.send({ type: 'rollout.set', percent: 100, at: 1 })
    expect(persistedRolloutOf(run.snap())).toMatchObject({ state: 'complete', percent: 100, manual: true })
  })

  it('history keeps the last 50 entries', async () => {
    const run = ok.start({ soakMs, gates })
    for (let i = 0; i < 30; i++) {
      await run.send({ type: 'rollout.set', percent: 10 + i, at: i })
      await run.send({ type: 'rollout.pause', at: i })
    }
    const { history } = run.snap().context
    expect(history).toHaveLength(50)
    expect(history.at(-1)).toEqual({ at: 29, from: 'soaking', to: 'paused', percent: 39 })
  })

  it('the placeholder applyPercent says what is missing, and the rollback keeps retrying', async () => {
    const clock = new SimulatedClock()
    const actor = createActor(rolloutControllerMachine, { input: { soakMs, gates }, clock, inspect: coverage.inspect }).start()
    actor.send({ type: 'rollout.start', at: 0 })
    await settle()
    await settle()
    expect(actor.getSnapshot().value).toEqual({ rollingBack: 'waiting' })
    expect(actor.getSnapshot().context.lastError).toBe('rolloutController: no applyPercent actor provided (0 %)')
    actor.stop()
  })
})

describe('evaluateGates', () => {
  const good: HealthReport = { consistencyPct: 99.95, errorRatePct: 0.01, p99LatencyMs: 50, samples: 1_000, breakerClosed: true, at: 0 }
  const failing = (over: Partial<HealthReport>) => evaluateGates({ ...good, ...over }, gates)

  it('passes a healthy report and reports every gate', () => {
    expect(evaluateGates(good, gates)).toEqual({
      pass: true,
      results: [
        { gate: 'consistency', value: 99.95, threshold: 99.9, pass: true },
        { gate: 'errorRate', value: 0.01, threshold: 0.1, pass: true },
        { gate: 'p99Latency', value: 50, threshold: 100, pass: true },
        { gate: 'breaker', value: true, threshold: true, pass: true },
        { gate: 'samples', value: 1_000, threshold: 1_000, pass: true },
      ],
    })
  })

  it.each([
    ['consistency exactly 99.9 passes', { consistencyPct: 99.9 }, true, undefined],
    ['consistency 99.89 fails', { consistencyPct: 99.89 }, false, 'consistency 99.89% < 99.9%'],
    ['error rate exactly 0.1 fails', { errorRatePct: 0.1 }, false, 'error rate 0.1% ≥ 0.1%'],
    ['error rate 0.099 passes', { errorRatePct: 0.099 }, true, undefined],
    ['p99 exactly 100 ms fails', { p99LatencyMs: 100 }, false, 'p99 latency 100 ms ≥ 100 ms'],
    ['p99 99.9 ms passes', { p99LatencyMs: 99.9 }, true, undefined],
    ['samples exactly minSamples pass', { samples: 1_000 }, true, undefined],
    ['one sample short fails', { samples: 999 }, false, 'samples 999 < 1000'],
    ['an open breaker fails', { breakerClosed: false }, false, 'breaker open'],
    ['a null consistency is missing data', { consistencyPct: null }, false, 'consistency missing'],
    ['NaN is missing data', { p99LatencyMs: Number.NaN }, false, 'p99 latency missing'],
  ] as const)('%s', (_name, over, pass, reason) => {
    const result = failing(over)
    expect(result.pass).toBe(pass)
    expect(result.reason).toBe(reason)
  })

  it('no report fails every gate', () => {
    const result = evaluateGates(null, gates)
    expect(result.pass).toBe(false)
    expect(result.reason).toBe('no health report')
    expect(result.results.every((r) => !r.pass && r.value === null)).toBe(true)
  })
})

describe('rolloutController, coverage', () => {
  it('covers every state and transition of the machine', () => {
    coverage.assertComplete()
  })
})
