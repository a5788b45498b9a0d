import { describe, expect, it } from 'vitest'
import { createActor, fromCallback, fromPromise, setup, SimulatedClock, type AnyEventObject, type EventObject } from 'xstate'
import {
  batchFlusherMachine,
  defaultFlusherProfiles,
  defaultRateThresholds,
  type BatchFlusherInput,
  type FlushBatchInput,
  type FlushBatchOutput,
} from '../../machines/batchFlusher.js'
import { connectionMachine, type ProbeInput } from '../../machines/connection.js'
import { dependencyMachine, type DependencyInput } from '../../machines/dependency.js'
import { rolloutControllerMachine, type ApplyPercentInput, type ApplyPercentOutput, type RolloutInput } from '../../machines/rolloutController.js'
import { realtimeHealthOf, supervisorMachine, type Dependency, type SupervisorInput } from '../../machines/supervisor.js'
import { MachineCoverage } from '../helpers/coverage.js'
import { advanceExactly, checkAgainstModel, heldPromise, modelEdges, settle, type Driver, type ReferenceModel } from '../helpers/machines.js'
import { inspectAll, SendLog, type Sent } from '../helpers/machineSystem.js'

const coverage = new MachineCoverage(supervisorMachine)

const flusherInput = (name: string): BatchFlusherInput => ({ name, profiles: defaultFlusherProfiles, rate: defaultRateThresholds, retry: { baseMs: 100, maxMs: 5_000 } })
const dependencyInput = (dependency: Dependency): DependencyInput => ({
  dependency,
  id: `${dependency}Dependency`,
  reportTo: 'supervisor',
  // Long probe and retry periods: no child timer fires while a test moves the clock through the shutdown timeouts.
  connection: { id: `${dependency}Connection`, input: { name: dependency, backoff: { baseMs: 250, capMs: 30_000 }, probeIntervalMs: 3_600_000, random: () => 0.5 } },
  breaker: { id: `${dependency}Breaker`, input: { name: dependency, minimumNumberOfCalls: 2, slidingWindowSize: 2, openDurationMs: 3_600_000, halfOpenProbes: 2 } },
  ...(dependency === 'store' ? { replayer: { id: 'storeReplayer', input: { name: 'storeReplayer', sink: 'store', pollIntervalMs: 3_600_000 } } } : {}),
  flushers: [`${dependency}Flusher`],
})
const rolloutInput: RolloutInput = { soakMs: 600_000, gates: { minConsistencyPct: 99.9, maxErrorRatePct: 0.1, maxP99LatencyMs: 100, minSamples: 10 } }
const at = 42
const input: SupervisorInput = {
  shutdownTimeoutMs: 5_000,
  dlqFlushTimeoutMs: 3_000,
  flushers: [
    { id: 'storeFlusher', input: flusherInput('store') },
    { id: 'realtimeFlusher', input: flusherInput('realtime') },
  ],
  children: [
    { id: 'storeDependency', src: 'dependency', input: dependencyInput('store') },
    { id: 'realtimeDependency', src: 'dependency', input: dependencyInput('realtime') },
    { id: 'rollout', src: 'rolloutController', input: rolloutInput },
  ],
  now: () => at,
}
const flusherIds = input.flushers.map((f) => f.id)
const dependencyIds = ['storeDependency', 'realtimeDependency']
const childIds = [...dependencyIds, 'rollout', ...flusherIds]

// ---------------------------------------------------------------------------------------------
// The reference model: what the supervisor should do, written from the design (ARCHITECTURE.md,
// the machine's doc comments), not from its definition.

type Phase = 'starting' | 'running' | 'stoppingIngest' | 'drainingFlushers' | 'flushingDlq' | 'closingTransports' | 'stopped' | 'failed'
type RealtimeRegion = 'disabled' | 'steady' | 'recovering' | 'failedOver'

interface Sup {
  realtimeEnabled: boolean
  phase: Phase
  store: 'healthy' | 'degraded'
  realtime: RealtimeRegion
  degraded: Partial<Record<Dependency, string>>
  /** The reason an announceFailover call in flight was given; null when none is. */
  failoverInFlight: string | null
  spawned: boolean
  drained: string[]
  crashed: string[]
  /** Children that completed without being flushers (they are not drained). */
  completed: string[]
  shutdownIncomplete: boolean
  shutdownErrors: string[]
  failoverAnnounceError: string | null
  recoveryAnnounceError: string | null
  error: string | null
  /** What the supervisor sends during this step, in order. */
  sent: Sent[]
}

type Command =
  | { type: 'startRelay' | 'stopIngest' | 'deadLetterLeftovers' | 'closeServices' | 'announceFailover' | 'announceRecovery'; ok: boolean }
  | { type: 'shutdown' }
  | { type: 'degraded'; dependency: Dependency; reason: string }
  | { type: 'healthy'; dependency: Dependency }
  | { type: 'flusherDone'; id: string }
  | { type: 'childCompletes'; id: string }
  | { type: 'crash'; id: string }
  | { type: 'shutdownTimeout' }
  | { type: 'dlqTimeout' }

const failure = (src: string) => `${src} failed`
const crashMessage = 'boom'
const shuttingDown: Phase[] = ['stoppingIngest', 'drainingFlushers', 'flushingDlq', 'closingTransports']

function supervisorModel(realtimeEnabled: boolean): ReferenceModel<Sup, Command> {
  const initial: Sup = {
    realtimeEnabled,
    phase: 'starting',
    store: 'healthy',
    realtime: realtimeEnabled ? 'steady' : 'disabled',
    degraded: {},
    failoverInFlight: null,
    spawned: false,
    drained: [],
    crashed: [],
    completed: [],
    shutdownIncomplete: false,
    shutdownErrors: [],
    failoverAnnounceError: null,
    recoveryAnnounceError: null,
    error: null,
    sent: [],
  }
  const settled = (s: Sup) => flusherIds.every((id) => s.drained.includes(id) || s.crashed.includes(id))
  const closing = (s: Sup): Sup => ({
    ...s,
    phase: 'closingTransports',
    // Every dependency that runs closes its connection; a crashed one is left alone.
    sent: [...s.sent, ...(s.spawned ? dependencyIds.filter((id) => !s.crashed.includes(id)).map((id) => ({ to: id, event: { type: 'stop' } })) : [])],
  })
  const flushingDlq = (s: Sup): Sup => ({ ...s, phase: 'flushingDlq' })
  // Nothing drains before the flushers have all completed (or crashed).
  const afterDrainStep = (s: Sup): Sup => (s.phase === 'drainingFlushers' && settled(s) ? flushingDlq(s) : s)
  const draining = (s: Sup): Sup =>
    afterDrainStep({ ...s, phase: 'drainingFlushers', sent: [...s.sent, ...flusherIds.filter((id) => !s.crashed.includes(id)).map((id) => ({ to: id, event: { type: 'drain' } }))] })
  const shutdown = (s: Sup): Sup => ({ ...s, phase: 'stoppingIngest', failoverInFlight: null })
  const failover = (s: Sup, reason: string): Sup => ({
    ...s,
    realtime: 'failedOver',
    degraded: { ...s.degraded, realtime: reason },
    failoverAnnounceError: null,
    failoverInFlight: reason,
    sent: [...s.sent, { to: 'rollout', event: { type: 'breaker.opened', at } }],
  })
  const without = (d: Partial<Record<Dependency, string>>, k: Dependency) => Object.fromEntries(Object.entries(d).filter(([key]) => key !== k))

  const step = (state: Sup, c: Command): Sup => {
    const s: Sup = { ...state, sent: [] }
    if (shuttingDown.includes(s.phase)) {
      if (c.type === 'crash') return afterDrainStep({ ...s, crashed: [...s.crashed, c.id], shutdownErrors: [...s.shutdownErrors, `${c.id}: ${crashMessage}`] })
      const failed = (src: string, ok: boolean) => (ok ? s : { ...s, shutdownErrors: [...s.shutdownErrors, failure(src)] })
      switch (`${s.phase} ${c.type}`) {
        case 'stoppingIngest stopIngest':
          return draining(failed('stopIngest', (c as { ok: boolean }).ok))
        case 'drainingFlushers flusherDone':
          return afterDrainStep({ ...s, drained: [...s.drained, (c as { id: string }).id] })
        case 'drainingFlushers childCompletes':
          return { ...s, completed: [...s.completed, (c as { id: string }).id] }
        case 'drainingFlushers shutdownTimeout':
          return flushingDlq({ ...s, shutdownIncomplete: true })
        case 'flushingDlq deadLetterLeftovers':
          return closing(failed('deadLetterLeftovers', (c as { ok: boolean }).ok))
        case 'flushingDlq dlqTimeout':
          return closing({ ...s, shutdownIncomplete: true })
        case 'closingTransports closeServices':
          return { ...failed('closeServices', (c as { ok: boolean }).ok), phase: 'stopped' }
      }
      return s // a second shutdown, a health report: ignored
    }
    if (s.phase === 'starting') {
      if (c.type === 'startRelay') return c.ok ? { ...s, phase: 'running', spawned: true } : { ...s, phase: 'failed', error: failure('startRelay') }
      // Nothing was accepted yet: only the transports need closing.
      if (c.type === 'shutdown') return closing(s)
      return s
    }
    if (s.phase !== 'running') return s
    switch (c.type) {
      case 'shutdown':
        return shutdown(s)
      case 'crash':
        return shutdown({ ...s, crashed: [c.id], error: `${c.id}: ${crashMessage}` })
      case 'degraded':
        if (c.dependency === 'store') return { ...s, store: 'degraded', degraded: { ...s.degraded, store: c.reason } }
        if (s.realtime === 'disabled') return s
        // A new reason replaces the old one; dashboards were told already, the rollout too.
        if (s.realtime === 'failedOver') return { ...s, degraded: { ...s.degraded, realtime: c.reason } }
        return failover(s, c.reason)
      case 'healthy':
        if (c.dependency === 'store') return s.store === 'degraded' ? { ...s, store: 'healthy', degraded: without(s.degraded, 'store') } : s
        if (s.realtime !== 'failedOver') return s
        return { ...s, realtime: 'recovering', degraded: without(s.degraded, 'realtime'), recoveryAnnounceError: null, failoverInFlight: null }
      case 'announceFailover':
        return { ...s, failoverInFlight: null, failoverAnnounceError: c.ok ? s.failoverAnnounceError : failure('announceFailover') }
      case 'announceRecovery':
        return { ...s, realtime: 'steady', recoveryAnnounceError: c.ok ? s.recoveryAnnounceError : failure('announceRecovery') }
    }
    return s
  }

  /** The commands the test can carry out in a state (each has something to act on there). */
  const events = (s: Sup): Command[] => {
    const settles = (type: 'startRelay' | 'stopIngest' | 'deadLetterLeftovers' | 'closeServices' | 'announceFailover' | 'announceRecovery'): Command[] => [
      { type, ok: true },
      { type, ok: false },
    ]
    const alive = childIds.filter((id) => s.spawned && !s.crashed.includes(id) && !s.drained.includes(id) && !s.completed.includes(id))
    // Two crashes at most, of a flusher (either), the store's dependency or the rollout: the others only repeat them.
    const crashes = s.crashed.length < 2 ? alive.filter((id) => id !== 'realtimeDependency').map((id): Command => ({ type: 'crash', id })) : []
    switch (s.phase) {
      case 'starting':
        return [...settles('startRelay'), { type: 'shutdown' }]
      case 'running': {
        // Health reports only from a clean start, so the shutdown variants below are not multiplied by every health history.
        const health: Command[] = [
          { type: 'degraded', dependency: 'store', reason: 'breakerOpen' },
          { type: 'degraded', dependency: 'store', reason: 'connectionLost' },
          { type: 'healthy', dependency: 'store' },
          { type: 'degraded', dependency: 'realtime', reason: 'channelClosed' },
          { type: 'degraded', dependency: 'realtime', reason: 'breakerOpen' },
          { type: 'healthy', dependency: 'realtime' },
        ]
        const calm = s.store === 'healthy' && s.realtime !== 'failedOver' && s.realtime !== 'recovering'
        return [
          ...health,
          ...(s.failoverInFlight !== null ? settles('announceFailover') : []),
          ...(s.realtime === 'recovering' ? settles('announceRecovery') : []),
          { type: 'shutdown' },
          ...(calm && s.failoverAnnounceError === null && s.recoveryAnnounceError === null ? crashes : []),
        ]
      }
      case 'stoppingIngest':
        return [...settles('stopIngest'), { type: 'shutdown' }, ...crashes]
      case 'drainingFlushers':
        return [
          ...alive.filter((id) => flusherIds.includes(id)).map((id): Command => ({ type: 'flusherDone', id })),
          ...(alive.includes('rollout') ? [{ type: 'childCompletes', id: 'rollout' } as const] : []),
          { type: 'shutdownTimeout' },
          { type: 'shutdown' },
          ...crashes,
        ]
      case 'flushingDlq':
        return [...settles('deadLetterLeftovers'), { type: 'dlqTimeout' }, ...crashes]
      case 'closingTransports':
        return [...settles('closeServices'), ...crashes]
      default:
        return []
    }
  }
  // Once shutting down, health and announcement records, the shutdown's errors and whether it was
  // complete are only carried to the output: states differing in them alone behave alike.
  const key = ({ sent: _, ...s }: Sup) =>
    shuttingDown.includes(s.phase) || s.phase === 'stopped'
      ? JSON.stringify([s.phase, s.spawned, [...s.drained].sort(), [...s.crashed].sort(), s.completed, s.error === null])
      : JSON.stringify(s)
  return { initial, step, events, key }
}

/** The observable value of a model state, as the statechart names it. */
function valueOf(s: Sup): unknown {
  if (s.phase === 'running') {
    const realtime = s.realtime === 'steady' || s.realtime === 'recovering' ? { healthy: s.realtime } : s.realtime
    return { running: { store: s.store, realtime } }
  }
  return shuttingDown.includes(s.phase) ? { shuttingDown: s.phase } : s.phase
}

/** The calls the supervisor has in flight in a model state. */
function callsOf(s: Sup): string[] {
  const calls: string[] = []
  if (s.phase === 'starting') calls.push('startRelay(undefined)')
  if (s.phase === 'running' && s.failoverInFlight !== null) calls.push(`announceFailover(${JSON.stringify({ reason: s.failoverInFlight })})`)
  if (s.phase === 'running' && s.realtime === 'recovering') calls.push('announceRecovery({})')
  if (s.phase === 'stoppingIngest') calls.push('stopIngest(undefined)')
  if (s.phase === 'flushingDlq') calls.push('deadLetterLeftovers(undefined)')
  if (s.phase === 'closingTransports') calls.push('closeServices(undefined)')
  return calls.sort()
}

/** The ids of the actors the supervisor has invoked in a model state. */
function invokedIn(s: Sup): string[] {
  const ids: Record<Phase, string[]> = {
    starting: ['startRelay'],
    // A settled announcement stays invoked until failedOver is left.
    running: ['healthReporter', ...(s.realtime === 'failedOver' ? ['announceFailover'] : []), ...(s.realtime === 'recovering' ? ['announceRecovery'] : [])],
    stoppingIngest: ['stopIngest'],
    drainingFlushers: [],
    flushingDlq: ['deadLetterLeftovers'],
    closingTransports: ['closeServices'],
    stopped: [],
    failed: [],
  }
  return ids[s.phase]
}

// ---------------------------------------------------------------------------------------------
// The real supervisor, with its I/O held by the test and stand-in children it can complete or crash.

/** A stand-in child: completes on `test.complete` (as a drained flusher does) and crashes on `test.crash`. */
const standIn = setup({ types: { events: {} as AnyEventObject, input: {} as { name?: string } } }).createMachine({
  id: 'standIn',
  context: ({ input }) => ({ name: input?.name ?? '' }),
  output: ({ context }) => ({ name: context.name, flushedTotal: 1 }),
  initial: 'live',
  states: {
    live: {
      on: {
        'test.complete': 'done',
        'test.crash': {
          actions: () => {
            throw new Error(crashMessage)
          },
        },
      },
    },
    done: { type: 'final' },
  },
})

const invokedSrcs = ['startRelay', 'stopIngest', 'deadLetterLeftovers', 'closeServices', 'announceFailover', 'announceRecovery'] as const
type InvokedSrc = (typeof invokedSrcs)[number]

function standInSupervisor() {
  const held = Object.fromEntries(invokedSrcs.map((src) => [src, heldPromise<void, unknown>()])) as Record<InvokedSrc, ReturnType<typeof heldPromise<void, unknown>>>
  const health = { running: 0 }
  const backlog = { reports: 0 }
  const machine = supervisorMachine.provide({
    actors: {
      startRelay: held.startRelay.logic,
      stopIngest: held.stopIngest.logic,
      deadLetterLeftovers: held.deadLetterLeftovers.logic,
      closeServices: held.closeServices.logic,
      announceFailover: held.announceFailover.logic as never,
      announceRecovery: held.announceRecovery.logic as never,
      healthReporter: fromCallback(() => {
        health.running++
        return () => void health.running--
      }),
      batchFlusher: standIn as unknown as typeof batchFlusherMachine,
      dependency: standIn as unknown as typeof dependencyMachine,
      rolloutController: standIn as unknown as typeof rolloutControllerMachine,
    },
    actions: { reportBacklog: () => void backlog.reports++ },
  })
  /** The calls in flight as `src(input)`, sorted. */
  const live = () => invokedSrcs.flatMap((src) => held[src].live().map((c) => `${src}(${JSON.stringify(c.input)})`)).sort()
  const reset = () => {
    for (const src of invokedSrcs) held[src].calls.length = 0
    backlog.reports = 0
  }
  return { machine, held, live, health, backlog, reset }
}

const h = standInSupervisor()

function supervisorDriver(realtime: boolean): Driver<Sup, Command, { actor: ReturnType<typeof createActor<typeof h.machine>>; clock: SimulatedClock; sends: SendLog }> {
  return {
    start: () => {
      h.reset()
      const clock = new SimulatedClock()
      const sends = new SendLog('supervisor')
      const actor = createActor(h.machine, { systemId: 'supervisor', input: { ...input, realtime }, clock, inspect: inspectAll(coverage.inspect, sends.inspect) })
      actor.start()
      return { actor, clock, sends }
    },
    apply: async ({ actor, clock }, c) => {
      const child = (id: string) => {
        const ref = actor.system.get(id)
        expect(ref, `child ${id} is running`).toBeDefined()
        return ref!
      }
      switch (c.type) {
        case 'shutdown':
          actor.send({ type: 'shutdown' })
          break
        case 'degraded':
          actor.send({ type: 'dependency.degraded', dependency: c.dependency, reason: c.reason })
          break
        case 'healthy':
          actor.send({ type: 'dependency.healthy', dependency: c.dependency })
          break
        case 'flusherDone':
        case 'childCompletes':
          child(c.id).send({ type: 'test.complete' })
          break
        case 'crash':
          child(c.id).send({ type: 'test.crash' })
          break
        case 'shutdownTimeout':
        case 'dlqTimeout':
          advanceExactly(clock, c.type === 'shutdownTimeout' ? input.shutdownTimeoutMs : input.dlqFlushTimeoutMs!, () => actor.getSnapshot().value)
          break
        default:
          if (c.ok) h.held[c.type].one().resolve(undefined)
          else h.held[c.type].one().reject(new Error(failure(c.type)))
      }
      await settle()
    },
    observe: ({ actor, sends }) => {
      const snapshot = actor.getSnapshot()
      return {
        value: snapshot.value,
        status: snapshot.status,
        output: snapshot.output,
        context: snapshot.context,
        sent: sends.take(),
        calls: h.live(),
        healthReporters: h.health.running,
        backlogReports: h.backlog.reports,
        children: childIds.filter((id) => actor.system.get(id) !== undefined),
        // Invoked actors under the ids src/ and the inspector know them by (spawned ones are in the system, above).
        invoked: Object.keys(snapshot.children).filter((id) => !childIds.includes(id)).sort(),
        realtimeHealth: realtimeHealthOf(snapshot),
      }
    },
    expected: (s) => {
      const final = s.phase === 'stopped' || s.phase === 'failed'
      const { degraded, drained, crashed, shutdownIncomplete, shutdownErrors, failoverAnnounceError, recoveryAnnounceError, error } = s
      return {
        value: valueOf(s),
        status: final ? 'done' : 'active',
        output: final ? (error === null ? { exitCode: 0 } : { exitCode: 1, error }) : undefined,
        context: {
          shutdownTimeoutMs: 5_000,
          dlqFlushTimeoutMs: 3_000,
          flushers: input.flushers,
          children: input.children,
          realtime,
          now: input.now,
          degraded,
          drained,
          crashed,
          shutdownIncomplete,
          shutdownErrors,
          failoverAnnounceError,
          recoveryAnnounceError,
          error,
        },
        sent: s.sent,
        calls: callsOf(s),
        healthReporters: s.phase === 'running' ? 1 : 0,
        // Reported once, on entering running.
        backlogReports: s.spawned ? 1 : 0,
        children: childIds.filter((id) => s.spawned && !final && ![...s.crashed, ...s.drained, ...s.completed].includes(id)),
        invoked: invokedIn(s).sort(),
        realtimeHealth: s.phase !== 'running' ? undefined : s.realtime === 'steady' || s.realtime === 'recovering' ? 'healthy' : s.realtime,
      }
    },
    stop: ({ actor }) => actor.stop(),
  }
}

describe('supervisor against its reference model (every edge of the model, by its shortest path)', () => {
  for (const realtime of [false, true]) {
    const model = supervisorModel(realtime)
    const driver = supervisorDriver(realtime)
    const edges = modelEdges(model)
    const finals = edges.map((e) => e.to).filter((s) => s.phase === 'stopped' || s.phase === 'failed')

    it(`realtime ${realtime ? 'on' : 'off'}: the model ends in both final states, exit code 1 after a crash, and an incomplete shutdown`, () => {
      expect(finals.some((s) => s.phase === 'failed')).toBe(true)
      expect(finals.some((s) => s.phase === 'stopped' && s.error === null && !s.shutdownIncomplete)).toBe(true)
      expect(finals.some((s) => s.phase === 'stopped' && s.error !== null)).toBe(true)
      expect(finals.some((s) => s.phase === 'stopped' && s.shutdownIncomplete)).toBe(true)
    })

    const byFrom = new Map<Phase, typeof edges>()
    for (const e of edges) byFrom.set(e.from.phase, [...(byFrom.get(e.from.phase) ?? []), e])
    it.each([...byFrom.entries()].map(([phase, list]) => [phase, list.length, list] as const))(
      `realtime ${realtime ? 'on' : 'off'}: from %s, %i model edges replayed against the real actor`,
      async (_phase, _n, list) => {
        for (const { path, event } of list) await checkAgainstModel(model, driver, [...path, event])
      },
    )
  }
})

describe('supervisor defaults and odd failures (stand-in children)', () => {
  const start = (over: Partial<SupervisorInput>, omit: Array<keyof SupervisorInput> = []) => {
    h.reset()
    const clock = new SimulatedClock()
    const sends = new SendLog('supervisor')
    const full: SupervisorInput = { ...input, ...over }
    for (const key of omit) delete full[key]
    const actor = createActor(h.machine, { systemId: 'supervisor', input: full, clock, inspect: inspectAll(coverage.inspect, sends.inspect) }).start()
    return { actor, clock, sends, snap: () => actor.getSnapshot() }
  }

  it('without realtime, children or dlqFlushTimeoutMs: Realtime disabled, nothing but flushers spawned, the DLQ flush bounded at 5 s', async () => {
    const r = start({}, ['realtime', 'children', 'dlqFlushTimeoutMs', 'now'])
    expect(r.snap().context).toMatchObject({ realtime: false, children: [], dlqFlushTimeoutMs: 5_000, now: Date.now })
    h.held.startRelay.one().resolve(undefined)
    await settle()
    expect(r.snap().value).toEqual({ running: { store: 'healthy', realtime: 'disabled' } })
    expect(Object.keys(r.snap().children).sort()).toEqual(['healthReporter', 'realtimeFlusher', 'storeFlusher'])
    r.actor.send({ type: 'shutdown' })
    h.held.stopIngest.one().resolve(undefined)
    await settle()
    for (const id of flusherIds) r.actor.system.get(id)!.send({ type: 'test.complete' })
    expect(r.snap().value).toEqual({ shuttingDown: 'flushingDlq' })
    r.clock.increment(4_999)
    expect(r.snap().value).toEqual({ shuttingDown: 'flushingDlq' })
    r.clock.increment(1)
    expect(r.snap().value).toEqual({ shuttingDown: 'closingTransports' })
    expect(r.sends.take().map((x) => `${x.to}:${x.event.type}`)).toEqual(['storeFlusher:drain', 'realtimeFlusher:drain'])
  })

  it('without `now`, the rollout hears of the failover at the wall-clock time', async () => {
    const r = start({ realtime: true }, ['now'])
    h.held.startRelay.one().resolve(undefined)
    await settle()
    const before = Date.now()
    r.actor.send({ type: 'dependency.degraded', dependency: 'realtime', reason: 'breakerOpen' })
    const after = Date.now()
    const [told, ...rest] = r.sends.take()
    expect(rest).toEqual([])
    expect(told).toMatchObject({ to: 'rollout', event: { type: 'breaker.opened' } })
    expect(told!.event.at).toBeGreaterThanOrEqual(before)
    expect(told!.event.at).toBeLessThanOrEqual(after)
  })

  it('a rejection that is not an Error is recorded as its text', async () => {
    const failing = start({})
    h.held.startRelay.one().reject('disk full')
    await settle()
    expect(failing.snap().output).toEqual({ exitCode: 1, error: 'disk full' })

    const r = start({})
    h.held.startRelay.one().resolve(undefined)
    await settle()
    r.actor.send({ type: 'shutdown' })
    h.held.stopIngest.one().reject('ingest wedged')
    await settle()
    expect(r.snap().context.shutdownErrors).toEqual(['ingest wedged'])
  })
})

// ---------------------------------------------------------------------------------------------
// Scenarios with the real children: flushers, dependencies (connection, breaker, replayer) and
// the rollout controller, each with its I/O held or answered by the test. Expectations by hand.

function relay(options: { realtime?: boolean; failStart?: string; stuckFlusher?: string; stuckDlq?: boolean } = {}) {
  const log: string[] = []
  const applyPercent = heldPromise<ApplyPercentOutput, ApplyPercentInput>()
  const probes = new Map<string, (event: AnyEventObject) => void>()
  const step = (name: string, hang = false) =>
    fromPromise<void>(async () => {
      log.push(name)
      if (name === 'startRelay' && options.failStart) throw new Error(options.failStart)
      if (hang) await new Promise<never>(() => {})
    })
  const connection = connectionMachine.provide({
    actors: {
      connect: fromPromise<unknown, { name: string }>(async () => undefined),
      disconnect: fromPromise<void, { name: string }>(async ({ input }) => void log.push(`disconnect:${input.name}`)),
      probe: fromCallback<EventObject, ProbeInput>(({ input, receive, sendBack }) => {
        probes.set(input.name, sendBack)
        receive((event) => {
          if (event.type === 'test.crash') throw new Error('probe crashed')
        })
        return () => probes.delete(input.name)
      }),
    },
  })
  const machine = supervisorMachine.provide({
    actors: {
      startRelay: step('startRelay'),
      stopIngest: step('stopIngest'),
      deadLetterLeftovers: step('deadLetterLeftovers', options.stuckDlq),
      closeServices: step('closeServices'),
      announceFailover: fromPromise<void, { reason: string }>(async ({ input }) => void log.push(`announceFailover:${input.reason}`)),
      announceRecovery: fromPromise<void, {}>(async () => void log.push('announceRecovery')),
      batchFlusher: batchFlusherMachine.provide({
        actors: {
          flushBatch: fromPromise<FlushBatchOutput, FlushBatchInput>(({ input: { name, max } }) => {
            log.push(`flush:${name}`)
            return name === options.stuckFlusher ? new Promise<never>(() => {}) : Promise.resolve({ flushed: Math.min(max, 1) })
          }),
        },
      }),
      dependency: dependencyMachine.provide({ actors: { connection } }),
      rolloutController: rolloutControllerMachine.provide({ actors: { applyPercent: applyPercent.logic } }),
    },
  })
  const clock = new SimulatedClock()
  const actor = createActor(machine, { systemId: 'supervisor', input: { ...input, realtime: options.realtime ?? false }, clock, inspect: coverage.inspect })
  const child = (id: string) => actor.system.get(id)!
  /** Queues one event in each flusher, so each completes only when told to drain. */
  const feedFlushers = () => flusherIds.forEach((id) => child(id).send({ type: 'events.added', count: 1 }))
  return { actor, clock, log, applyPercent, probes, child, feedFlushers, snap: () => actor.getSnapshot() }
}

describe('supervisor scenarios (real children)', () => {
  it('starts, spawns every child under its systemId, and shuts down in order to exit code 0', async () => {
    const r = relay()
    r.actor.start()
    expect(r.snap().value).toBe('starting')
    await settle()
    expect(r.snap().value).toEqual({ running: { store: 'healthy', realtime: 'disabled' } })
    for (const id of childIds) expect(r.snap().children[id], id).toBe(r.child(id))
    expect(r.child('storeBreaker').getSnapshot().value).toBe('closed')
    expect(r.child('storeConnection').getSnapshot().value).toBe('connected')
    expect(r.child('rollout').getSnapshot().value).toBe('inactive')
    r.feedFlushers()

    r.actor.send({ type: 'shutdown' })
    r.actor.send({ type: 'shutdown' }) // ignored
    expect(r.snap().value).toEqual({ shuttingDown: 'stoppingIngest' })
    await settle()
    await settle()
    expect(r.snap().value).toBe('stopped')
    expect(r.snap().output).toEqual({ exitCode: 0 })
    expect(r.snap().context).toMatchObject({ drained: ['storeFlusher', 'realtimeFlusher'], shutdownIncomplete: false, shutdownErrors: [] })
    // Drained before the DLQ is flushed; the dependencies close their connections before the transports close.
    expect(r.log).toEqual(['startRelay', 'stopIngest', 'flush:store', 'flush:realtime', 'deadLetterLeftovers', 'disconnect:store', 'disconnect:realtime', 'closeServices'])
  })

  it('the DLQ is not flushed while a flusher is still draining, and the relay does not stop before the transports are closed', async () => {
    const r = relay({ stuckFlusher: 'realtime' })
    r.actor.start()
    await settle()
    r.feedFlushers()
    r.actor.send({ type: 'shutdown' })
    await settle()
    expect(r.snap().value).toEqual({ shuttingDown: 'drainingFlushers' })
    expect(r.snap().context.drained).toEqual(['storeFlusher'])
    expect(r.log).not.toContain('deadLetterLeftovers')
    r.clock.increment(input.shutdownTimeoutMs - 1)
    await settle()
    expect(r.log).not.toContain('deadLetterLeftovers')
    r.clock.increment(1)
    expect(r.snap().value).toEqual({ shuttingDown: 'flushingDlq' })
    expect(r.snap().context.shutdownIncomplete).toBe(true)
    await settle()
    expect(r.log.slice(-4)).toEqual(['deadLetterLeftovers', 'disconnect:store', 'disconnect:realtime', 'closeServices'])
    expect(r.snap().value).toBe('stopped')
    expect(r.snap().output).toEqual({ exitCode: 0 })
  })

  it('closes transports after dlqFlushTimeout when deadLetterLeftovers hangs, marking the shutdown incomplete', async () => {
    const r = relay({ stuckDlq: true })
    r.actor.start()
    await settle()
    r.actor.send({ type: 'shutdown' })
    await settle()
    expect(r.snap().value).toEqual({ shuttingDown: 'flushingDlq' })
    r.clock.increment(input.dlqFlushTimeoutMs! - 1)
    expect(r.snap().value).toEqual({ shuttingDown: 'flushingDlq' })
    r.clock.increment(1)
    expect(r.snap().value).toEqual({ shuttingDown: 'closingTransports' })
    expect(r.snap().context.shutdownIncomplete).toBe(true)
    await settle()
    expect(r.snap().output).toEqual({ exitCode: 0 })
    expect(r.log).toEqual(['startRelay', 'stopIngest', 'deadLetterLeftovers', 'disconnect:store', 'disconnect:realtime', 'closeServices'])
  })

  it('a start-up failure ends in failed with the message and exit code 1, spawning nothing', async () => {
    const r = relay({ failStart: 'migration 0002 failed' })
    r.actor.start()
    await settle()
    expect(r.snap().value).toBe('failed')
    expect(r.snap().output).toEqual({ exitCode: 1, error: 'migration 0002 failed' })
    for (const id of childIds) expect(r.actor.system.get(id), id).toBeUndefined()
  })

  it('a store outage seen by the real dependency degrades the store region with its reason, and its recovery heals it', async () => {
    const r = relay()
    r.actor.start()
    await settle()
    r.probes.get('store')!({ type: 'connection.lost', code: 'ECONNRESET', message: 'server closed the connection' })
    await settle()
    expect(r.snap().value).toEqual({ running: { store: 'degraded', realtime: 'disabled' } })
    expect(r.snap().context.degraded).toEqual({ store: 'connection lost (ECONNRESET: server closed the connection)' })
    // The backoff ends, the connection is back: the breaker probes at once; two good calls close it.
    r.clock.increment(250)
    await settle()
    expect(r.child('storeBreaker').getSnapshot().value).toBe('halfOpen')
    for (let i = 0; i < 2; i++) r.child('storeBreaker').send({ type: 'call.succeeded', durationMs: 5 })
    expect(r.snap().value).toEqual({ running: { store: 'healthy', realtime: 'disabled' } })
    expect(r.snap().context.degraded).toEqual({})
  })

  it('a Realtime failover tells the rollout controller, which rolls back at once', async () => {
    const r = relay({ realtime: true })
    r.actor.start()
    await settle()
    r.child('rollout').send({ type: 'rollout.start', at: 1 })
    r.applyPercent.one().resolve({ at: 1 })
    await settle()
    expect(r.child('rollout').getSnapshot().value).toEqual({ soaking: 'live' })

    r.probes.get('realtime')!({ type: 'connection.lost', code: 'CHANNEL_ERROR', message: 'channel error' })
    await settle()
    expect(realtimeHealthOf(r.snap())).toBe('failedOver')
    expect(r.log).toContain('announceFailover:connection lost (CHANNEL_ERROR: channel error)')
    expect(r.child('rollout').getSnapshot().value).toEqual({ rollingBack: 'applying' })
    expect(r.applyPercent.one().input).toEqual({ percent: 0, reason: 'breakerOpen', manual: false })
  })

  it('a crashing child stops the relay in order and exits 1 with the error; the crashed one is not told to stop', async () => {
    const r = relay()
    r.actor.start()
    await settle()
    r.feedFlushers()
    r.child('storeConnection').getSnapshot().children.probe!.send({ type: 'test.crash' })
    expect(r.snap().value).toEqual({ shuttingDown: 'stoppingIngest' })
    expect(r.snap().context).toMatchObject({ error: 'storeDependency: probe crashed', crashed: ['storeDependency'] })
    await settle()
    await settle()
    expect(r.snap().output).toEqual({ exitCode: 1, error: 'storeDependency: probe crashed' })
    expect(r.log).toEqual(['startRelay', 'stopIngest', 'flush:store', 'flush:realtime', 'deadLetterLeftovers', 'disconnect:realtime', 'closeServices'])
  })

  it('without provided actors, start-up fails naming the missing one', async () => {
    const actor = createActor(supervisorMachine, { input, inspect: coverage.inspect }).start()
    await settle()
    expect(actor.getSnapshot().output).toEqual({ exitCode: 1, error: 'startRelay not provided' })
  })

  it('every other actor left unprovided fails naming itself, and the shutdown still goes through to the end', async () => {
    const machine = supervisorMachine.provide({ actors: { startRelay: fromPromise<void>(async () => {}) } })
    const actor = createActor(machine, { input: { shutdownTimeoutMs: 1_000, flushers: [], realtime: true }, inspect: coverage.inspect }).start()
    await settle()
    actor.send({ type: 'dependency.degraded', dependency: 'realtime', reason: 'breakerOpen' })
    await settle()
    expect(actor.getSnapshot().context.failoverAnnounceError).toBe('announceFailover not provided')
    actor.send({ type: 'dependency.healthy', dependency: 'realtime' })
    await settle()
    expect(actor.getSnapshot().value).toEqual({ running: { store: 'healthy', realtime: { healthy: 'steady' } } })
    expect(actor.getSnapshot().context.recoveryAnnounceError).toBe('announceRecovery not provided')
    actor.send({ type: 'shutdown' })
    for (let i = 0; i < 4; i++) await settle()
    expect(actor.getSnapshot().value).toBe('stopped')
    expect(actor.getSnapshot().context.shutdownErrors).toEqual(['stopIngest not provided', 'deadLetterLeftovers not provided', 'closeServices not provided'])
    expect(actor.getSnapshot().output).toEqual({ exitCode: 0 })
  })
})

describe('supervisor coverage', () => {
  it('takes every state and transition of the machine', () => {
    coverage.assertComplete()
  })
})
