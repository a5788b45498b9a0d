import { describe, expect, it } from 'vitest'
import { createActor, fromPromise, SimulatedClock } from 'xstate'
import {
  defaultRetryApplyMs,
  defaultRolloutGates,
  defaultRolloutStages,
  evaluateGates,
  persistedRolloutOf,
  rolloutControllerMachine,
  type ApplyPercentInput,
  type ApplyPercentOutput,
  type GateResult,
  type HealthReport,
  type ObtainReportInput,
  type PersistedRollout,
  type RolloutEmitted,
  type RolloutEvent,
  type RolloutHistoryEntry,
  type RolloutInput,
} from '../../machines/rolloutController.js'
import { MachineCoverage } from '../helpers/coverage.js'
import { advanceExactly, checkAgainstModel, emittedBy, heldPromise, modelEdges, settle, type Driver, type ReferenceModel } from '../helpers/machines.js'

const coverage = new MachineCoverage(rolloutControllerMachine)

// ---------------------------------------------------------------------------------------------
// The reference model: how a rollout should proceed, written from the design (stages, soak, gates
// judged on a report obtained at the soak's end, rollback triggers, apply then commit), not from
// the machine's definition. Its gate verdicts are a hand-written table over a few named reports.

type Phase =
  | 'inactive'
  | 'soaking.applying'
  | 'soaking.live'
  | 'evaluating.obtaining'
  | 'paused'
  | 'rollingBack.applying'
  | 'rollingBack.waiting'
  | 'rolledBack'
  | 'complete.applying'
  | 'complete.done'
type ReportName = 'good' | 'lowConsistency' | 'fewSamples' | 'breakerOpen' | 'missing'
interface Target { percent: number; reason: string; manual: boolean }

const palette: Record<ReportName, HealthReport> = {
  good: { consistencyPct: 100, errorRatePct: 0, p99LatencyMs: 20, samples: 50, breakerClosed: true, at: 1 },
  lowConsistency: { consistencyPct: 99.2, errorRatePct: 0, p99LatencyMs: 20, samples: 50, breakerClosed: true, at: 2 },
  fewSamples: { consistencyPct: 100, errorRatePct: 0, p99LatencyMs: 20, samples: 3, breakerClosed: true, at: 3 },
  breakerOpen: { consistencyPct: 100, errorRatePct: 0, p99LatencyMs: 20, samples: 50, breakerClosed: false, at: 4 },
  missing: { consistencyPct: null, errorRatePct: null, p99LatencyMs: null, samples: 0, breakerClosed: true, at: 5 },
}
const modelGates = { ...defaultRolloutGates, minSamples: 10 }
const gate = (g: GateResult['gate'], value: GateResult['value'], threshold: number | boolean, pass: boolean): GateResult => ({ gate: g, value, threshold, pass })
const passing = { consistency: gate('consistency', 100, 99.9, true), errorRate: gate('errorRate', 0, 0.1, true), p99: gate('p99Latency', 20, 100, true), breaker: gate('breaker', true, true, true), samples: gate('samples', 50, 10, true) }
/** The verdict on each named report (and on none) under modelGates, by hand. */
const verdicts: Record<ReportName | 'none', { results: GateResult[]; reason?: string }> = {
  good: { results: Object.values(passing) },
  lowConsistency: { results: [gate('consistency', 99.2, 99.9, false), passing.errorRate, passing.p99, passing.breaker, passing.samples], reason: 'consistency 99.2% < 99.9%' },
  fewSamples: { results: [passing.consistency, passing.errorRate, passing.p99, passing.breaker, gate('samples', 3, 10, false)], reason: 'samples 3 < 10' },
  breakerOpen: { results: [passing.consistency, passing.errorRate, passing.p99, gate('breaker', false, true, false), passing.samples], reason: 'breaker open' },
  missing: {
    results: [gate('consistency', null, 99.9, false), gate('errorRate', null, 0.1, false), gate('p99Latency', null, 100, false), passing.breaker, gate('samples', 0, 10, false)],
    reason: 'consistency missing; error rate missing; p99 latency missing; samples 0 < 10',
  },
  none: {
    results: [gate('consistency', null, 99.9, false), gate('errorRate', null, 0.1, false), gate('p99Latency', null, 100, false), gate('breaker', null, true, false), gate('samples', null, 10, false)],
    reason: 'no health report',
  },
}

interface R {
  phase: Phase
  percent: number
  reason: string | null
  manual: boolean
  target: Target | null
  latest: ReportName | null
  reports: number
  /** What the evaluation's obtainReport call was given. */
  obtainInput: ReportName | null
  gateResults: GateResult[]
  history: RolloutHistoryEntry[]
  lastError: string | null
  /** Emitted during this step. */
  emitted: RolloutEmitted[]
}

type Cmd =
  | { type: 'rollout.start' | 'rollout.pause' | 'rollout.resume' | 'rollout.abort'; at: number }
  | { type: 'rollout.set'; percent: number; at: number }
  | { type: 'breaker.opened'; at: number }
  | { type: 'report'; name: ReportName }
  | { type: 'apply'; ok: boolean }
  | { type: 'obtain'; result: ReportName | null | 'reject' }
  | { type: 'soak' }
  | { type: 'retry' }

const appliedAt = 7
const applyError = 'store down'
const obtainError = 'validator unreachable'

function rolloutModel(stages: number[]): ReferenceModel<R, Cmd> {
  const stageIndex = (percent: number) => stages.filter((s) => s <= percent).length - 1
  const lastPhase = (r: R) => r.history.at(-1)?.to ?? 'inactive'
  const judged = (r: R) => r.phase === 'soaking.applying' || r.phase === 'soaking.live' || r.phase === 'evaluating.obtaining' || r.phase === 'paused'
  const aim = (r: R, phase: Phase, target: Target): R => ({ ...r, phase, target })
  const rollback = (r: R, reason: string): R => aim(r, 'rollingBack.applying', { percent: 0, reason, manual: false })
  const soakFresh = (r: R): R => ({ ...r, phase: 'soaking.live', latest: null, reports: 0 })
  const note = (r: R, e: Omit<RolloutHistoryEntry, 'from'>): RolloutHistoryEntry[] => [...r.history, { ...e, from: lastPhase(r) }].slice(-50)
  const commit = (r: R, at: number, to: 'soaking' | 'complete' | 'rolledBack'): R => {
    const { percent, reason, manual } = r.target!
    return {
      ...r,
      percent,
      reason,
      manual,
      target: null,
      lastError: null,
      history: note(r, { at, to, percent, reason, ...(manual ? { manual: true as const } : {}) }),
      emitted: [...r.emitted, { type: 'rollout.changed', percent, state: to, reason, manual }],
    }
  }
  const decide = (r: R): R => {
    const { results, reason } = verdicts[r.latest ?? 'none']
    const judgedR: R = { ...r, gateResults: results, emitted: [...r.emitted, { type: 'rollout.evaluated', pass: !reason, gateResults: results, ...(reason ? { reason } : {}) }] }
    if (reason) return rollback(judgedR, reason)
    const passed: Target = { percent: 100, reason: 'gatesPassed', manual: false }
    const last = stageIndex(r.percent) >= stages.length - 1
    // The last stage is 100 % already: complete, applying nothing again.
    if (last && r.percent === 100) return { ...commit({ ...judgedR, target: passed }, palette[r.latest!].at, 'complete'), phase: 'complete.done' }
    if (last) return aim(judgedR, 'complete.applying', passed)
    return aim(judgedR, 'soaking.applying', { percent: stages[stageIndex(r.percent) + 1]!, reason: 'gatesPassed', manual: false })
  }

  const step = (before: R, c: Cmd): R => {
    const r: R = { ...before, emitted: [] }
    switch (c.type) {
      case 'report': {
        const recorded = { ...r, latest: c.name, reports: r.reports + 1 }
        return judged(r) && !palette[c.name].breakerClosed ? rollback(recorded, 'breakerOpen') : recorded
      }
      case 'breaker.opened':
        return judged(r) ? rollback(r, 'breakerOpen') : r
      case 'rollout.abort':
        return judged(r) ? rollback(r, 'aborted') : r
      case 'rollout.set': {
        const p = c.percent
        if (!Number.isInteger(p) || p < 0 || p > 100) return r
        const target = { percent: p, reason: 'manual', manual: true }
        return aim(r, p === 0 ? 'rollingBack.applying' : p === 100 ? 'complete.applying' : 'soaking.applying', target)
      }
      case 'rollout.start':
        return r.phase === 'inactive' || r.phase === 'rolledBack' ? aim(r, 'soaking.applying', { percent: stages[0]!, reason: 'started', manual: false }) : r
      case 'rollout.pause':
        return r.phase === 'soaking.live' ? { ...r, phase: 'paused', history: note(r, { at: c.at, to: 'paused', percent: r.percent }) } : r
      case 'rollout.resume':
        return r.phase === 'paused' ? soakFresh({ ...r, history: note(r, { at: c.at, to: 'soaking', percent: r.percent }) }) : r
      case 'soak':
        return r.phase === 'soaking.live' ? { ...r, phase: 'evaluating.obtaining', obtainInput: r.latest } : r
      case 'retry':
        return r.phase === 'rollingBack.waiting' ? { ...r, phase: 'rollingBack.applying' } : r
      case 'apply': {
        const failed = { ...r, lastError: applyError }
        if (r.phase === 'soaking.applying') return c.ok ? soakFresh(commit(r, appliedAt, 'soaking')) : rollback(failed, `applyFailed: ${applyError}`)
        if (r.phase === 'complete.applying') return c.ok ? { ...commit(r, appliedAt, 'complete'), phase: 'complete.done' } : rollback(failed, `applyFailed: ${applyError}`)
        // A rollback is never dropped: it waits and tries again.
        if (r.phase === 'rollingBack.applying') return c.ok ? { ...commit(r, appliedAt, 'rolledBack'), phase: 'rolledBack' } : { ...failed, phase: 'rollingBack.waiting' }
        return r
      }
      case 'obtain':
        if (r.phase !== 'evaluating.obtaining') return r
        if (c.result === 'reject') return decide({ ...r, latest: null, lastError: obtainError })
        return decide({ ...r, latest: c.result, reports: c.result ? r.reports + 1 : r.reports })
    }
  }

  const events = (r: R): Cmd[] => [
    ...(['rollout.start', 'rollout.pause', 'rollout.resume', 'rollout.abort'] as const).map((type) => ({ type, at: 6 })),
    ...[0, 40, 100, 101].map((percent) => ({ type: 'rollout.set' as const, percent, at: 6 })),
    { type: 'breaker.opened', at: 5 },
    ...(Object.keys(palette) as ReportName[]).map((name) => ({ type: 'report' as const, name })),
    ...(r.phase.endsWith('.applying') ? [true, false].map((ok) => ({ type: 'apply' as const, ok })) : []),
    ...(r.phase === 'evaluating.obtaining' ? [...(Object.keys(palette) as ReportName[]), null, 'reject' as const].map((result) => ({ type: 'obtain' as const, result })) : []),
    ...(r.phase === 'soaking.live' ? [{ type: 'soak' as const }] : []),
    ...(r.phase === 'rollingBack.waiting' ? [{ type: 'retry' as const }] : []),
  ]
  const initial: R = { phase: 'inactive', percent: 0, reason: null, manual: false, target: null, latest: null, reports: 0, obtainInput: null, gateResults: [], history: [], lastError: null, emitted: [] }
  // Reasons, manual flags, errors, counts and history are records: they never change what happens next.
  const key = (r: R) =>
    JSON.stringify([r.phase, r.percent, r.target, lastPhase(r), r.phase === 'soaking.live' ? r.latest : null, r.phase === 'evaluating.obtaining' ? r.obtainInput : null])
  return { initial, step, events, key }
}

/** The `rollout_state` row the model expects: an advance in flight at its target, a rollback at the percent in effect, an evaluation as the soak it judges. */
function persistedOf(r: R, stages: number[]): PersistedRollout {
  const top = r.phase.split('.')[0]!
  const state = (top === 'evaluating' ? 'soaking' : top) as PersistedRollout['state']
  const { percent, reason, manual } = r.target && state !== 'rollingBack' ? r.target : { percent: r.percent, reason: r.target?.reason ?? r.reason, manual: r.manual }
  return { state, percent, stageIndex: stages.filter((s) => s <= percent).length - 1, ...(reason ? { reason } : {}), manual, history: r.history }
}

const valueOf = (phase: Phase) => {
  const [top, sub] = phase.split('.')
  return sub ? { [top!]: sub } : top
}

/** Drives a fresh real controller (applyPercent and obtainReport held) through model commands and shows what the model predicts. */
function rolloutDriver(stages: number[]) {
  const input: RolloutInput = { stages, soakMs: 1_000, gates: modelGates, retryApplyMs: 300 }
  const start = () => {
    const apply = heldPromise<ApplyPercentOutput, ApplyPercentInput>()
    const obtain = heldPromise<HealthReport | null, ObtainReportInput>()
    const machine = rolloutControllerMachine.provide({ actors: { applyPercent: apply.logic, obtainReport: obtain.logic } })
    const clock = new SimulatedClock()
    const actor = createActor(machine, { input, clock, inspect: coverage.inspect })
    const emitted = emittedBy(actor)
    actor.start()
    return { actor, clock, apply, obtain, emitted }
  }
  type Run = ReturnType<typeof start>
  const driver: Driver<R, Cmd, Run> = {
    start,
    apply: async ({ actor, clock, apply, obtain }, c) => {
      if (c.type === 'apply') c.ok ? apply.one().resolve({ at: appliedAt }) : apply.one().reject(new Error(applyError))
      else if (c.type === 'obtain') {
        if (c.result === 'reject') obtain.one().reject(new Error(obtainError))
        else obtain.one().resolve(c.result === null ? null : { ...palette[c.result] })
      } else if (c.type === 'soak' || c.type === 'retry') advanceExactly(clock, c.type === 'soak' ? input.soakMs : input.retryApplyMs!, () => actor.getSnapshot().value)
      else if (c.type === 'report') actor.send({ type: 'health.reported', ...palette[c.name] })
      else actor.send(c)
      await settle()
    },
    observe: ({ actor, apply, obtain, emitted }) => {
      const s = actor.getSnapshot()
      return {
        value: s.value,
        context: s.context,
        emitted: emitted.take(),
        applying: apply.live().map((c) => c.input),
        obtaining: obtain.live().map((c) => c.input),
        // Invoked actors under the ids src/ and the inspector know them by.
        invoked: Object.keys(s.children).sort(),
        persisted: persistedRolloutOf(s),
      }
    },
    expected: (r) => {
      const { percent, reason, manual, target, reports, gateResults, history, lastError } = r
      const latest = r.latest ? palette[r.latest] : null
      return {
        value: valueOf(r.phase),
        context: { ...input, percent, stageIndex: stages.filter((x) => x <= percent).length - 1, reason, manual, target, latest, reports, gateResults, history, lastError, restoredAs: null },
        emitted: r.emitted,
        applying: r.phase.endsWith('.applying') ? [r.target] : [],
        obtaining: r.phase === 'evaluating.obtaining' ? [{ latest: r.obtainInput ? palette[r.obtainInput] : null }] : [],
        invoked: r.phase.endsWith('.applying') ? ['applyPercent'] : r.phase === 'evaluating.obtaining' ? ['obtainReport'] : [],
        persisted: persistedOf(r, stages),
      }
    },
    stop: ({ actor }) => actor.stop(),
  }
  return driver
}

describe('rolloutController against its reference model (every edge, by its shortest path)', () => {
  // [50, 100] ends at 100 % (complete without applying again); [30, 60] must apply 100 % after its last stage.
  for (const stages of [
    [50, 100],
    [30, 60],
  ]) {
    const model = rolloutModel(stages)
    const driver = rolloutDriver(stages)
    const edges = modelEdges(model)
    const byFrom = new Map<string, typeof edges>()
    for (const e of edges) byFrom.set(e.from.phase, [...(byFrom.get(e.from.phase) ?? []), e])

    it(`stages ${stages}: the model reaches every phase, completes and rolls back`, () => {
      expect(new Set(edges.map((e) => e.to.phase))).toEqual(new Set(['inactive', 'soaking.applying', 'soaking.live', 'evaluating.obtaining', 'paused', 'rollingBack.applying', 'rollingBack.waiting', 'rolledBack', 'complete.applying', 'complete.done']))
      const passedLast = edges.filter((e) => e.event.type === 'obtain' && e.to.phase.startsWith('complete')).map((e) => e.to.phase)
      expect(new Set(passedLast)).toEqual(new Set([stages.at(-1) === 100 ? 'complete.done' : 'complete.applying']))
    })

    it.each([...byFrom.entries()].map(([phase, list]) => [phase, list.length, list] as const))(`stages ${stages}: from %s, %i edges replayed against the real actor`, async (_phase, _n, list) => {
      for (const { path, event } of list) await checkAgainstModel(model, driver, [...path, event])
    })
  }
})

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
 * the simulated clock's time). `obtain` replaces the default obtainReport (which hands back the latest pushed report).
 */
function harness(decide?: (input: ApplyPercentInput, clock: SimulatedClock) => Error | null, obtain?: (input: ObtainReportInput, clock: SimulatedClock, signal: AbortSignal) => Promise<HealthReport | null>) {
  const calls: ApplyCall[] = []
  const obtained: ObtainReportInput[] = []
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
      ...(obtain && {
        obtainReport: fromPromise<HealthReport | null, ObtainReportInput>(({ input, signal }) => {
          obtained.push(input)
          return obtain(input, clock, signal)
        }),
      }),
    },
  })
  const start = (input: RolloutInput) => {
    calls.length = 0
    obtained.length = 0
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
    return { actor, clock, calls, obtained, live, emitted, send, tick, snap, applied: () => calls.map((c) => c.input.percent) }
  }
  return { machine, calls, start }
}

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
const good: HealthReport = { consistencyPct: 99.97, errorRatePct: 0.02, p99LatencyMs: 45, samples: 5_000, breakerClosed: true, at: 0 }

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
    // The last soak's eleven pushed reports, and the one obtained at its end (the default obtainReport hands back the latest).
    expect(s.context.reports).toBe(12)
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

  it('a soak shorter than the report interval is judged on the report obtained at its end: 25 → 100 with no report pushed', async () => {
    // The validator reports every 5 s; a 1 s soak never sees one. obtainReport asks it now.
    const fresh = harness(() => null, async (_input, clock) => ({ ...good, at: clock.now() }))
    const run = fresh.start({ soakMs: 1_000, gates })
    await run.send({ type: 'rollout.start', at: 0 })
    for (const stage of [25, 50, 75, 100]) {
      expect(run.snap().context.percent).toBe(stage)
      await run.tick(999)
      expect(run.snap().value).toEqual({ soaking: 'live' })
      await run.tick(1)
    }
    expect(run.snap().value).toEqual({ complete: 'done' })
    expect(run.obtained).toEqual([{ latest: null }, { latest: null }, { latest: null }, { latest: null }])
    expect(run.emitted.filter((e) => e.type === 'rollout.evaluated').map((e) => e.type === 'rollout.evaluated' && e.pass)).toEqual([true, true, true, true])
    expect(run.snap().context.history.map((h) => [h.percent, h.reason, h.at])).toEqual([
      [25, 'started', 0],
      [50, 'gatesPassed', 1_000],
      [75, 'gatesPassed', 2_000],
      [100, 'gatesPassed', 3_000],
      [100, 'gatesPassed', 4_000],
    ])
    expect(run.snap().context.latest).toEqual({ ...good, at: 4_000 })
  })

  it('obtainReport is given the latest pushed report of the soak, and its answer is what is judged', async () => {
    const lossy = harness(() => null, async () => ({ ...good, consistencyPct: 98.5 }))
    const run = lossy.start({ soakMs, gates })
    await run.send({ type: 'rollout.start', at: 0 })
    await soak(run)
    expect(run.obtained).toEqual([{ latest: { ...good, consistencyPct: 99.97, errorRatePct: 0.02, p99LatencyMs: 45, samples: 5_000, at: 55_000 } }])
    expect(run.snap().value).toBe('rolledBack')
    expect(run.snap().context.reason).toBe('consistency 98.5% < 99.9%')
  })

  it('an obtained report with too few samples rolls back, naming them', async () => {
    const thin = harness(() => null, async () => ({ ...good, samples: 10 }))
    const run = thin.start({ soakMs: 1_000, gates })
    await run.send({ type: 'rollout.start', at: 0 })
    await run.tick(1_000)
    expect(run.snap().value).toBe('rolledBack')
    expect(run.snap().context).toMatchObject({ percent: 0, reason: 'samples 10 < 1000' })
    expect(run.emitted.find((e) => e.type === 'rollout.evaluated')).toMatchObject({ pass: false, reason: 'samples 10 < 1000' })
    expect(run.snap().context.history.at(-1)).toEqual({ at: 1_000, from: 'soaking', to: 'rolledBack', percent: 0, reason: 'samples 10 < 1000' })
  })

  it('an obtainReport that rejects rolls back for want of a report, its error kept until the rollback lands', async () => {
    const down = harness(undefined, async () => {
      throw new Error('validator unreachable')
    })
    const run = down.start({ soakMs: 1_000, gates })
    await run.send({ type: 'rollout.start', at: 0 })
    run.live()[0]!.resolve({ at: 0 })
    await settle()
    // A report pushed during the soak is not used once obtaining failed.
    await run.send(report(500))
    await run.tick(1_000)
    expect(run.snap().value).toEqual({ rollingBack: 'applying' })
    expect(run.snap().context).toMatchObject({ lastError: 'validator unreachable', latest: null, target: { percent: 0, reason: 'no health report', manual: false } })
    expect(run.emitted.at(-1)).toMatchObject({ type: 'rollout.evaluated', pass: false, reason: 'no health report' })
    expect(run.live().map((c) => c.input)).toEqual([{ percent: 0, reason: 'no health report', manual: false }])
    run.live()[0]!.resolve({ at: 1_000 })
    await settle()
    expect(run.snap().value).toBe('rolledBack')
    expect(run.snap().context).toMatchObject({ percent: 0, reason: 'no health report', lastError: null })
  })

  it.each([
    ['breaker.opened', { type: 'breaker.opened', at: 1_500 }, 'breakerOpen'],
    ['a report with the breaker open', report(1_500, { breakerClosed: false }), 'breakerOpen'],
    ['rollout.abort', { type: 'rollout.abort', at: 1_500 }, 'aborted'],
  ] as const)('%s while the report is being obtained rolls back at once and abandons the call', async (_name, event, reason) => {
    const signals: AbortSignal[] = []
    const slow = harness(
      () => null,
      (_input, _clock, signal) => (signals.push(signal), new Promise<never>(() => {})),
    )
    const run = slow.start({ soakMs: 1_000, gates })
    await run.send({ type: 'rollout.start', at: 0 })
    await run.tick(1_000)
    expect(run.snap().value).toEqual({ evaluating: 'obtaining' })
    // Being judged is still the soak at this stage, and a pause is not taken now.
    expect(persistedRolloutOf(run.snap())).toMatchObject({ state: 'soaking', percent: 25, stageIndex: 0 })
    expect(run.snap().can({ type: 'rollout.pause', at: 1_200 })).toBe(false)
    await run.send(event)
    expect(signals.map((s) => s.aborted)).toEqual([true])
    expect(run.snap().value).toBe('rolledBack')
    expect(run.snap().context).toMatchObject({ percent: 0, reason })
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
    [{ state: 'soaking', percent: 0 }, 0],
    [{ state: 'complete', percent: 75 }, 75],
    [{ state: 'rolledBack', percent: 25 }, 25],
    // Not a percent at all: the record's figure is not trusted, the rollback starts from 0.
    [{ state: 'paused', percent: 250 }, 0],
    [{ state: 'soaking', percent: -5 }, 0],
    [{ state: 'evaluating', percent: 50 }, 50],
    [{ state: 'inactive', percent: 50 }, 50],
    [{ state: 'paused', percent: 0 }, 0],
  ] as const)('an inconsistent restore record %j rolls back, saying why', async (bad, inEffect) => {
    const run = ok.start({ soakMs, gates, restore: { ...bad, stageIndex: 0, history: [] } as unknown as PersistedRollout })
    expect(run.snap().value).toEqual({ rollingBack: 'applying' })
    expect(run.snap().context.percent).toBe(inEffect)
    await settle()
    expect(run.snap().value).toBe('rolledBack')
    expect(run.snap().context.reason).toBe(`invalid restore record: ${bad.state} at ${bad.percent} %`)
    expect(run.applied()).toEqual([0])
  })

  it('a rollback restored without a reason completes as "restored"', async () => {
    const run = ok.start({ soakMs, gates, restore: { state: 'rollingBack', percent: 50, stageIndex: 1, history: [] } })
    expect(run.snap().context.target).toEqual({ percent: 0, reason: 'restored', manual: false })
    await settle()
    expect(run.snap().context).toMatchObject({ percent: 0, reason: 'restored' })
  })

  it('restore keeps the manual flag, the last 50 history entries, and names the restored phase as the next entry’s origin', async () => {
    const old = Array.from({ length: 60 }, (_, i): RolloutHistoryEntry => ({ at: i, from: 'soaking', to: 'soaking', percent: 40 }))
    const run = ok.start({ soakMs, gates, restore: { state: 'paused', percent: 40, stageIndex: 0, reason: 'manual', manual: true, history: old } })
    expect(run.snap().value).toBe('paused')
    expect(run.snap().context).toMatchObject({ manual: true, reason: 'manual', percent: 40 })
    expect(run.snap().context.history).toEqual(old.slice(10))
    const bare = ok.start({ soakMs, gates, restore: { state: 'paused', percent: 40, stageIndex: 0, history: 'corrupt' as unknown as [] } })
    expect(bare.snap().context).toMatchObject({ history: [], manual: false, reason: null })
    await bare.send({ type: 'rollout.resume', at: 9 })
    expect(bare.snap().context.history).toEqual([{ at: 9, from: 'paused', to: 'soaking', percent: 40 }])
  })

  it('an applyPercent that rejects with something not an Error is recorded as its text', async () => {
    const run = harness().start({ soakMs, gates })
    await run.send({ type: 'rollout.start', at: 0 })
    run.live()[0]!.reject('routing table locked' as unknown as Error)
    await settle()
    expect(run.snap().context).toMatchObject({ lastError: 'routing table locked', target: { percent: 0, reason: 'applyFailed: routing table locked', manual: false } })
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

  it('missing figures fail even where any figure would pass (zero thresholds)', () => {
    const lax = { minConsistencyPct: 0, maxErrorRatePct: 1, maxP99LatencyMs: 1, minSamples: 0 }
    const result = evaluateGates({ ...good, consistencyPct: null, errorRatePct: null, p99LatencyMs: null, samples: Number.NaN }, lax)
    expect(result.results.map((r) => [r.gate, r.pass])).toEqual([
      ['consistency', false],
      ['errorRate', false],
      ['p99Latency', false],
      ['breaker', true],
      ['samples', false],
    ])
    expect(result.reason).toBe('consistency missing; error rate missing; p99 latency missing; samples missing')
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
