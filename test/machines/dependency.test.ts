import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { createActor, fromCallback, SimulatedClock, type AnyActorRef, type AnyEventObject, type EventObject, type InspectionEvent } from 'xstate'
import { tryAcquirePermission, type CircuitBreakerInput } from '../../machines/circuitBreaker.js'
import { connectionMachine, type ConnectionFault, type ConnectionInput, type ProbeInput } from '../../machines/connection.js'
import { dependencyMachine, type DependencyInput, type DependencyName } from '../../machines/dependency.js'
import { dlqReplayerMachine, type ReplayBatchInput, type ReplayBatchOutput } from '../../machines/dlqReplayer.js'
import { MachineCoverage } from '../helpers/coverage.js'
import { heldPromise, settle } from '../helpers/machines.js'
import { hostMachine, inspectAll, isSend, nameOf, recorder, systemIdOf, type Received, type Sent } from '../helpers/machineSystem.js'

// Escalating a child's error throws inside the transition, so xstate never reports that microstep:
// the crash scenario checks it by hand.
const coverage = new MachineCoverage(dependencyMachine, { ignoreTransitions: ['dependency on xstate.error.actor.* #0'] })

// ---------------------------------------------------------------------------------------------
// The world: the real connection, breaker and replayer, with their I/O held by the test, and
// recorders standing in for the supervisor and the flushers under their systemIds.

const connectionInput = (name: string): Omit<ConnectionInput, 'reportTo'> => ({
  name,
  backoff: { baseMs: 200, capMs: 1_000 },
  maxAttempts: 3,
  probeIntervalMs: 5_000,
  disconnectTimeoutMs: 500,
  failedRetryMs: 20_000,
  random: () => 0.5,
})
const breakerInput = (name: string): Omit<CircuitBreakerInput, 'reportTo'> => ({
  name,
  failureRateThreshold: 50,
  slidingWindowSize: 4,
  minimumNumberOfCalls: 2,
  slowCallDurationMs: 1_000,
  openDurationMs: 30_000,
  halfOpenProbes: 2,
})

/** The store: reports to the supervisor, has a replayer, wakes two flushers (and names one that is not running). */
const storeInput: DependencyInput = {
  dependency: 'store',
  id: 'storeDependency',
  reportTo: 'supervisor',
  connection: { id: 'storeConnection', input: connectionInput('store') },
  breaker: { id: 'storeBreaker', input: breakerInput('store') },
  replayer: { id: 'storeReplayer', input: { name: 'storeReplayer', sink: 'store', pollIntervalMs: 60_000, depth: 3 } },
  flushers: ['storeFlusher', 'backlogFlusher', 'ghostFlusher'],
}
/** Realtime: no replayer, one flusher. */
const realtimeInput: DependencyInput = {
  dependency: 'realtime',
  id: 'realtimeDependency',
  reportTo: 'supervisor',
  connection: { id: 'realtimeConnection', input: connectionInput('realtime') },
  breaker: { id: 'realtimeBreaker', input: { ...breakerInput('realtime'), openDurationMs: 10_000, halfOpenProbes: 3 } },
  flushers: ['realtimeFlusher'],
}
/** Nobody to tell: no reportTo, no replayer, no flushers. */
const loneInput: DependencyInput = {
  dependency: 'realtime',
  id: 'loneDependency',
  connection: { id: 'loneConnection', input: connectionInput('realtime') },
  breaker: { id: 'loneBreaker', input: breakerInput('realtime') },
}
/** A supervisor that is not (or no longer) in the system. */
const orphanInput: DependencyInput = { ...loneInput, id: 'orphanDependency', reportTo: 'goneSupervisor', flushers: ['goneFlusher'] }

const recorders = ['supervisor', 'storeFlusher', 'backlogFlusher', 'realtimeFlusher']

/** One event the dependency processed, with what it sent while processing it. */
interface Step { event: AnyEventObject; value: unknown; sent: Sent[] }

function world(input: DependencyInput) {
  const calls = {
    connect: heldPromise<unknown, { name: string }>(),
    disconnect: heldPromise<void, { name: string }>(),
    replayBatch: heldPromise<ReplayBatchOutput, ReplayBatchInput>(),
  }
  const link = {
    probe: undefined as ((event: AnyEventObject) => void) | undefined,
    watch: undefined as ((event: EventObject) => void) | undefined,
  }
  const connection = connectionMachine.provide({
    actors: {
      connect: calls.connect.logic,
      disconnect: calls.disconnect.logic,
      // The liveness probe: the test drops the link through it, or crashes it.
      probe: fromCallback<EventObject, ProbeInput>(({ sendBack, receive }) => {
        link.probe = sendBack
        receive((event) => {
          if (event.type === 'test.crash') throw new Error('probe crashed')
        })
        return () => void (link.probe = undefined)
      }),
      // The link saying it is back by itself (a channel that rejoined).
      watch: fromCallback<EventObject, { name: string }>(({ sendBack }) => {
        link.watch = sendBack
        return () => void (link.watch = undefined)
      }),
    },
  })
  const replayer = dlqReplayerMachine.provide({ actors: { replayBatch: calls.replayBatch.logic } })
  const machine = dependencyMachine.provide({ actors: { connection, dlqReplayer: replayer } })
  const received: Received[] = []
  const host = hostMachine([...recorders.map((id) => ({ id, logic: recorder(id, received) })), { id: input.id, logic: machine, input }], received)

  // Steps of the dependency, from the inspection stream: sends are relayed before the snapshot that closes their step.
  const steps: Step[] = []
  let sent: Sent[] = []
  const record = (event: InspectionEvent) => {
    if (event.type === '@xstate.event' && isSend(event, input.id)) sent.push({ to: nameOf(event.actorRef), event: event.event })
    if (event.type === '@xstate.snapshot' && systemIdOf(event.actorRef) === input.id) {
      steps.push({ event: event.event, value: (event.snapshot as { value?: unknown }).value, sent })
      sent = []
    }
  }
  const clock = new SimulatedClock()
  const actor = createActor(host, { clock, inspect: inspectAll(coverage.inspect, record) })
  const get = (id: string) => actor.system.get(id)
  let ref: AnyActorRef | undefined
  // Kept once started: a dependency that failed is no longer in the system.
  const dependency = () => (ref ??= get(input.id)!)
  const breaker = () => get(input.breaker.id)!
  const run = async (fn: () => void) => {
    fn()
    await settle()
  }
  return {
    actor,
    clock,
    calls,
    link,
    received,
    steps,
    /** What the dependency sent since its last step (a failing step has no snapshot). */
    unstepped: () => sent,
    get,
    dependency,
    breaker,
    start: () => run(() => (actor.start(), dependency())),
    connectResolves: () => run(() => calls.connect.one().resolve(undefined)),
    connectRejects: (code: string, message: string) => run(() => calls.connect.one().reject(Object.assign(new Error(message), { code }))),
    linkDrops: (code: string, message: string) => run(() => link.probe!({ type: 'connection.lost', code, message })),
    linkRestored: () => run(() => link.watch!({ type: 'connection.restored' })),
    /** A guarded call through the breaker, as a sink makes it: only when permitted. */
    call: (outcome: 'ok' | 'fail' | 'slow') =>
      run(() => {
        if (!tryAcquirePermission(breaker() as never)) return
        breaker().send(outcome === 'fail' ? { type: 'call.failed' } : { type: 'call.succeeded', durationMs: outcome === 'slow' ? 5_000 : 10 })
      }),
    elapse: (ms: number) => run(() => clock.increment(ms)),
    send: (event: AnyEventObject) => run(() => dependency().send(event)),
    snapshot: () => dependency().getSnapshot(),
    reportsTo: (by: string) => received.filter((r) => r.by === by).map((r) => r.event),
  }
}
type World = ReturnType<typeof world>

// ---------------------------------------------------------------------------------------------
// The oracle: a hand-written table of how the dependency reacts to each report of its children,
// with the little it remembers (why the link is down, the breaker's last failure rate).

interface Model { state: 'healthy' | 'degraded'; fault: ConnectionFault | null; failureRate: number }
const initialModel: Model = { state: 'healthy', fault: null, failureRate: 0 }

const degradedReason = (m: Model): string =>
  m.fault ? `connection lost (${m.fault.code}: ${m.fault.message})` : `circuit breaker open (failure rate ${m.failureRate}%)`

/**
 * state × event → next state and what is sent, to whom. `alive(id)` says whether a recipient is in
 * the system (a stopped connection, a flusher that never ran, a supervisor gone).
 */
function react(input: DependencyInput, m: Model, event: AnyEventObject, alive: (id: string) => boolean): { next: Model; sent: Sent[] } {
  const to = (id: string | undefined, e: AnyEventObject): Sent[] => (id !== undefined && alive(id) ? [{ to: id, event: e }] : [])
  const replayer = (type: 'sink.healthy' | 'sink.unhealthy') => to(input.replayer?.id, { type })
  const flushers = () => (input.flushers ?? []).flatMap((id) => to(id, { type: 'sink.recovered' }))
  const report = (e: AnyEventObject) => to(input.reportTo, e)
  const name: DependencyName = input.dependency
  switch (`${m.state} ${event.type}`) {
    case 'healthy xstate.init':
      return { next: m, sent: to(input.connection.id, { type: 'connect' }) }
    case 'healthy connection.lost':
    case 'degraded connection.lost':
    case 'healthy connection.failed':
    case 'degraded connection.failed':
      return { next: { ...m, fault: { code: event.code, message: event.message } }, sent: to(input.breaker.id, { type: 'forceOpen' }) }
    case 'healthy connection.established':
    case 'degraded connection.established':
      return { next: { ...m, fault: null }, sent: to(input.breaker.id, { type: 'probe' }) }
    case 'healthy retry':
    case 'degraded retry':
    case 'healthy stop':
    case 'degraded stop':
      return { next: m, sent: to(input.connection.id, { type: event.type }) }
    case 'healthy breaker.opened':
    case 'degraded breaker.opened': {
      const next: Model = { ...m, state: 'degraded', failureRate: event.failureRate }
      return { next, sent: [...replayer('sink.unhealthy'), ...report({ type: 'dependency.degraded', dependency: name, reason: degradedReason(next) })] }
    }
    case 'degraded breaker.halfOpened':
      return { next: m, sent: [...replayer('sink.healthy'), ...flushers()] }
    case 'degraded breaker.closed':
      return { next: { ...m, state: 'healthy' }, sent: [...replayer('sink.healthy'), ...flushers(), ...report({ type: 'dependency.healthy', dependency: name })] }
    // Healthy, a closed or half-open breaker is news to nobody; every other event changes nothing.
    default:
      return { next: m, sent: [] }
  }
}

/** Checks every step the dependency took since `from` against the table; returns the model after them. */
function checkSteps(w: World, input: DependencyInput, model: Model, from: number, where: string, rows?: Set<string>): Model {
  for (const [i, step] of w.steps.slice(from).entries()) {
    rows?.add(`${model.state} ${step.event.type}`)
    const at = `${where}, step ${from + i} (${step.event.type})`
    // A recipient missing now was missing then: nothing comes back once stopped or never spawned.
    const alive = (id: string) => w.get(id) !== undefined || step.sent.some((s) => s.to === id)
    const { next, sent } = react(input, model, step.event, alive)
    expect(step.sent, at).toEqual(sent)
    expect(step.value, at).toBe(next.state)
    model = next
  }
  expect(w.snapshot().context.fault, where).toEqual(model.fault)
  expect(w.snapshot().context.failureRate, where).toBe(model.failureRate)
  return model
}

// ---------------------------------------------------------------------------------------------
// Property: whatever the world does, each step of the dependency is what the table says.

type Command =
  | { type: 'connectResolves' }
  | { type: 'connectRejects'; code: string }
  | { type: 'linkDrops'; code: string }
  | { type: 'linkRestored' }
  | { type: 'call'; outcome: 'ok' | 'fail' | 'slow' }
  | { type: 'elapse'; ms: number }
  | { type: 'retry' }
  | { type: 'stop' }
  | { type: 'disconnectResolves' }
  | { type: 'replaySettles'; ok: boolean }

const commandArb: fc.Arbitrary<Command> = fc.oneof(
  { arbitrary: fc.constant<Command>({ type: 'connectResolves' }), weight: 4 },
  { arbitrary: fc.constantFrom('ECONNREFUSED', 'ETIMEDOUT').map((code): Command => ({ type: 'connectRejects', code })), weight: 2 },
  { arbitrary: fc.constantFrom('ECONNRESET', 'CHANNEL_ERROR').map((code): Command => ({ type: 'linkDrops', code })), weight: 3 },
  { arbitrary: fc.constant<Command>({ type: 'linkRestored' }), weight: 2 },
  { arbitrary: fc.constantFrom('ok', 'fail', 'slow').map((outcome): Command => ({ type: 'call', outcome: outcome as 'ok' | 'fail' | 'slow' })), weight: 6 },
  // The backoff, a stable link, the breaker's cool-downs, the connection's slow retry.
  { arbitrary: fc.constantFrom(100, 1_000, 5_000, 10_000, 20_000, 30_000).map((ms): Command => ({ type: 'elapse', ms })), weight: 3 },
  { arbitrary: fc.constant<Command>({ type: 'retry' }), weight: 1 },
  { arbitrary: fc.boolean().map((ok): Command => ({ type: 'replaySettles', ok })), weight: 1 },
)
/** A run: a while of outage and recovery, then (half the time) the shutdown's `stop` and whatever still happens. */
const runArb = fc
  .tuple(fc.array(commandArb, { minLength: 15, maxLength: 50 }), fc.option(fc.array(fc.oneof(commandArb, fc.constant<Command>({ type: 'disconnectResolves' })), { maxLength: 6 })))
  .map(([body, tail]): Command[] => (tail ? [...body, { type: 'stop' }, ...tail] : body))

async function perform(w: World, c: Command): Promise<void> {
  switch (c.type) {
    case 'connectResolves':
      if (w.calls.connect.live().length) await w.connectResolves()
      return
    case 'connectRejects':
      if (w.calls.connect.live().length) await w.connectRejects(c.code, 'connect failed')
      return
    case 'linkDrops':
      if (w.link.probe) await w.linkDrops(c.code, 'link dropped')
      return
    case 'linkRestored':
      if (w.link.watch) await w.linkRestored()
      return
    case 'call':
      return w.call(c.outcome)
    case 'elapse':
      return w.elapse(c.ms)
    case 'retry':
    case 'stop':
      return w.send({ type: c.type })
    case 'disconnectResolves':
      if (w.calls.disconnect.live().length) {
        w.calls.disconnect.one().resolve(undefined)
        await settle()
      }
      return
    case 'replaySettles':
      if (w.calls.replayBatch.live().length) {
        const call = w.calls.replayBatch.one()
        if (c.ok) call.resolve({ replayed: 3, parked: 0, remaining: 0 })
        else call.reject(new Error('store unavailable'))
        await settle()
      }
      return
  }
}

describe('dependency against its reaction table (real children, fast-check command sequences)', () => {
  const inputs = [storeInput, realtimeInput, loneInput, orphanInput]

  it('every step of every run is the table’s, and the recorders hear exactly what was sent to them', async () => {
    const seen = new Set<string>()
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...inputs), runArb, async (input, commands) => {
        const w = world(input)
        await w.start()
        let model = checkSteps(w, input, initialModel, 0, 'start', seen)
        expect(w.steps[0]!.event.type).toBe('xstate.init')
        for (const [i, command] of commands.entries()) {
          const from = w.steps.length
          await perform(w, command)
          model = checkSteps(w, input, model, from, `command ${i}: ${JSON.stringify(command)}`, seen)
        }
        expect(w.snapshot().status).toBe('active')
        expect(w.unstepped()).toEqual([])
        // The recorders received what the steps sent them, nothing else.
        for (const id of recorders) {
          const sentTo = w.steps.flatMap((s) => s.sent.filter((x) => x.to === id).map((x) => x.event))
          expect(w.reportsTo(id), id).toEqual(sentTo)
        }
        w.actor.stop()
      }),
      // A fixed seed keeps the row check below deterministic; FC_SEED explores others.
      { numRuns: 200, seed: Number(process.env.FC_SEED ?? 1_312) },
    )
    // The runs exercised every row of the table that children can cause.
    // The runs caused every row of the table the children can cause ('healthy connection.failed' is
    // rare at random: the next scenario takes it).
    const states = ['healthy', 'degraded']
    const rows = [
      'healthy xstate.init',
      ...states.flatMap((s) => ['connection.lost', 'connection.failed', 'connection.established', 'retry', 'stop', 'breaker.opened', 'breaker.closed'].map((e) => `${s} ${e}`)),
      'degraded breaker.halfOpened',
    ].filter((row) => row !== 'healthy connection.failed')
    expect(rows.filter((row) => !seen.has(row))).toEqual([])
  })
})

// ---------------------------------------------------------------------------------------------
// Scenarios, expectations stated by hand.

describe('dependency scenarios', () => {
  it('spawns its children under their systemIds and asks the connection to connect', async () => {
    const w = world(storeInput)
    await w.start()
    expect(w.snapshot().value).toBe('healthy')
    expect(Object.keys(w.snapshot().children).sort()).toEqual(['storeBreaker', 'storeConnection', 'storeReplayer'])
    expect(w.get('storeBreaker')!.getSnapshot().value).toBe('closed')
    expect(w.get('storeReplayer')!.getSnapshot().value).toBe('waiting')
    expect(w.get('storeConnection')!.getSnapshot().value).toBe('connecting')
    expect(w.calls.connect.live().map((c) => c.input)).toEqual([{ name: 'store' }])
    expect([...w.calls.disconnect.live(), ...w.calls.replayBatch.live()]).toEqual([])
    // The breaker's initial `closed` reaches the healthy dependency and goes no further.
    expect(w.steps.map((s) => s.event.type)).toEqual(['xstate.init', 'breaker.closed'])
    expect(w.received).toEqual([])
    w.actor.stop()
  })

  it('a Realtime outage: link lost → breaker forced open; link back → half-open at once, flushers told; probes close it, all before openDurationMs', async () => {
    const w = world(realtimeInput)
    await w.start()
    await w.connectResolves()
    await w.call('ok')
    expect(w.breaker().getSnapshot().value).toBe('closed')

    await w.linkDrops('CHANNEL_ERROR', 'channel error')
    expect(w.get('realtimeConnection')!.getSnapshot().value).toBe('reconnecting')
    expect(w.breaker().getSnapshot().value).toBe('open')
    expect(w.snapshot().value).toBe('degraded')
    expect(w.reportsTo('supervisor')).toEqual([{ type: 'dependency.degraded', dependency: 'realtime', reason: 'connection lost (CHANNEL_ERROR: channel error)' }])
    expect(w.reportsTo('realtimeFlusher')).toEqual([])

    // The channel rejoins by itself after 1.5 s: no backoff wait, no breaker cool-down (10 s).
    await w.elapse(1_500)
    await w.linkRestored()
    await w.connectResolves()
    expect(w.get('realtimeConnection')!.getSnapshot().value).toBe('connected')
    expect(w.breaker().getSnapshot().value).toBe('halfOpen')
    expect(w.reportsTo('realtimeFlusher')).toEqual([{ type: 'sink.recovered' }])
    expect(w.snapshot().value).toBe('degraded')
    expect(w.snapshot().context.fault).toBeNull()

    await w.elapse(200)
    for (let i = 0; i < 3; i++) await w.call('ok')
    expect(w.breaker().getSnapshot().value).toBe('closed')
    expect(w.snapshot().value).toBe('healthy')
    expect(w.reportsTo('supervisor')).toEqual([
      { type: 'dependency.degraded', dependency: 'realtime', reason: 'connection lost (CHANNEL_ERROR: channel error)' },
      { type: 'dependency.healthy', dependency: 'realtime' },
    ])
    expect(w.reportsTo('realtimeFlusher')).toEqual([{ type: 'sink.recovered' }, { type: 'sink.recovered' }])
    expect(w.clock.now()).toBe(1_700)
    expect(w.clock.now()).toBeLessThan(10_000)
    w.actor.stop()
  })

  it('a connection that gives up forces the breaker open; an admin retry reconnects and the probes close it', async () => {
    const w = world(storeInput)
    await w.start()
    for (let attempt = 0; attempt < 3; attempt++) {
      await w.connectRejects('ECONNREFUSED', 'connect ECONNREFUSED 127.0.0.1:5432')
      if (attempt < 2) await w.elapse(1_000)
    }
    expect(w.get('storeConnection')!.getSnapshot().value).toBe('failed')
    expect(w.breaker().getSnapshot().value).toBe('open')
    expect(w.reportsTo('supervisor')).toEqual([{ type: 'dependency.degraded', dependency: 'store', reason: 'connection lost (ECONNREFUSED: connect ECONNREFUSED 127.0.0.1:5432)' }])
    expect(w.get('storeReplayer')!.getSnapshot().context.sinkHealthy).toBe(false)

    await w.send({ type: 'retry' })
    expect(w.get('storeConnection')!.getSnapshot().value).toBe('connecting')
    await w.connectResolves()
    expect(w.breaker().getSnapshot().value).toBe('halfOpen')
    // Half-open: the replayer resumes (its replays are probes too), both running flushers retry now.
    expect(w.get('storeReplayer')!.getSnapshot().value).toBe('replaying')
    expect(w.reportsTo('storeFlusher')).toEqual([{ type: 'sink.recovered' }])
    expect(w.reportsTo('backlogFlusher')).toEqual([{ type: 'sink.recovered' }])
    await w.call('ok')
    await w.call('ok')
    expect(w.snapshot().value).toBe('healthy')
    expect(w.reportsTo('supervisor').at(-1)).toEqual({ type: 'dependency.healthy', dependency: 'store' })
    w.actor.stop()
  })

  it('a connection giving up after the breaker healed forces it open again', async () => {
    const w = world(storeInput)
    await w.start()
    await w.connectRejects('ECONNREFUSED', 'refused')
    await w.elapse(1_000)
    await w.connectRejects('ECONNREFUSED', 'refused')
    await w.elapse(1_000)
    expect(w.calls.connect.live()).toHaveLength(1)
    // Meanwhile the breaker's cool-down ends and the sinks' probes succeed (the link is another path).
    await w.elapse(30_000)
    await w.call('ok')
    await w.call('ok')
    expect(w.snapshot().value).toBe('healthy')
    const before = w.steps.length
    await w.connectRejects('ETIMEDOUT', 'timed out')
    expect(w.get('storeConnection')!.getSnapshot().value).toBe('failed')
    expect(w.steps.slice(before, before + 1).map((s) => [s.event.type, s.sent])).toEqual([['connection.failed', [{ to: 'storeBreaker', event: { type: 'forceOpen' } }]]])
    expect(w.snapshot().value).toBe('degraded')
    expect(w.reportsTo('supervisor')).toEqual([
      { type: 'dependency.degraded', dependency: 'store', reason: 'connection lost (ECONNREFUSED: refused)' },
      { type: 'dependency.healthy', dependency: 'store' },
      { type: 'dependency.degraded', dependency: 'store', reason: 'connection lost (ETIMEDOUT: timed out)' },
    ])
    w.actor.stop()
  })

  it('failing calls open the breaker: the reason names the failure rate; a slow probe keeps it degraded, a good cool-down heals it', async () => {
    const w = world(storeInput)
    await w.start()
    await w.connectResolves()
    await w.call('ok')
    await w.call('fail')
    expect(w.breaker().getSnapshot().value).toBe('open')
    expect(w.reportsTo('supervisor')).toEqual([{ type: 'dependency.degraded', dependency: 'store', reason: 'circuit breaker open (failure rate 50%)' }])
    expect(w.get('storeReplayer')!.getSnapshot().context.sinkHealthy).toBe(false)

    await w.elapse(30_000)
    expect(w.breaker().getSnapshot().value).toBe('halfOpen')
    await w.call('slow')
    expect(w.breaker().getSnapshot().value).toBe('open')
    expect(w.snapshot().value).toBe('degraded')
    expect(w.reportsTo('supervisor').at(-1)).toEqual({ type: 'dependency.degraded', dependency: 'store', reason: 'circuit breaker open (failure rate 100%)' })
    expect(w.get('storeReplayer')!.getSnapshot().context.sinkHealthy).toBe(false)

    await w.elapse(30_000)
    await w.call('ok')
    await w.call('ok')
    expect(w.snapshot().value).toBe('healthy')
    expect(w.reportsTo('storeFlusher')).toEqual([{ type: 'sink.recovered' }, { type: 'sink.recovered' }, { type: 'sink.recovered' }])
    expect(w.get('storeReplayer')!.getSnapshot().context.sinkHealthy).toBe(true)
    w.actor.stop()
  })

  it('stop closes the connection; a retry after it stopped goes nowhere and fails nothing', async () => {
    const w = world(storeInput)
    await w.start()
    await w.connectResolves()
    await w.send({ type: 'stop' })
    expect(w.get('storeConnection')!.getSnapshot().value).toBe('disconnecting')
    w.calls.disconnect.one().resolve(undefined)
    await settle()
    expect(w.get('storeConnection')).toBeUndefined()
    const before = w.steps.length
    await w.send({ type: 'retry' })
    await w.send({ type: 'stop' })
    expect(w.steps.slice(before).map((s) => [s.event.type, s.sent])).toEqual([
      ['retry', []],
      ['stop', []],
    ])
    expect(w.snapshot().status).toBe('active')
    w.actor.stop()
  })

  it('a crashing child fails the dependency, so its owner sees the crash', async () => {
    const w = world(storeInput)
    await w.start()
    await w.connectResolves()
    w.get('storeConnection')!.getSnapshot().children.probe!.send({ type: 'test.crash' })
    await settle()
    expect(w.snapshot().status).toBe('error')
    const crash = w.received.find((r) => r.by === 'host')!
    expect(crash.event.type).toBe('xstate.error.actor.storeDependency')
    expect((crash.event as unknown as { error: Error }).error.message).toBe('probe crashed')
    expect(w.reportsTo('supervisor')).toEqual([])
  })

  it('with nobody to tell, an outage and a recovery send nothing and fail nothing', async () => {
    const w = world(orphanInput)
    await w.start()
    await w.connectResolves()
    await w.linkDrops('ECONNRESET', 'reset')
    await w.linkRestored()
    await w.connectResolves()
    for (let i = 0; i < 2; i++) await w.call('ok')
    expect(w.breaker().getSnapshot().value).toBe('closed')
    expect(w.snapshot().value).toBe('healthy')
    expect(w.steps.flatMap((s) => s.sent).filter((s) => s.to !== 'loneConnection' && s.to !== 'loneBreaker')).toEqual([])
    expect(w.received).toEqual([])
    w.actor.stop()
  })

})

describe('dependency coverage', () => {
  it('takes every state and transition of the machine', () => {
    coverage.assertComplete()
  })
})
