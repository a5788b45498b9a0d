import { assign, enqueueActions, fromPromise, setup } from 'xstate'
import type { SnapshotFrom } from 'xstate'

/** Pass when consistency ≥ min, error rate < max, p99 < max, breaker closed and samples (compared events) ≥ min. */
export interface RolloutGates { minConsistencyPct: number; maxErrorRatePct: number; maxP99LatencyMs: number; minSamples: number }

/** The seed's bar. 1,000 samples: below that, one missing event already breaks 99.9 %, so the figure means nothing. */
export const defaultRolloutGates: RolloutGates = { minConsistencyPct: 99.9, maxErrorRatePct: 0.1, maxP99LatencyMs: 100, minSamples: 1_000 }
export const defaultRolloutStages: readonly number[] = [25, 50, 75, 100]
/** Five minutes: with a report every few seconds, dozens of reports and several validator deadlines per stage. */
export const defaultSoakMs = 300_000
/** A rollback that could not be applied is retried this often until it is. */
export const defaultRetryApplyMs = 2_000
const historyLimit = 50

/** From the validator and the Realtime breaker; null is no data (which fails its gate). */
export interface HealthReport { consistencyPct: number | null; errorRatePct: number | null; p99LatencyMs: number | null; samples: number; breakerClosed: boolean; at: number }

/** The states a rollout rests in (history and persistence speak of these). */
export type RolloutPhase = 'inactive' | 'soaking' | 'paused' | 'rolledBack' | 'complete'
export interface RolloutHistoryEntry { at: number; from: RolloutPhase; to: RolloutPhase; percent: number; reason?: string; manual?: true }

/** The `rollout_state` row. A rollingBack restores as rollingBack, so the rollback completes. */
export interface PersistedRollout { state: RolloutPhase | 'rollingBack'; percent: number; stageIndex: number; reason?: string; manual?: boolean; history: RolloutHistoryEntry[] }

/** `stages` (integers 1–100, sorted and deduplicated here) default to {@link defaultRolloutStages}; `restore` resumes after a restart. */
export interface RolloutInput { stages?: number[]; soakMs: number; gates: RolloutGates; retryApplyMs?: number; restore?: PersistedRollout }

export type GateName = 'consistency' | 'errorRate' | 'p99Latency' | 'breaker' | 'samples'
export interface GateResult { gate: GateName; value: number | boolean | null; threshold: number | boolean; pass: boolean }
export interface GateEvaluation { pass: boolean; results: GateResult[]; reason?: string }

/** What `obtainReport` is given: the latest report pushed during the soak (null when none came). */
export interface ObtainReportInput { latest: HealthReport | null }

/** Moves clients to `percent` (persist, route, tell clients); resolves with the time it took effect. */
export interface ApplyPercentInput { percent: number; reason: string; manual: boolean }
export interface ApplyPercentOutput { at: number }

/** Every event carries `at`, the time src received it: the machine has no clock of its own. */
export type RolloutEvent =
  | ({ type: 'health.reported' } & HealthReport)
  | { type: 'breaker.opened'; at: number }
  | { type: 'rollout.start' | 'rollout.pause' | 'rollout.resume' | 'rollout.abort'; at: number }
  | { type: 'rollout.set'; percent: number; at: number }

export type RolloutEmitted =
  | { type: 'rollout.changed'; percent: number; state: 'soaking' | 'complete' | 'rolledBack'; reason: string; manual: boolean }
  | { type: 'rollout.evaluated'; pass: boolean; gateResults: GateResult[]; reason?: string }

interface Target { percent: number; reason: string; manual: boolean }

export interface RolloutContext extends Required<Omit<RolloutInput, 'restore'>> {
  /** The percent in effect (last applied). */
  percent: number
  /** The last stage at or below `percent`; -1 below the first. The next stage is `stageIndex + 1`. */
  stageIndex: number
  /** Why the percent is what it is ('started', 'gatesPassed', 'manual', or the rollback reason). */
  reason: string | null
  manual: boolean
  /** The change being applied (applying substates, rollingBack). */
  target: Target | null
  /** The latest health report of the current soak, and how many arrived in it. */
  latest: HealthReport | null
  reports: number
  gateResults: GateResult[]
  history: RolloutHistoryEntry[]
  lastError: string | null
  restoredAs: PersistedRollout['state'] | null
}

const isPercent = (p: unknown): p is number => typeof p === 'number' && Number.isInteger(p) && p >= 0 && p <= 100
const finite = (v: number | null | undefined): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null)
const messageOf = (error: unknown): string => (error instanceof Error ? error.message : String(error))
const stageIndexOf = (percent: number, stages: readonly number[]): number => stages.filter((s) => s <= percent).length - 1
const nextStage = (c: RolloutContext): Target => ({ percent: c.stages[c.stageIndex + 1]!, reason: 'gatesPassed', manual: false })
const rollbackTo = (reason: string): Target => ({ percent: 0, reason, manual: false })
const complete: Target = { percent: 100, reason: 'gatesPassed', manual: false }
const reportOf = ({ type: _, ...report }: { type: 'health.reported' } & HealthReport): HealthReport => report

const labels: Record<GateName, [name: string, unit: string, failsWhen: string]> = {
  consistency: ['consistency', '%', '<'], errorRate: ['error rate', '%', '≥'], p99Latency: ['p99 latency', ' ms', '≥'], breaker: ['breaker', '', ''], samples: ['samples', '', '<'],
}
function describeFailure({ gate, value, threshold }: GateResult): string {
  const [name, unit, op] = labels[gate]
  return value === null ? `${name} missing` : gate === 'breaker' ? 'breaker open' : `${name} ${value}${unit} ${op} ${threshold}${unit}`
}

/** Checks every gate on a report. Missing data (no report, null or non-finite figures) fails, as in Flagger. */
export function evaluateGates(report: HealthReport | null, gates: RolloutGates): GateEvaluation {
  const [c, e, p, n] = [finite(report?.consistencyPct), finite(report?.errorRatePct), finite(report?.p99LatencyMs), finite(report?.samples)]
  const results: GateResult[] = [
    { gate: 'consistency', value: c, threshold: gates.minConsistencyPct, pass: c !== null && c >= gates.minConsistencyPct },
    { gate: 'errorRate', value: e, threshold: gates.maxErrorRatePct, pass: e !== null && e < gates.maxErrorRatePct },
    { gate: 'p99Latency', value: p, threshold: gates.maxP99LatencyMs, pass: p !== null && p < gates.maxP99LatencyMs },
    { gate: 'breaker', value: report ? report.breakerClosed : null, threshold: true, pass: report?.breakerClosed === true },
    { gate: 'samples', value: n, threshold: gates.minSamples, pass: n !== null && n >= gates.minSamples },
  ]
  const failed = results.filter((r) => !r.pass)
  if (failed.length === 0) return { pass: true, results }
  return { pass: false, results, reason: report ? failed.map(describeFailure).join('; ') : 'no health report' }
}

// A record that contradicts itself is not guessed at: it rolls back, saying why.
function restoreProblem(r: PersistedRollout): string | null {
  const p = r.percent
  const fits = { inactive: p === 0, rolledBack: p === 0, complete: p === 100, soaking: p > 0, paused: p > 0, rollingBack: true }[r.state]
  return isPercent(p) && fits === true ? null : `invalid restore record: ${String(r.state)} at ${String(p)} %`
}

function initialContext({ restore: r, ...input }: RolloutInput): RolloutContext {
  const valid = [...new Set((input.stages ?? []).filter((s) => isPercent(s) && s > 0))].sort((a, b) => a - b)
  const stages = valid.length ? valid : [...defaultRolloutStages]
  const problem = r ? restoreProblem(r) : null
  const percent = r && isPercent(r.percent) ? r.percent : 0
  const restoredAs = !r ? null : problem ? 'rollingBack' : r.state
  const target = restoredAs === 'rollingBack' ? rollbackTo(problem ?? r?.reason ?? 'restored') : null
  return {
    ...input, stages, retryApplyMs: input.retryApplyMs ?? defaultRetryApplyMs, percent, stageIndex: stageIndexOf(percent, stages),
    reason: r?.reason ?? null, manual: r?.manual ?? false, target, latest: null, reports: 0, gateResults: [],
    history: Array.isArray(r?.history) ? r.history.slice(-historyLimit) : [], lastError: null, restoredAs,
  }
}

const lastPhase = (c: RolloutContext): RolloutPhase =>
  c.history.at(-1)?.to ?? (c.restoredAs && c.restoredAs !== 'rollingBack' ? c.restoredAs : 'inactive')
const entry = (c: RolloutContext, e: Omit<RolloutHistoryEntry, 'from'>): RolloutHistoryEntry[] =>
  [...c.history, { ...e, from: lastPhase(c) }].slice(-historyLimit)

// Shared by soaking and paused: the breaker rolls back at once, and so does an abort.
const rollbackTriggers = {
  'health.reported': { guard: 'reportsBreakerOpen', target: '#rolloutController.rollingBack', actions: ['recordReport', { type: 'aim', params: rollbackTo('breakerOpen') }] },
  'breaker.opened': { target: '#rolloutController.rollingBack', actions: { type: 'aim', params: rollbackTo('breakerOpen') } },
  'rollout.abort': { target: '#rolloutController.rollingBack', actions: { type: 'aim', params: rollbackTo('aborted') } },
} as const

const start = { target: 'soaking', actions: { type: 'aim', params: ({ context }: { context: RolloutContext }) => ({ percent: context.stages[0]!, reason: 'started', manual: false }) } } as const
const recordApplyError = { type: 'recordError', params: ({ event }: { event: { error: unknown } }) => ({ error: event.error }) } as const
const aimApplyFailed = { type: 'aim', params: ({ event }: { event: { error: unknown } }) => rollbackTo(`applyFailed: ${messageOf(event.error)}`) } as const

/** Applies `context.target`, then commits it. A failed advance rolls back; a failed rollback is retried. */
const applyThen = (to: 'soaking' | 'complete' | 'rolledBack', onDone: string) =>
  ({
    invoke: {
      id: 'applyPercent',
      src: 'applyPercent',
      input: ({ context }: { context: RolloutContext }) => context.target ?? rollbackTo('unknown'),
      onDone: { target: onDone, actions: { type: 'commit', params: ({ event }: { event: { output: ApplyPercentOutput } }) => ({ at: event.output.at, to }) } },
      onError: to === 'rolledBack' ? { target: 'waiting', actions: recordApplyError } : { target: '#rolloutController.rollingBack', actions: [recordApplyError, aimApplyFailed] },
    },
  }) as const

/**
 * Moves dashboards to Realtime stage by stage (`stages`), soaking each for `soakMs` and advancing
 * only when every gate passes on a report obtained when the soak ends (`obtainReport`); rolls back to 0 % on a
 * failed gate, missing data, an open breaker, an abort or a failed advance.
 *
 * Every percent change goes through `applyPercent` (soaking.applying, complete.applying,
 * rollingBack) and is announced with `rollout.changed` once applied; src must apply calls in the
 * order they are made (an abandoned call may still land; the later call wins). A rollback that
 * fails is retried after `retryApply` and is never dropped. Commands a state does not accept are
 * ignored: src answers 409 when `snapshot.can(command)` is false, 400 for a bad percent.
 * `evaluating` obtains a current report (`obtainReport`) and decides on it; a pause is taken in
 * soaking only, while an open breaker or an abort rolls back from evaluating too.
 */
export const rolloutControllerMachine = setup({
  types: { context: {} as RolloutContext, input: {} as RolloutInput, events: {} as RolloutEvent, emitted: {} as RolloutEmitted },
  actors: {
    applyPercent: fromPromise<ApplyPercentOutput, ApplyPercentInput>(async ({ input }) => {
      throw new Error(`rolloutController: no applyPercent actor provided (${input.percent} %)`)
    }),
    /**
     * A current health report for the stage being judged; src/ provides one that asks the validator
     * now. Without it, the latest report pushed with `health.reported` is used.
     */
    obtainReport: fromPromise<HealthReport | null, ObtainReportInput>(async ({ input }) => input.latest),
  },
  delays: { soak: ({ context }) => context.soakMs, retryApply: ({ context }) => context.retryApplyMs },
  guards: {
    restoresTo: ({ context }, params: { state: PersistedRollout['state'] }) => context.restoredAs === params.state,
    reportsBreakerOpen: ({ event }) => event.type === 'health.reported' && !event.breakerClosed,
    setsOff: ({ event }) => event.type === 'rollout.set' && event.percent === 0,
    setsFull: ({ event }) => event.type === 'rollout.set' && event.percent === 100,
    setsPartial: ({ event }) => event.type === 'rollout.set' && isPercent(event.percent) && event.percent > 0 && event.percent < 100,
    hasFailedGates: ({ context }) => context.gateResults.some((r) => !r.pass),
    isLastStage: ({ context }) => context.stageIndex >= context.stages.length - 1,
    isLastStageAtFull: ({ context }) => context.stageIndex >= context.stages.length - 1 && context.percent === 100,
  },
  actions: {
    recordReport: assign(({ context, event }) => (event.type === 'health.reported' ? { latest: reportOf(event), reports: context.reports + 1 } : {})),
    startSoak: assign({ latest: null, reports: 0 }),
    recordObtained: assign(({ context }, report: HealthReport | null) => ({ latest: report, reports: report ? context.reports + 1 : context.reports })),
    forgetReport: assign({ latest: null }),
    aim: assign((_, target: Target) => ({ target })),
    commit: enqueueActions(({ context, enqueue }, { at, to }: { at: number; to: 'soaking' | 'complete' | 'rolledBack' }) => {
      const { percent, reason, manual } = context.target ?? rollbackTo('unknown')
      const history = entry(context, { at, to, percent, reason, ...(manual ? { manual: true as const } : {}) })
      enqueue.assign({ percent, stageIndex: stageIndexOf(percent, context.stages), reason, manual, target: null, lastError: null, history })
      enqueue.emit({ type: 'rollout.changed', percent, state: to, reason, manual })
    }),
    note: assign(({ context }, { at, to }: { at: number; to: RolloutPhase }) => ({ history: entry(context, { at, to, percent: context.percent }) })),
    evaluate: enqueueActions(({ context, enqueue }) => {
      const { pass, results, reason } = evaluateGates(context.latest, context.gates)
      enqueue.assign({ gateResults: results })
      enqueue.emit({ type: 'rollout.evaluated', pass, gateResults: results, ...(reason ? { reason } : {}) })
    }),
    recordError: assign((_, { error }: { error: unknown }) => ({ lastError: messageOf(error) })),
  },
}).createMachine({
  id: 'rolloutController',
  context: ({ input }) => initialContext(input),
  initial: 'inactive',
  on: {
    'health.reported': { actions: 'recordReport' },
    'rollout.set': [
      { guard: 'setsOff', target: '.rollingBack', actions: { type: 'aim', params: { percent: 0, reason: 'manual', manual: true } } },
      { guard: 'setsFull', target: '.complete', actions: { type: 'aim', params: { percent: 100, reason: 'manual', manual: true } } },
      { guard: 'setsPartial', target: '.soaking', actions: { type: 'aim', params: ({ event }) => ({ percent: event.percent, reason: 'manual', manual: true }) } },
    ],
  },
  states: {
    // Nothing else enters inactive: a restart leaves it at once for the state it was persisted in.
    inactive: {
      always: [
        { guard: { type: 'restoresTo', params: { state: 'soaking' } }, target: 'soaking.live' },
        { guard: { type: 'restoresTo', params: { state: 'paused' } }, target: 'paused' },
        { guard: { type: 'restoresTo', params: { state: 'rollingBack' } }, target: 'rollingBack' },
        { guard: { type: 'restoresTo', params: { state: 'rolledBack' } }, target: 'rolledBack' },
        { guard: { type: 'restoresTo', params: { state: 'complete' } }, target: 'complete.done' },
      ],
      on: { 'rollout.start': start },
    },
    soaking: {
      initial: 'applying',
      on: rollbackTriggers,
      states: {
        applying: applyThen('soaking', 'live'),
        live: {
          entry: 'startSoak',
          after: { soak: '#rolloutController.evaluating' },
          on: { 'rollout.pause': { target: '#rolloutController.paused', actions: { type: 'note', params: ({ event }) => ({ at: event.at, to: 'paused' }) } } },
        },
      },
    },
    // Judged on fresh evidence: a report obtained now, so no stage fails for a timer's phase.
    evaluating: {
      initial: 'obtaining',
      on: rollbackTriggers,
      states: {
        obtaining: {
          invoke: {
            id: 'obtainReport',
            src: 'obtainReport',
            input: ({ context }) => ({ latest: context.latest }),
            onDone: { target: 'deciding', actions: { type: 'recordObtained', params: ({ event }) => event.output } },
            // No report is missing data: the gates fail and the stage rolls back, saying why.
            onError: { target: 'deciding', actions: ['forgetReport', recordApplyError] },
          },
        },
        deciding: {
          entry: 'evaluate',
          always: [
            { guard: 'hasFailedGates', target: '#rolloutController.rollingBack', actions: { type: 'aim', params: ({ context }) => rollbackTo(evaluateGates(context.latest, context.gates).reason ?? 'gatesFailed') } },
            // The last stage is already 100 %: complete without applying it again.
            { guard: 'isLastStageAtFull', target: '#rolloutController.complete.done', actions: [{ type: 'aim', params: complete }, { type: 'commit', params: ({ context }) => ({ at: context.latest?.at ?? 0, to: 'complete' }) }] },
            { guard: 'isLastStage', target: '#rolloutController.complete', actions: { type: 'aim', params: complete } },
            { target: '#rolloutController.soaking', actions: { type: 'aim', params: ({ context }) => nextStage(context) } },
          ],
        },
      },
    },
    paused: {
      on: {
        ...rollbackTriggers,
        'rollout.resume': { target: 'soaking.live', actions: { type: 'note', params: ({ event }) => ({ at: event.at, to: 'soaking' }) } },
      },
    },
    rollingBack: { initial: 'applying', states: { applying: applyThen('rolledBack', '#rolloutController.rolledBack'), waiting: { after: { retryApply: 'applying' } } } },
    rolledBack: { on: { 'rollout.start': start } },
    complete: { initial: 'applying', states: { applying: applyThen('complete', 'done'), done: {} } },
  },
})

export type RolloutSnapshot = SnapshotFrom<typeof rolloutControllerMachine>

/**
 * The `rollout_state` row for a snapshot. An advance in flight is persisted at its target (the
 * restart completes it), a rollback as rollingBack, an evaluation as the soak it judges.
 */
export function persistedRolloutOf(snapshot: RolloutSnapshot): PersistedRollout {
  const c = snapshot.context
  const top = typeof snapshot.value === 'string' ? snapshot.value : Object.keys(snapshot.value)[0]
  // Being judged is still soaking at this stage: a restart soaks it again.
  const state = (top === 'evaluating' ? 'soaking' : top) as PersistedRollout['state']
  const { percent, reason, manual } = c.target && state !== 'rollingBack' ? c.target : { percent: c.percent, reason: c.target?.reason ?? c.reason, manual: c.manual }
  return { state, percent, stageIndex: stageIndexOf(percent, c.stages), ...(reason ? { reason } : {}), manual, history: c.history }
}
