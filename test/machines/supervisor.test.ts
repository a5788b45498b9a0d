import { describe, expect, it } from 'vitest'
import { createActor, fromCallback, fromPromise, SimulatedClock, type AnyEventObject, type AnyMachineSnapshot, type AnyStateMachine } from 'xstate'
import { getSimplePaths, type StatePath } from 'xstate/graph'
import { batchFlusherMachine, defaultFlusherProfiles, defaultRateThresholds, type BatchFlusherInput, type FlushBatchInput, type FlushBatchOutput } from '../../machines/batchFlusher.js'
import { supervisorMachine, type SupervisorInput } from '../../machines/supervisor.js'
import { MachineCoverage } from '../helpers/coverage.js'

const coverage = new MachineCoverage(supervisorMachine)
const settle = () => new Promise<void>((resolve) => setImmediate(resolve))

const flusherInput = (name: string, batchSize: number): BatchFlusherInput => ({
  name,
  profiles: { ...defaultFlusherProfiles, low: { batchSize, flushIntervalMs: 2000 } },
  rate: defaultRateThresholds,
  retry: { baseMs: 100, maxMs: 5000 },
})
// Distinct low batch sizes let the test tell the two flushers' flushBatch calls apart.
const input: SupervisorInput = {
  shutdownTimeoutMs: 5000,
  flushers: [
    { id: 'storeFlusher', input: flusherInput('store', 3) },
    { id: 'realtimeFlusher', input: flusherInput('realtime', 5) },
  ],
}
const batchOf = (id: string) => input.flushers.find((f) => f.id === id)!.input.profiles.low.batchSize

/** Provides every actor the supervisor names; each call waits for the test to settle it. */
function harness() {
  type Call<O> = { src: string; input: unknown; signal: AbortSignal; settled: boolean; resolve: (o: O) => void; reject: (e: Error) => void }
  const calls: Array<Call<unknown>> = []
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
  const machine = supervisorMachine.provide({
    actors: {
      startRelay: controlled<void>('startRelay'),
      stopIngest: controlled<void>('stopIngest'),
      closeTransports: controlled<void>('closeTransports'),
      healthReporter: fromCallback(() => {
        health.running++
        health.started++
        return () => void health.running--
      }),
      batchFlusher: batchFlusherMachine.provide({ actors: { flushBatch: controlled<FlushBatchOutput, FlushBatchInput>('flushBatch') } }),
    },
  })
  const reset = () => {
    calls.length = 0
    health.running = health.started = 0
  }
  return { machine, calls, live, health, reset }
}

// ---------------------------------------------------------------------------------------------
// Model-based: every simple path of the statechart, replayed against the real actor.

const invoked = ['startRelay', 'stopIngest', 'closeTransports'] as const
const timeoutEvent = 'xstate.after.shutdownTimeout.supervisor.shuttingDown.drainingFlushers'

const modelEvents = (s: AnyMachineSnapshot): AnyEventObject[] => [
  { type: 'shutdown' },
  ...invoked
    .filter((id) => s.children[id])
    .flatMap((id) => [{ type: `xstate.done.actor.${id}` }, { type: `xstate.error.actor.${id}`, error: new Error(`${id} failed`) }]),
  // A flusher can only complete once it has been told to drain.
  ...(s.matches('shuttingDown')
    ? input.flushers.filter((f) => s.children[f.id]).map((f) => ({ type: `xstate.done.actor.${f.id}`, actorId: f.id, output: { name: f.input.name, flushedTotal: 1 } }))
    : []),
  { type: timeoutEvent },
]

const paths = getSimplePaths(supervisorMachine as AnyStateMachine, { input, events: modelEvents, stopWhen: (s) => s.status !== 'active' })
const h = harness()

async function replay(path: StatePath<AnyMachineSnapshot, AnyEventObject>): Promise<void> {
  h.reset()
  const clock = new SimulatedClock()
  const actor = createActor(h.machine, { systemId: 'supervisor', input, clock, inspect: coverage.inspect }).start()
  for (const [i, { event, state }] of path.steps.entries()) {
    const where = `step ${i}: ${JSON.stringify(event)}`
    const [, src] = /^xstate\.(?:done|error)\.actor\.(.+)$/.exec(event.type) ?? []
    if (event.type === 'shutdown') actor.send({ type: 'shutdown' })
    else if (event.type === timeoutEvent) clock.increment(input.shutdownTimeoutMs)
    else if (src && input.flushers.some((f) => f.id === src)) {
      // Complete that flusher's drain: its one in-flight flush writes the one pending event.
      const [flush, ...extra] = h.live('flushBatch', (i) => (i as FlushBatchInput).max === batchOf(src))
      expect(extra, where).toHaveLength(0)
      flush!.resolve({ flushed: 1 })
    } else if (src) {
      const [call, ...extra] = h.live(src)
      expect(extra, where).toHaveLength(0)
      if (event.type.startsWith('xstate.done')) call!.resolve(undefined)
      else call!.reject(new Error(`${src} failed`))
    }
    await settle()
    // Entering running: give each flusher something to drain, so it completes only when told.
    if (src === 'startRelay' && event.type.startsWith('xstate.done')) {
      for (const f of input.flushers) actor.system.get(f.id)!.send({ type: 'events.added', count: 1 })
    }
    const snapshot = actor.getSnapshot()
    expect(snapshot.matches(state.value), `${where} → ${JSON.stringify(snapshot.value)}`).toBe(true)
    expect(snapshot.value, where).toEqual(state.value)
    expect(snapshot.status, where).toBe(state.status)
    expect(snapshot.context, where).toEqual(state.context)
    expect(snapshot.output, where).toEqual(state.output)
    expect(h.health.running, `${where}: health reporter runs only while running`).toBe(snapshot.matches('running') ? 1 : 0)
    // A repeated shutdown leaves the model state as it is, so no path takes it: check it here.
    if (state.matches('shuttingDown')) {
      actor.send({ type: 'shutdown' })
      expect(actor.getSnapshot().value, `${where}: second shutdown`).toEqual(state.value)
      expect(actor.getSnapshot().context, `${where}: second shutdown`).toEqual(state.context)
      expect(h.live('stopIngest').length + h.live('closeTransports').length, where).toBeLessThanOrEqual(1)
    }
  }
  actor.stop()
}

describe('supervisor (model-based)', () => {
  it('the traversal reaches both final states', () => {
    expect(paths.some((p) => p.state.matches('stopped'))).toBe(true)
    expect(paths.some((p) => p.state.matches('failed'))).toBe(true)
  })

  it(`replays ${paths.length} simple paths against the real actor`, async () => {
    for (const path of paths) await replay(path)
  })
})

// ---------------------------------------------------------------------------------------------
// Scenarios with real flushers.

/** Everything succeeds at once; the log records the order of side effects. */
function relay(options: { failStart?: string; stuckFlusher?: string } = {}) {
  const log: string[] = []
  const step = (name: string) =>
    fromPromise<void>(async () => {
      log.push(name)
      if (name === 'startRelay' && options.failStart) throw new Error(options.failStart)
    })
  // Which flusher is calling: told apart by batch size, as in the model test.
  const flushBatch = fromPromise<FlushBatchOutput, FlushBatchInput>(({ input: { max } }) => {
    const id = max === batchOf('storeFlusher') ? 'storeFlusher' : 'realtimeFlusher'
    log.push(`flush:${id}`)
    return id === options.stuckFlusher ? new Promise<never>(() => {}) : Promise.resolve({ flushed: Math.min(max, 1) })
  })
  const machine = supervisorMachine.provide({
    actors: {
      startRelay: step('startRelay'),
      stopIngest: step('stopIngest'),
      closeTransports: step('closeTransports'),
      batchFlusher: batchFlusherMachine.provide({ actors: { flushBatch } }),
    },
  })
  const clock = new SimulatedClock()
  const actor = createActor(machine, { systemId: 'supervisor', input, clock, inspect: coverage.inspect })
  return { actor, clock, log }
}

describe('supervisor scenarios', () => {
  it('starts, spawns the flushers under their systemId, and shuts down in order to exit code 0', async () => {
    const { actor, log } = relay()
    actor.start()
    expect(actor.getSnapshot().matches('starting')).toBe(true)
    await settle()
    expect(actor.getSnapshot().matches({ running: 'serving' })).toBe(true)
    for (const { id } of input.flushers) {
      const flusher = actor.system.get(id)
      expect(flusher, id).toBeDefined()
      expect(actor.getSnapshot().children[id]).toBe(flusher)
      flusher.send({ type: 'events.added', count: 1 })
    }

    actor.send({ type: 'shutdown' })
    actor.send({ type: 'shutdown' }) // idempotent
    expect(actor.getSnapshot().matches({ shuttingDown: 'stoppingIngest' })).toBe(true)
    await settle()
    await settle()
    expect(actor.getSnapshot().status).toBe('done')
    expect(actor.getSnapshot().matches('stopped')).toBe(true)
    expect(actor.getSnapshot().output).toEqual({ exitCode: 0 })
    expect(actor.getSnapshot().context).toMatchObject({ drained: ['storeFlusher', 'realtimeFlusher'], shutdownIncomplete: false })
    expect(log).toEqual(['startRelay', 'stopIngest', 'flush:storeFlusher', 'flush:realtimeFlusher', 'closeTransports'])
  })

  it('a start-up failure ends in failed with the message and exit code 1, spawning nothing', async () => {
    const { actor } = relay({ failStart: 'migration 0002 failed' })
    actor.start()
    await settle()
    expect(actor.getSnapshot().matches('failed')).toBe(true)
    expect(actor.getSnapshot().context.error).toBe('migration 0002 failed')
    expect(actor.getSnapshot().output).toEqual({ exitCode: 1, error: 'migration 0002 failed' })
    expect(actor.system.get('storeFlusher')).toBeUndefined()
  })

  it('closes transports after shutdownTimeout when a flusher never drains, marking the shutdown incomplete', async () => {
    const { actor, clock, log } = relay({ stuckFlusher: 'realtimeFlusher' })
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
    expect(actor.getSnapshot().matches({ shuttingDown: 'closingTransports' })).toBe(true)
    expect(actor.getSnapshot().context.shutdownIncomplete).toBe(true)
    await settle()
    expect(actor.getSnapshot().matches('stopped')).toBe(true)
    expect(actor.getSnapshot().output).toEqual({ exitCode: 0 })
    expect(log.at(-1)).toBe('closeTransports')
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
