import { describe, expect, it } from 'vitest'
import {
  createActor,
  fromCallback,
  fromPromise,
  SimulatedClock,
  type AnyActorRef,
  type AnyEventObject,
  type AnyMachineSnapshot,
  type AnyStateMachine,
} from 'xstate'
import { getSimplePaths, type StatePath } from 'xstate/graph'
import {
  batchFlusherMachine,
  defaultFlusherProfiles,
  defaultRateThresholds,
  type BatchFlusherInput,
  type DeadLetterInput,
  type DeadLetterOutput,
  type FlushBatchInput,
  type FlushBatchOutput,
} from '../../machines/batchFlusher.js'
import { connectionMachine, type ProbeInput } from '../../machines/connection.js'
import {
  realtimeHealthOf,
  supervisorMachine,
  type RealtimeHealth,
  type SupervisorContext,
  type SupervisorEvent,
  type SupervisorInput,
} from '../../machines/supervisor.js'
import { MachineCoverage } from '../helpers/coverage.js'

const coverage = new MachineCoverage(supervisorMachine)
const settle = () => new Promise<void>((resolve) => setImmediate(resolve))

const flusherInput = (name: string): BatchFlusherInput => ({
  name,
  profiles: defaultFlusherProfiles,
  rate: defaultRateThresholds,
  retry: { baseMs: 100, maxMs: 5000 },
})
// Long poll/probe intervals: no child timer fires while the test moves the clock through the shutdown timeouts.
const input: SupervisorInput = {
  shutdownTimeoutMs: 5000,
  dlqFlushTimeoutMs: 3000,
  flushers: [
    { id: 'storeFlusher', input: flusherInput('store') },
    { id: 'realtimeFlusher', input: flusherInput('realtime') },
  ],
  children: [
    { id: 'storeConnection', src: 'connection', input: { name: 'store', backoff: { baseMs: 250, capMs: 30_000 }, probeIntervalMs: 3_600_000 } },
    { id: 'storeBreaker', src: 'circuitBreaker', input: { name: 'store' } },
    { id: 'storeReplayer', src: 'dlqReplayer', input: { name: 'storeReplayer', sink: 'store', pollIntervalMs: 3_600_000 } },
  ],
}
const flusherNamed = (id: string) => input.flushers.find((f) => f.id === id)!.input.name

/**
 * The connection machine with a connect that succeeds at once, a disconnect that logs, and a
 * liveness probe the test can crash (its receiver throws), which fails the connection actor.
 */
function testConnection(log: string[]) {
  const probes = new Map<string, AnyActorRef>()
  const machine = connectionMachine.provide({
    actors: {
      connect: fromPromise<unknown, { name: string }>(async () => undefined),
      disconnect: fromPromise<void, { name: string }>(async ({ input }) => void log.push(`disconnect:${input.name}`)),
      probe: fromCallback<AnyEventObject, ProbeInput>(({ self, receive, input }) => {
        receive((event) => {
          if (event.type === 'crash') throw new Error('probe crashed')
        })
        probes.set(input.name, self)
        return () => probes.delete(input.name)
      }),
    },
  })
  const crash = (name: string) => probes.get(name)!.send({ type: 'crash' })
  return { machine, crash }
}

/** Provides every actor the supervisor names; each promise call waits for the test to settle it. */
function harness() {
  type Call<O> = { src: string; input: unknown; signal: AbortSignal; settled: boolean; resolve: (o: O) => void; reject: (e: Error) => void }
  const calls: Array<Call<unknown>> = []
  const log: string[] = []
  const health = { running: 0, started: 0 }
  const controlled = <O, I = unknown>(src: string) =>
    fromPromise<O, I>(
      ({ input, signal }) =>
        new Promise<O>((resolve, reject) => {
          const call: Call<O> = {
            src,
            input,
            signal,
            settled: false,
            resolve: (o) => ((call.settled = true), resolve(o)),
            reject: (e) => ((call.settled = true), reject(e)),
          }
          calls.push(call as Call<unknown>)
        }),
    )
  const live = (src: string, match: (input: unknown) => boolean = () => true) =>
    calls.filter((c) => c.src === src && !c.settled && !c.signal.aborted && match(c.input))
  const connection = testConnection(log)
  const machine = supervisorMachine.provide({
    actors: {
      startRelay: controlled<void>('startRelay'),
      stopIngest: controlled<void>('stopIngest'),
      flushDlq: controlled<void>('flushDlq'),
      closeTransports: controlled<void>('closeTransports'),
      announceFailover: controlled<void, { reason: string }>('announceFailover'),
      announceRecovery: controlled<void, {}>('announceRecovery'),
      healthReporter: fromCallback(() => {
        health.running++
        health.started++
        return () => void health.running--
      }),
      batchFlusher: batchFlusherMachine.provide({
        actors: {
          flushBatch: controlled<FlushBatchOutput, FlushBatchInput>('flushBatch'),
          deadLetter: controlled<DeadLetterOutput, DeadLetterInput>('deadLetter'),
        },
      }),
      connection: connection.machine,
    },
  })
  const reset = () => {
    calls.length = log.length = 0
    health.running = health.started = 0
  }
  return { machine, calls, live, log, health, crash: connection.crash, reset }
}

// ---------------------------------------------------------------------------------------------
// Model-based: every simple path of the statechart, replayed against the real actor.

const invoked = ['startRelay', 'stopIngest', 'flushDlq', 'closeTransports', 'announceFailover', 'announceRecovery'] as const
const timeouts: Record<string, number> = {
  'xstate.after.shutdownTimeout.supervisor.shuttingDown.drainingFlushers': input.shutdownTimeoutMs,
  'xstate.after.dlqFlushTimeout.supervisor.shuttingDown.flushingDlq': input.dlqFlushTimeoutMs!,
}
const crashing = 'storeConnection'
const crashEvent = { type: `xstate.error.actor.${crashing}`, actorId: crashing, error: new Error('probe crashed') }

/**
 * Three models share the shutdown: the store's health reports (Realtime disabled), Realtime's
 * health reports and announcements, and a crashing child (Realtime enabled). They do not
 * interact (each region ignores the other's reports, which replay() checks at every step; a crash
 * leaves running whatever the health), and together they keep the simple paths few enough to
 * replay every one.
 */
type Model = 'health' | 'realtime' | 'crash'

// The realtime model takes only the orderly shutdown: its variants are the other models'.
const everyShutdown = (model: Model, s: AnyMachineSnapshot) => model !== 'realtime' || !s.matches('shuttingDown')

const modelEvents = (model: Model) => (s: AnyMachineSnapshot): AnyEventObject[] => [
  { type: 'shutdown' },
  // Events that leave the state as it is (another dependency's, a new reason) are checked in replay().
  ...(model === 'health' || model === 'realtime'
    ? [
        { type: 'dependency.degraded', dependency: model, reason: 'breakerOpen' },
        { type: 'dependency.healthy', dependency: model },
      ]
    : []),
  ...invoked
    .filter((id) => s.children[id])
    .flatMap((id) => [{ type: `xstate.done.actor.${id}` }, ...(everyShutdown(model, s) ? [{ type: `xstate.error.actor.${id}`, error: new Error(`${id} failed`) }] : [])]),
  // A flusher can only complete once it has been told to drain.
  ...(s.matches('shuttingDown')
    ? input.flushers.filter((f) => s.children[f.id]).map((f) => ({ type: `xstate.done.actor.${f.id}`, actorId: f.id, output: { name: f.input.name, flushedTotal: 1 } }))
    : []),
  // The connection can crash once (its probe runs while connected), until it is told to stop.
  ...(model === 'crash' && s.children[crashing] && !s.context.crashed.includes(crashing) && !s.matches({ shuttingDown: 'closingTransports' })
    ? [crashEvent]
    : []),
  ...(everyShutdown(model, s) ? Object.keys(timeouts).map((type) => ({ type })) : []),
]

const simplePaths = (model: Model) =>
  getSimplePaths(supervisorMachine as AnyStateMachine, {
    input: { ...input, realtime: model !== 'health' },
    events: modelEvents(model),
    stopWhen: (s) => s.status !== 'active',
    // The specs and timeouts never change: leaving them out keeps the (often repeated) serialisation cheap.
    serializeState: (s) => {
      const { shutdownTimeoutMs, dlqFlushTimeoutMs, flushers, children, ...changing } = s.context as SupervisorContext
      return JSON.stringify([s.value, s.status, changing])
    },
  })
const paths = (['health', 'realtime', 'crash'] as const).flatMap((model) => dedupe(simplePaths(model)))

/** Keeps only paths that are not a prefix of a longer one: replaying the longer one checks every step of both. */
function dedupe<T extends StatePath<AnyMachineSnapshot, AnyEventObject>>(all: T[]): T[] {
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
const h = harness()

async function replay(path: StatePath<AnyMachineSnapshot, AnyEventObject>): Promise<void> {
  h.reset()
  const clock = new SimulatedClock()
  const { realtime } = path.state.context as SupervisorContext
  const actor = createActor(h.machine, { systemId: 'supervisor', input: { ...input, realtime }, clock, inspect: coverage.inspect }).start()
  let connected = false
  for (const [i, { event, state }] of path.steps.entries()) {
    const where = `step ${i}: ${JSON.stringify(event)}`
    const [, src] = /^xstate\.(?:done|error)\.actor\.(.+)$/.exec(event.type) ?? []
    if (event.type === 'shutdown' || event.type.startsWith('dependency.')) actor.send(event as Parameters<typeof actor.send>[0])
    else if (event.type in timeouts) clock.increment(timeouts[event.type]!)
    else if (src === crashing) h.crash('store')
    else if (src && input.flushers.some((f) => f.id === src)) {
      // Complete that flusher's drain: its one in-flight flush writes the one pending event.
      const [flush, ...extra] = h.live('flushBatch', (i) => (i as FlushBatchInput).name === flusherNamed(src))
      expect(extra, where).toHaveLength(0)
      expect(flush!.input, where).toMatchObject({ draining: true })
      flush!.resolve({ flushed: 1 })
    } else if (src) {
      const [call, ...extra] = h.live(src)
      expect(extra, where).toHaveLength(0)
      if (event.type.startsWith('xstate.done')) call!.resolve(undefined)
      else call!.reject(new Error(`${src} failed`))
    }
    await settle()
    // Entering running: give each flusher something to drain, so it completes only when told; connect the connection.
    if (src === 'startRelay' && event.type.startsWith('xstate.done')) {
      for (const f of input.flushers) actor.system.get(f.id)!.send({ type: 'events.added', count: 1 })
      actor.system.get(crashing)!.send({ type: 'connect' })
      await settle()
      connected = true
    }
    const snapshot = actor.getSnapshot()
    expect(snapshot.matches(state.value), `${where} → ${JSON.stringify(snapshot.value)}`).toBe(true)
    expect(snapshot.value, where).toEqual(state.value)
    expect(snapshot.status, where).toBe(state.status)
    expect(snapshot.context, where).toEqual(state.context)
    expect(snapshot.output, where).toEqual(state.output)
    expect(h.health.running, `${where}: health reporter runs only while running`).toBe(snapshot.matches('running') ? 1 : 0)
    // Connections are told to stop on entering closingTransports, not before; a crashed one is left alone.
    const stopped = state.matches({ shuttingDown: 'closingTransports' }) || (state.matches('stopped') && h.calls.some((c) => c.src === 'closeTransports'))
    expect(h.log, where).toEqual(connected && stopped && !state.context.crashed.includes(crashing) ? ['disconnect:store'] : [])
    // Each failover announces once, with its reason, each recovery once; both stop when their state is left.
    // (A settled announceFailover changes nothing, so it is never on a simple path: the scenarios settle it.)
    const failedOver = state.matches({ running: { realtime: 'failedOver' } })
    const announcing = failedOver && state.context.failoverAnnounceError === null
    expect(h.live('announceFailover').map((c) => c.input), where).toEqual(announcing ? [{ reason: state.context.degraded.realtime }] : [])
    expect(h.live('announceRecovery').length, where).toBe(state.matches({ running: { realtime: { healthy: 'recovering' } } }) ? 1 : 0)
    const health: RealtimeHealth | undefined = !state.matches('running') ? undefined : !realtime ? 'disabled' : failedOver ? 'failedOver' : 'healthy'
    expect(realtimeHealthOf(snapshot), where).toBe(health)
    // Events that leave the model state as it is are never on a simple path: check them here.
    if (state.matches('running')) {
      const ignoredEvents: SupervisorEvent[] = [
        ...(health !== 'failedOver' ? [{ type: 'dependency.healthy', dependency: 'realtime' } as const] : []),
        ...(health === 'disabled' ? [{ type: 'dependency.degraded', dependency: 'realtime', reason: 'breakerOpen' } as const] : []),
        ...(state.matches({ running: { store: 'healthy' } }) ? [{ type: 'dependency.healthy', dependency: 'store' } as const] : []),
      ]
      for (const ignored of ignoredEvents) {
        actor.send(ignored)
        expect(actor.getSnapshot().value, `${where}: ${JSON.stringify(ignored)}`).toEqual(state.value)
        expect(actor.getSnapshot().context, `${where}: ${JSON.stringify(ignored)}`).toEqual(state.context)
      }
      // While degraded, a new reason replaces the old one; the model's reason brings it back.
      if (state.matches({ running: { store: 'degraded' } })) {
        actor.send({ type: 'dependency.degraded', dependency: 'store', reason: 'connectionLost' })
        expect(actor.getSnapshot().value, `${where}: new reason`).toEqual(state.value)
        expect(actor.getSnapshot().context.degraded, `${where}: new reason`).toEqual({ store: 'connectionLost' })
        actor.send({ type: 'dependency.degraded', dependency: 'store', reason: state.context.degraded.store })
        expect(actor.getSnapshot().context, `${where}: old reason`).toEqual(state.context)
      }
      if (failedOver) {
        const announced = h.calls.length
        actor.send({ type: 'dependency.degraded', dependency: 'realtime', reason: 'channelClosed' })
        expect(actor.getSnapshot().context.degraded, `${where}: new reason`).toEqual({ ...state.context.degraded, realtime: 'channelClosed' })
        actor.send({ type: 'dependency.degraded', dependency: 'realtime', reason: state.context.degraded.realtime })
        expect(actor.getSnapshot().value, `${where}: old reason`).toEqual(state.value)
        expect(actor.getSnapshot().context, `${where}: old reason`).toEqual(state.context)
        expect(h.calls.length, `${where}: announced once`).toBe(announced)
      }
      // The store's reports leave the realtime region (and its announcements) as they are.
      if (realtime && state.matches({ running: { store: 'healthy' } })) {
        const calls = h.calls.length
        actor.send({ type: 'dependency.degraded', dependency: 'store', reason: 'breakerOpen' })
        expect(actor.getSnapshot().matches({ running: { store: 'degraded' } }), `${where}: store degraded`).toBe(true)
        expect(realtimeHealthOf(actor.getSnapshot()), `${where}: store degraded`).toBe(health)
        actor.send({ type: 'dependency.healthy', dependency: 'store' })
        expect(actor.getSnapshot().value, `${where}: store healthy`).toEqual(state.value)
        expect(actor.getSnapshot().context, `${where}: store healthy`).toEqual(state.context)
        expect(h.calls.length, `${where}: no announcement`).toBe(calls)
      }
    }
    if (state.matches('shuttingDown')) {
      actor.send({ type: 'shutdown' })
      expect(actor.getSnapshot().value, `${where}: second shutdown`).toEqual(state.value)
      expect(actor.getSnapshot().context, `${where}: second shutdown`).toEqual(state.context)
      expect(h.live('stopIngest').length + h.live('flushDlq').length + h.live('closeTransports').length, where).toBeLessThanOrEqual(1)
    }
  }
  actor.stop()
}

describe('supervisor (model-based)', () => {
  it('the traversal reaches both final states, and exit code 1 after a crash', () => {
    expect(paths.some((p) => p.state.matches('stopped'))).toBe(true)
    expect(paths.some((p) => p.state.matches('failed'))).toBe(true)
    expect(paths.some((p) => p.state.matches('stopped') && p.state.output.exitCode === 1)).toBe(true)
  })

  it(`replays ${paths.length} simple paths against the real actor`, async () => {
    for (const path of paths) await replay(path)
  })
})

// ---------------------------------------------------------------------------------------------
// Scenarios with real flushers and connections.

interface RelayOptions {
  failStart?: string
  /** A flusher whose flushes never settle. */
  stuckFlusher?: string
  /** flushDlq never settles. */
  stuckDlq?: boolean
  /** The flusher with this name crashes on an `events.added` that lands after it was told to drain. */
  crashingFlusher?: string
  /** Input `realtime`. */
  realtime?: boolean
  /** Both announcements fail. */
  failAnnounce?: boolean
  /** announceRecovery never settles. */
  stuckRecovery?: boolean
}

/** Everything succeeds at once; the log records the order of side effects. */
function relay(options: RelayOptions = {}) {
  const log: string[] = []
  const step = (name: string, hang = false) =>
    fromPromise<void>(async () => {
      log.push(name)
      if (name === 'startRelay' && options.failStart) throw new Error(options.failStart)
      if (hang) await new Promise<never>(() => {})
    })
  const flushBatch = fromPromise<FlushBatchOutput, FlushBatchInput>(({ input: { name, max } }) => {
    log.push(`flush:${name}`)
    return name === options.stuckFlusher ? new Promise<never>(() => {}) : Promise.resolve({ flushed: Math.min(max, 1) })
  })
  const announce = <I extends { reason?: string }>(name: string, hang = false) =>
    fromPromise<void, I>(async ({ input }) => {
      log.push(input.reason ? `${name}:${input.reason}` : name)
      if (options.failAnnounce) throw new Error(`${name}: channel closed`)
      if (hang) await new Promise<never>(() => {})
    })
  const connection = testConnection(log)
  const machine = supervisorMachine.provide({
    actors: {
      startRelay: step('startRelay'),
      announceFailover: announce<{ reason: string }>('announceFailover'),
      announceRecovery: announce<{}>('announceRecovery', options.stuckRecovery),
      stopIngest: step('stopIngest'),
      flushDlq: step('flushDlq', options.stuckDlq),
      closeTransports: step('closeTransports'),
      batchFlusher: batchFlusherMachine.provide({
        actors: { flushBatch },
        ...(options.crashingFlusher && {
          actions: {
            countForRate: ({ context }) => {
              if (context.name === options.crashingFlusher && context.drainRequested) throw new Error('rate window overflowed')
            },
          },
        }),
      }),
      connection: connection.machine,
    },
  })
  const clock = new SimulatedClock()
  const actor = createActor(machine, { systemId: 'supervisor', input: { ...input, realtime: options.realtime ?? false }, clock, inspect: coverage.inspect })
  return { actor, clock, log, crash: connection.crash }
}

describe('supervisor scenarios', () => {
  it('starts, spawns every child under its systemId, and shuts down in order to exit code 0', async () => {
    const { actor, log } = relay()
    actor.start()
    expect(actor.getSnapshot().matches('starting')).toBe(true)
    await settle()
    expect(actor.getSnapshot().matches({ running: { store: 'healthy' } })).toBe(true)
    for (const id of [...input.flushers, ...input.children!].map((c) => c.id)) {
      const child = actor.system.get(id)
      expect(child, id).toBeDefined()
      expect(actor.getSnapshot().children[id]).toBe(child)
    }
    expect(actor.system.get('storeBreaker')!.getSnapshot().value).toBe('closed')
    expect(actor.system.get('storeReplayer')!.getSnapshot().value).toBe('waiting')
    for (const { id } of input.flushers) actor.system.get(id)!.send({ type: 'events.added', count: 1 })
    actor.system.get('storeConnection')!.send({ type: 'connect' })
    await settle()
    expect(actor.system.get('storeConnection')!.getSnapshot().value).toBe('connected')

    actor.send({ type: 'shutdown' })
    actor.send({ type: 'shutdown' }) // idempotent
    expect(actor.getSnapshot().matches({ shuttingDown: 'stoppingIngest' })).toBe(true)
    await settle()
    await settle()
    expect(actor.getSnapshot().status).toBe('done')
    expect(actor.getSnapshot().matches('stopped')).toBe(true)
    expect(actor.getSnapshot().output).toEqual({ exitCode: 0 })
    expect(actor.getSnapshot().context).toMatchObject({ drained: ['storeFlusher', 'realtimeFlusher'], shutdownIncomplete: false, shutdownErrors: [] })
    // The connection is told to stop on entering closingTransports, before closeTransports runs.
    expect(log).toEqual(['startRelay', 'stopIngest', 'flush:store', 'flush:realtime', 'flushDlq', 'disconnect:store', 'closeTransports'])
  })

  it('a start-up failure ends in failed with the message and exit code 1, spawning nothing', async () => {
    const { actor } = relay({ failStart: 'migration 0002 failed' })
    actor.start()
    await settle()
    expect(actor.getSnapshot().matches('failed')).toBe(true)
    expect(actor.getSnapshot().context.error).toBe('migration 0002 failed')
    expect(actor.getSnapshot().output).toEqual({ exitCode: 1, error: 'migration 0002 failed' })
    expect(actor.system.get('storeFlusher')).toBeUndefined()
    expect(actor.system.get('storeConnection')).toBeUndefined()
  })

  it('store health follows dependency.degraded / dependency.healthy and ignores other dependencies', async () => {
    const { actor } = relay()
    actor.start()
    await settle()
    const store = () => [actor.getSnapshot().matches({ running: { store: 'degraded' } }) ? 'degraded' : 'healthy', actor.getSnapshot().context.degraded]
    actor.send({ type: 'dependency.degraded', dependency: 'realtime', reason: 'channelClosed' })
    expect(store()).toEqual(['healthy', {}])
    actor.send({ type: 'dependency.degraded', dependency: 'store', reason: 'breakerOpen' })
    expect(store()).toEqual(['degraded', { store: 'breakerOpen' }])
    actor.send({ type: 'dependency.degraded', dependency: 'store', reason: 'connectionLost' })
    expect(store()).toEqual(['degraded', { store: 'connectionLost' }])
    actor.send({ type: 'dependency.healthy', dependency: 'realtime' })
    expect(store()).toEqual(['degraded', { store: 'connectionLost' }])
    actor.send({ type: 'dependency.healthy', dependency: 'store' })
    expect(store()).toEqual(['healthy', {}])
    actor.send({ type: 'shutdown' })
    await settle()
    expect(actor.getSnapshot().output).toEqual({ exitCode: 0 })
  })

  it('Realtime starts disabled when the relay does not deliver over it, and ignores its reports', async () => {
    const { actor, log } = relay()
    actor.start()
    expect(realtimeHealthOf(actor.getSnapshot())).toBeUndefined()
    await settle()
    expect(actor.getSnapshot().value).toEqual({ running: { store: 'healthy', realtime: 'disabled' } })
    actor.send({ type: 'dependency.degraded', dependency: 'realtime', reason: 'breakerOpen' })
    actor.send({ type: 'dependency.healthy', dependency: 'realtime' })
    await settle()
    expect(realtimeHealthOf(actor.getSnapshot())).toBe('disabled')
    expect(actor.getSnapshot().context.degraded).toEqual({})
    expect(log).toEqual(['startRelay'])
  })

  it('fails over on degraded, announcing why once, and announces the recovery when healthy again', async () => {
    const { actor, log } = relay({ realtime: true })
    actor.start()
    await settle()
    expect(actor.getSnapshot().value).toEqual({ running: { store: 'healthy', realtime: { healthy: 'steady' } } })
    expect(realtimeHealthOf(actor.getSnapshot())).toBe('healthy')
    actor.send({ type: 'dependency.degraded', dependency: 'realtime', reason: 'breakerOpen' })
    expect(realtimeHealthOf(actor.getSnapshot())).toBe('failedOver')
    actor.send({ type: 'dependency.degraded', dependency: 'realtime', reason: 'channelClosed' })
    await settle()
    expect(actor.getSnapshot().context).toMatchObject({ degraded: { realtime: 'channelClosed' }, failoverAnnounceError: null })
    expect(log).toEqual(['startRelay', 'announceFailover:breakerOpen'])

    actor.send({ type: 'dependency.healthy', dependency: 'realtime' })
    expect(actor.getSnapshot().matches({ running: { realtime: { healthy: 'recovering' } } })).toBe(true)
    await settle()
    expect(actor.getSnapshot().value).toEqual({ running: { store: 'healthy', realtime: { healthy: 'steady' } } })
    expect(actor.getSnapshot().context).toMatchObject({ degraded: {}, recoveryAnnounceError: null })
    expect(log).toEqual(['startRelay', 'announceFailover:breakerOpen', 'announceRecovery'])
  })

  it('a failed announcement changes no state; its error is kept until the next one starts', async () => {
    const { actor } = relay({ realtime: true, failAnnounce: true })
    actor.start()
    await settle()
    actor.send({ type: 'dependency.degraded', dependency: 'realtime', reason: 'breakerOpen' })
    await settle()
    expect(actor.getSnapshot().status).toBe('active')
    expect(realtimeHealthOf(actor.getSnapshot())).toBe('failedOver')
    expect(actor.getSnapshot().context.failoverAnnounceError).toBe('announceFailover: channel closed')
    actor.send({ type: 'dependency.healthy', dependency: 'realtime' })
    await settle()
    expect(actor.getSnapshot().matches({ running: { realtime: { healthy: 'steady' } } })).toBe(true)
    expect(actor.getSnapshot().context).toMatchObject({ recoveryAnnounceError: 'announceRecovery: channel closed', error: null, crashed: [] })
    actor.send({ type: 'dependency.degraded', dependency: 'realtime', reason: 'breakerOpen' })
    expect(actor.getSnapshot().context.failoverAnnounceError).toBeNull()
  })

  it('failing over again stops a recovery announcement still in flight', async () => {
    const { actor, log } = relay({ realtime: true, stuckRecovery: true })
    actor.start()
    await settle()
    actor.send({ type: 'dependency.degraded', dependency: 'realtime', reason: 'breakerOpen' })
    actor.send({ type: 'dependency.healthy', dependency: 'realtime' })
    await settle()
    expect(actor.getSnapshot().children.announceRecovery).toBeDefined()
    actor.send({ type: 'dependency.degraded', dependency: 'realtime', reason: 'channelClosed' })
    await settle()
    expect(realtimeHealthOf(actor.getSnapshot())).toBe('failedOver')
    expect(actor.getSnapshot().children.announceRecovery).toBeUndefined()
    expect(log).toEqual(['startRelay', 'announceFailover:breakerOpen', 'announceRecovery', 'announceFailover:channelClosed'])
  })

  it('store and Realtime health move independently, and shutdown from both degraded proceeds as before', async () => {
    const { actor, log } = relay({ realtime: true })
    actor.start()
    await settle()
    actor.send({ type: 'dependency.degraded', dependency: 'store', reason: 'breakerOpen' })
    expect(actor.getSnapshot().value).toEqual({ running: { store: 'degraded', realtime: { healthy: 'steady' } } })
    actor.send({ type: 'dependency.degraded', dependency: 'realtime', reason: 'channelClosed' })
    expect(actor.getSnapshot().value).toEqual({ running: { store: 'degraded', realtime: 'failedOver' } })
    actor.send({ type: 'dependency.healthy', dependency: 'store' })
    expect(actor.getSnapshot().value).toEqual({ running: { store: 'healthy', realtime: 'failedOver' } })
    actor.send({ type: 'dependency.degraded', dependency: 'store', reason: 'connectionLost' })
    expect(actor.getSnapshot().context.degraded).toEqual({ store: 'connectionLost', realtime: 'channelClosed' })

    actor.send({ type: 'shutdown' })
    expect(realtimeHealthOf(actor.getSnapshot())).toBeUndefined()
    await settle()
    expect(actor.getSnapshot().output).toEqual({ exitCode: 0 })
    expect(log).toEqual(['startRelay', 'announceFailover:channelClosed', 'stopIngest', 'flushDlq', 'closeTransports'])
  })

  it('goes on to flushingDlq after shutdownTimeout when a flusher never drains, marking the shutdown incomplete', async () => {
    const { actor, clock, log } = relay({ stuckFlusher: 'realtime' })
    actor.start()
    await settle()
    for (const { id } of input.flushers) actor.system.get(id)!.send({ type: 'events.added', count: 1 })
    actor.send({ type: 'shutdown' })
    await settle()
    expect(actor.getSnapshot().matches({ shuttingDown: 'drainingFlushers' })).toBe(true)
    expect(actor.getSnapshot().context.drained).toEqual(['storeFlusher'])

    clock.increment(input.shutdownTimeoutMs - 1)
    expect(actor.getSnapshot().matches({ shuttingDown: 'drainingFlushers' })).toBe(true)
    clock.increment(1)
    expect(actor.getSnapshot().matches({ shuttingDown: 'flushingDlq' })).toBe(true)
    expect(actor.getSnapshot().context.shutdownIncomplete).toBe(true)
    await settle()
    expect(actor.getSnapshot().matches('stopped')).toBe(true)
    expect(actor.getSnapshot().output).toEqual({ exitCode: 0 })
    expect(log.slice(-2)).toEqual(['flushDlq', 'closeTransports'])
  })

  it('closes transports after dlqFlushTimeout when flushDlq hangs, marking the shutdown incomplete', async () => {
    const { actor, clock, log } = relay({ stuckDlq: true })
    actor.start()
    await settle()
    actor.send({ type: 'shutdown' })
    await settle()
    expect(actor.getSnapshot().matches({ shuttingDown: 'flushingDlq' })).toBe(true)
    expect(actor.getSnapshot().context.shutdownIncomplete).toBe(false)
    clock.increment(input.dlqFlushTimeoutMs! - 1)
    expect(actor.getSnapshot().matches({ shuttingDown: 'flushingDlq' })).toBe(true)
    clock.increment(1)
    expect(actor.getSnapshot().matches({ shuttingDown: 'closingTransports' })).toBe(true)
    expect(actor.getSnapshot().context.shutdownIncomplete).toBe(true)
    await settle()
    expect(actor.getSnapshot().matches('stopped')).toBe(true)
    expect(actor.getSnapshot().output).toEqual({ exitCode: 0 })
    expect(log).toEqual(['startRelay', 'stopIngest', 'flushDlq', 'closeTransports'])
  })

  it('a crashing child stops the relay in order and exits 1 with the error', async () => {
    const { actor, log, crash } = relay()
    actor.start()
    await settle()
    actor.system.get('storeConnection')!.send({ type: 'connect' })
    await settle()
    for (const { id } of input.flushers) actor.system.get(id)!.send({ type: 'events.added', count: 1 })

    crash('store')
    expect(actor.getSnapshot().matches({ shuttingDown: 'stoppingIngest' })).toBe(true)
    expect(actor.getSnapshot().context).toMatchObject({ error: 'storeConnection: probe crashed', crashed: ['storeConnection'] })
    await settle()
    await settle()
    expect(actor.getSnapshot().matches('stopped')).toBe(true)
    expect(actor.getSnapshot().output).toEqual({ exitCode: 1, error: 'storeConnection: probe crashed' })
    // Still drained and flushed; the crashed connection is not sent `stop`.
    expect(log).toEqual(['startRelay', 'stopIngest', 'flush:store', 'flush:realtime', 'flushDlq', 'closeTransports'])
  })

  it('a child crashing during shutdown is recorded and not waited for; the exit code stays 0', async () => {
    const { actor, clock, log } = relay({ stuckFlusher: 'store', crashingFlusher: 'store' })
    actor.start()
    await settle()
    actor.system.get('realtimeFlusher')!.send({ type: 'events.added', count: 1 })
    actor.system.get('storeFlusher')!.send({ type: 'events.added', count: 10 }) // a full batch: its flush hangs
    actor.send({ type: 'shutdown' })
    await settle()
    expect(actor.getSnapshot().matches({ shuttingDown: 'drainingFlushers' })).toBe(true)
    expect(actor.getSnapshot().context.drained).toEqual(['realtimeFlusher'])

    actor.system.get('storeFlusher')!.send({ type: 'events.added', count: 1 }) // a late request lands; the flusher crashes
    expect(actor.getSnapshot().matches({ shuttingDown: 'flushingDlq' })).toBe(true)
    expect(actor.getSnapshot().context).toMatchObject({
      crashed: ['storeFlusher'],
      shutdownErrors: ['storeFlusher: rate window overflowed'],
      shutdownIncomplete: false,
      error: null,
    })
    await settle()
    expect(actor.getSnapshot().output).toEqual({ exitCode: 0 })
    expect(clock.now()).toBe(0)
    expect(log.slice(-2)).toEqual(['flushDlq', 'closeTransports'])
  })

  it('without provided actors, start-up fails naming the missing one', async () => {
    const actor = createActor(supervisorMachine, { input, inspect: coverage.inspect }).start()
    await settle()
    expect(actor.getSnapshot().output).toEqual({ exitCode: 1, error: 'startRelay not provided' })
  })

  it('takes every state and transition of the machine', () => {
    coverage.assertComplete()
  })
})
