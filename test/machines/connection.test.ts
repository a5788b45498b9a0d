import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { createActor, fromCallback, fromPromise, SimulatedClock } from 'xstate'
import type { AnyEventObject, AnyMachineSnapshot, AnyStateMachine } from 'xstate'
import { adjacencyMapToArray, getAdjacencyMap, getShortestPaths } from 'xstate/graph'
import {
  backoffCeilingMs,
  connectionMachine,
  fullJitterBackoffMs,
  type ConnectionEmitted,
  type ConnectionInput,
  type ProbeInput,
} from '../../machines/connection.js'
import { MachineCoverage } from '../helpers/coverage.js'

const coverage = new MachineCoverage(connectionMachine)

interface Deferred<T> {
  promise: Promise<T>
  resolve: (value: T) => void
  reject: (error: unknown) => void
}

function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void
  let reject!: (error: unknown) => void
  const promise = new Promise<T>((res, rej) => {
    resolve = res
    reject = rej
  })
  return { promise, resolve, reject }
}

const settle = () => new Promise<void>((resolve) => setImmediate(resolve))

/** The real machine with test-held connect/disconnect promises and a probe whose sendBack the test holds. */
function startConnection(input: ConnectionInput) {
  const clock = new SimulatedClock()
  const connects: Array<{ input: { name: string }; call: Deferred<unknown>; signal: AbortSignal }> = []
  const disconnects: Array<{ input: { name: string }; call: Deferred<void> }> = []
  const probe = { sendBack: null as ((event: AnyEventObject) => void) | null, starts: [] as ProbeInput[], stops: 0 }
  const machine = connectionMachine.provide({
    actors: {
      connect: fromPromise<unknown, { name: string }>(({ input, signal }) => {
        const call = deferred<unknown>()
        connects.push({ input, call, signal })
        return call.promise
      }),
      disconnect: fromPromise<void, { name: string }>(({ input }) => {
        const call = deferred<void>()
        disconnects.push({ input, call })
        return call.promise
      }),
      probe: fromCallback<AnyEventObject, ProbeInput>(({ sendBack, input }) => {
        probe.starts.push(input)
        probe.sendBack = sendBack
        return () => {
          probe.sendBack = null
          probe.stops++
        }
      }),
    },
  })
  const actor = createActor(machine, { input, clock, inspect: coverage.inspect })
  const emitted: ConnectionEmitted[] = []
  actor.on('*', (event) => emitted.push(event))
  actor.start()
  return { actor, clock, connects, disconnects, probe, emitted }
}

type Running = ReturnType<typeof startConnection>

const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' })

/** Makes the real actor take `event`: commands are sent, actor results come from the held promises, delays from the clock. */
async function cause(run: Running, event: AnyEventObject): Promise<void> {
  const { actor, clock, connects, disconnects, probe } = run
  const context = actor.getSnapshot().context
  switch (event.type) {
    case 'xstate.done.actor.connect':
      connects.at(-1)!.call.resolve(undefined)
      return settle()
    case 'xstate.error.actor.connect':
      connects.at(-1)!.call.reject(event.error)
      return settle()
    case 'xstate.done.actor.disconnect':
      disconnects.at(-1)!.call.resolve()
      return settle()
    case 'xstate.error.actor.disconnect':
      disconnects.at(-1)!.call.reject(event.error)
      return settle()
    case 'xstate.after.backoff.connection.reconnecting':
      return advanceExactly(run, context.backoffMs)
    case 'xstate.after.stable.connection.connected':
      return advanceExactly(run, context.probeIntervalMs)
    case 'xstate.after.disconnectTimeout.connection.disconnecting':
      return advanceExactly(run, context.disconnectTimeoutMs)
    case 'connection.lost':
      // The probe is the usual reporter; it must be running whenever the model says connected.
      expect(probe.sendBack).not.toBeNull()
      probe.sendBack!(event)
      return
    default:
      actor.send(event as Parameters<typeof actor.send>[0])
  }
}

/** Advances the clock to 1 ms before the delay (nothing may happen), then to the delay. */
function advanceExactly({ actor, clock }: Running, ms: number): void {
  const before = actor.getSnapshot().value
  if (ms > 0) {
    clock.increment(ms - 1)
    expect(actor.getSnapshot().value).toEqual(before)
  }
  clock.increment(1)
}

function expectLike(actual: AnyMachineSnapshot, model: AnyMachineSnapshot): void {
  expect(actual.value).toEqual(model.value)
  expect(actual.status).toEqual(model.status)
  const { attempt, backoffMs, lastFault } = model.context
  expect(actual.context).toMatchObject({ attempt, backoffMs, lastFault })
}

/** What the machine must have emitted when it moved from `from` to `to`. */
function expectEmitted(emitted: ConnectionEmitted[], from: AnyMachineSnapshot, to: AnyMachineSnapshot): void {
  const entered = from.value === to.value ? null : to.value
  const name = to.context.name
  if (entered === 'connected') expect(emitted).toEqual([{ type: 'connection.established', name, attempt: to.context.attempt }])
  else if (entered === 'reconnecting')
    expect(emitted).toEqual([{ type: 'connection.lost', name, attempt: to.context.attempt, retryInMs: to.context.backoffMs, ...to.context.lastFault }])
  else if (entered === 'failed') expect(emitted).toEqual([{ type: 'connection.failed', name, attempts: to.context.attempt, ...to.context.lastFault }])
  else expect(emitted).toEqual([])
}

describe('connection machine, model-based', () => {
  const input: ConnectionInput = { name: 'store', backoff: { baseMs: 100, capMs: 300 }, maxAttempts: 2, probeIntervalMs: 1_000, disconnectTimeoutMs: 2_000, random: () => 0.5 }
  const model: AnyStateMachine = connectionMachine
  const allEvents: AnyEventObject[] = [
    { type: 'connect' },
    { type: 'retry' },
    { type: 'stop' },
    { type: 'connection.lost', code: 'heartbeatTimeout', message: 'no pong in 1000 ms' },
    { type: 'xstate.done.actor.connect', output: undefined },
    { type: 'xstate.error.actor.connect', error: refused },
    { type: 'xstate.done.actor.disconnect', output: undefined },
    { type: 'xstate.error.actor.disconnect', error: new Error('socket already closed') },
    { type: 'xstate.after.backoff.connection.reconnecting' },
    { type: 'xstate.after.stable.connection.connected' },
    { type: 'xstate.after.disconnectTimeout.connection.disconnecting' },
  ]
  const options = { input, limit: 10_000, events: (snapshot: AnyMachineSnapshot) => allEvents.filter((e) => snapshot.can(e)) }
  const serialize = (s: AnyMachineSnapshot) => JSON.stringify({ value: s.value, context: s.context })
  const adjacency = getAdjacencyMap(model, options)
  const shortest = new Map(getShortestPaths(model, options).map((p) => [serialize(p.state), p]))

  // Every edge of the model: the shortest path to its source state, then the edge.
  const edges = adjacencyMapToArray(adjacency).map(({ state, event, nextState: next }) => {
    const head = shortest.get(serialize(state))!
    return { head, event, next, name: `${head.steps.map((s) => s.event.type).slice(1).join(' → ') || '(start)'} → ${event.type}` }
  })

  it('the model has every state and a path to each', () => {
    const reached = new Set([...shortest.values()].map((p) => JSON.stringify(p.state.value)))
    expect([...reached].sort()).toEqual(['"connected"', '"connecting"', '"disconnecting"', '"failed"', '"idle"', '"reconnecting"', '"stopped"'])
  })

  it.each(edges.map((e) => [e.name, e] as const))('%s', async (_name, { head, event, next }) => {
    const run = startConnection(input)
    const steps = [...head.steps.slice(1), { event, state: next }]
    let previous = head.steps[0]!.state
    expectLike(run.actor.getSnapshot(), previous)
    for (const step of steps) {
      run.emitted.length = 0
      await cause(run, step.event)
      const actual = run.actor.getSnapshot()
      expectLike(actual, step.state)
      expectEmitted(run.emitted, previous, step.state)
      // The liveness probe runs exactly while connected.
      expect(run.probe.sendBack !== null).toBe(actual.value === 'connected')
      previous = step.state
    }
    for (const c of run.connects) expect(c.input).toEqual({ name: 'store' })
    for (const d of run.disconnects) expect(d.input).toEqual({ name: 'store' })
    run.actor.stop()
  })
})

describe('connection machine, behaviour', () => {
  const base: ConnectionInput = { name: 'store', backoff: { baseMs: 250, capMs: 30_000 }, probeIntervalMs: 5_000 }

  it('full-jitter backoff stays within [0, min(cap, base·2^attempt)]', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 10_000 }),
        fc.integer({ min: 1, max: 120_000 }),
        fc.integer({ min: 0, max: 2_000 }),
        fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
        (baseMs, capMs, attempt, r) => {
          const delay = fullJitterBackoffMs({ baseMs, capMs }, attempt, () => r)
          expect(Number.isInteger(delay)).toBe(true)
          expect(delay).toBeGreaterThanOrEqual(0)
          expect(delay).toBeLessThanOrEqual(Math.min(capMs, baseMs * 2 ** attempt))
        },
      ),
    )
    expect(backoffCeilingMs({ baseMs: 250, capMs: 30_000 }, 0)).toBe(250)
    expect(backoffCeilingMs({ baseMs: 250, capMs: 30_000 }, 3)).toBe(2_000)
    expect(backoffCeilingMs({ baseMs: 250, capMs: 30_000 }, 10_000)).toBe(30_000)
  })

  it('a running actor waits exactly its planned backoff, each within the ceiling for its attempt', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), { minLength: 1, maxLength: 12 }), async (randoms) => {
        let i = 0
        const run = startConnection({ ...base, random: () => randoms[i++ % randoms.length]! })
        run.actor.send({ type: 'connect' })
        for (let attempt = 1; attempt <= randoms.length; attempt++) {
          await cause(run, { type: 'xstate.error.actor.connect', error: refused })
          const lost = run.emitted.at(-1)
          expect(lost).toMatchObject({ type: 'connection.lost', attempt, code: 'ECONNREFUSED' })
          const retryInMs = (lost as { retryInMs: number }).retryInMs
          expect(retryInMs).toBeGreaterThanOrEqual(0)
          expect(retryInMs).toBeLessThanOrEqual(Math.min(30_000, 250 * 2 ** attempt))
          expect(retryInMs).toBe(Math.floor(randoms[(attempt - 1) % randoms.length]! * Math.min(30_000, 250 * 2 ** attempt)))
          advanceExactly(run, retryInMs)
          expect(run.actor.getSnapshot().value).toBe('connecting')
        }
        expect(run.connects).toHaveLength(randoms.length + 1)
        run.actor.stop()
      }),
      { numRuns: 50 },
    )
  })

  it('uses Math.random when no random source is given', async () => {
    const run = startConnection(base)
    run.actor.send({ type: 'connect' })
    await cause(run, { type: 'xstate.error.actor.connect', error: refused })
    const { backoffMs } = run.actor.getSnapshot().context
    expect(backoffMs).toBeGreaterThanOrEqual(0)
    expect(backoffMs).toBeLessThanOrEqual(500)
    run.actor.stop()
  })

  it('fails after maxAttempts consecutive failures, and retry leaves failed with the count reset', async () => {
    const run = startConnection({ ...base, maxAttempts: 3, random: () => 0.99 })
    run.actor.send({ type: 'connect' })
    for (let i = 0; i < 2; i++) {
      await cause(run, { type: 'xstate.error.actor.connect', error: refused })
      expect(run.actor.getSnapshot().value).toBe('reconnecting')
      await cause(run, { type: 'xstate.after.backoff.connection.reconnecting' })
    }
    run.emitted.length = 0
    await cause(run, { type: 'xstate.error.actor.connect', error: refused })
    expect(run.actor.getSnapshot().value).toBe('failed')
    expect(run.emitted).toEqual([{ type: 'connection.failed', name: 'store', attempts: 3, code: 'ECONNREFUSED', message: refused.message }])
    // Nothing is scheduled in failed: a day later it is still there.
    run.clock.increment(86_400_000)
    expect(run.actor.getSnapshot().value).toBe('failed')
    expect(run.connects).toHaveLength(3)

    run.actor.send({ type: 'retry' })
    expect(run.actor.getSnapshot().value).toBe('connecting')
    expect(run.actor.getSnapshot().context.attempt).toBe(0)
    expect(run.connects).toHaveLength(4)
    await cause(run, { type: 'xstate.done.actor.connect' })
    expect(run.actor.getSnapshot().value).toBe('connected')
    run.actor.stop()
  })

  it('retries forever when maxAttempts is absent, the backoff settling at the cap', async () => {
    const run = startConnection({ ...base, random: () => 0.999 })
    run.actor.send({ type: 'connect' })
    for (let i = 0; i < 40; i++) {
      await cause(run, { type: 'xstate.error.actor.connect', error: refused })
      await cause(run, { type: 'xstate.after.backoff.connection.reconnecting' })
    }
    expect(run.actor.getSnapshot().value).toBe('connecting')
    expect(run.actor.getSnapshot().context.attempt).toBe(40)
    expect(run.actor.getSnapshot().context.backoffMs).toBe(Math.floor(0.999 * 30_000))
    run.actor.stop()
  })

  it('accepts connection.lost sent in by src, not only from the probe', async () => {
    const run = startConnection(base)
    run.actor.send({ type: 'connect' })
    await cause(run, { type: 'xstate.done.actor.connect' })
    expect(run.probe.starts).toEqual([{ name: 'store', probeIntervalMs: 5_000 }])
    run.actor.send({ type: 'connection.lost', code: 'queryTimeout', message: 'pool query timed out' })
    expect(run.actor.getSnapshot().value).toBe('reconnecting')
    expect(run.actor.getSnapshot().context.lastFault).toEqual({ code: 'queryTimeout', message: 'pool query timed out' })
    expect(run.probe.stops).toBe(1)
    run.actor.stop()
  })

  it('a link that drops before it proved stable backs off further; a stable one starts over', async () => {
    const run = startConnection({ ...base, random: () => 0.5 })
    run.actor.send({ type: 'connect' })
    const flap = async () => {
      await cause(run, { type: 'xstate.done.actor.connect' })
      await cause(run, { type: 'connection.lost', code: 'reset', message: 'ECONNRESET' })
      const { attempt, backoffMs } = run.actor.getSnapshot().context
      await cause(run, { type: 'xstate.after.backoff.connection.reconnecting' })
      return { attempt, backoffMs }
    }
    expect(await flap()).toEqual({ attempt: 1, backoffMs: 250 })
    expect(await flap()).toEqual({ attempt: 2, backoffMs: 500 })
    await cause(run, { type: 'xstate.done.actor.connect' })
    await cause(run, { type: 'xstate.after.stable.connection.connected' })
    expect(run.actor.getSnapshot().context.attempt).toBe(0)
    await cause(run, { type: 'connection.lost', code: 'reset', message: 'ECONNRESET' })
    expect(run.actor.getSnapshot().context).toMatchObject({ attempt: 1, backoffMs: 250 })
    run.actor.stop()
  })

  it('stop while connected disconnects, bounded by disconnectTimeout; elsewhere it stops at once', async () => {
    const run = startConnection({ ...base, disconnectTimeoutMs: 1_500 })
    run.actor.send({ type: 'connect' })
    await cause(run, { type: 'xstate.done.actor.connect' })
    run.actor.send({ type: 'stop' })
    expect(run.actor.getSnapshot().value).toBe('disconnecting')
    expect(run.disconnects).toHaveLength(1)
    expect(run.probe.stops).toBe(1)
    run.actor.send({ type: 'connection.lost', code: 'x', message: 'late' })
    expect(run.actor.getSnapshot().value).toBe('disconnecting')
    await cause(run, { type: 'xstate.after.disconnectTimeout.connection.disconnecting' })
    expect(run.actor.getSnapshot().status).toBe('done')

    const connecting = startConnection(base)
    connecting.actor.send({ type: 'connect' })
    connecting.actor.send({ type: 'stop' })
    expect(connecting.actor.getSnapshot().value).toBe('stopped')
    expect(connecting.connects[0]!.signal.aborted).toBe(true)
    expect(connecting.disconnects).toHaveLength(0)
  })

  it('the placeholder actors say what is missing', async () => {
    const actor = createActor(connectionMachine, { input: { ...base, maxAttempts: 1 }, inspect: coverage.inspect })
    const failed = new Promise<ConnectionEmitted>((resolve) => actor.on('connection.failed', resolve))
    actor.start()
    actor.send({ type: 'connect' })
    expect(await failed).toMatchObject({ code: 'connectFailed', message: "connection 'store': no connect actor provided" })
    actor.stop()
  })

  it('covers every state and transition of the machine', () => {
    coverage.assertComplete()
  })
})
