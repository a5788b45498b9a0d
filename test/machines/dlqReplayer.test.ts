import { describe, expect, it } from 'vitest'
import { createActor, fromPromise, SimulatedClock } from 'xstate'
import type { AnyEventObject, AnyMachineSnapshot, AnyStateMachine } from 'xstate'
import { adjacencyMapToArray, getAdjacencyMap, getShortestPaths } from 'xstate/graph'
import {
  dlqReplayerMachine,
  type DlqReplayerEmitted,
  type DlqReplayerInput,
  type ReplayBatchInput,
  type ReplayBatchOutput,
} from '../../machines/dlqReplayer.js'
import { MachineCoverage } from '../helpers/coverage.js'

const coverage = new MachineCoverage(dlqReplayerMachine)

interface HeldCall {
  input: ReplayBatchInput
  signal: AbortSignal
  settled: boolean
  resolve: (output: ReplayBatchOutput) => void
  reject: (error: unknown) => void
}

const settle = () => new Promise<void>((resolve) => setImmediate(resolve))

/** The real machine with a replayBatch whose calls the test holds and settles. */
function startReplayer(input: DlqReplayerInput) {
  const clock = new SimulatedClock()
  const calls: HeldCall[] = []
  const machine = dlqReplayerMachine.provide({
    actors: {
      replayBatch: fromPromise<ReplayBatchOutput, ReplayBatchInput>(
        ({ input, signal }) =>
          new Promise<ReplayBatchOutput>((resolve, reject) => {
            const call: HeldCall = {
              input,
              signal,
              settled: false,
              resolve: (output) => ((call.settled = true), resolve(output)),
              reject: (error) => ((call.settled = true), reject(error)),
            }
            calls.push(call)
          }),
      ),
    },
  })
  const actor = createActor(machine, { input, clock, inspect: coverage.inspect })
  const emitted: DlqReplayerEmitted[] = []
  actor.on('*', (event) => emitted.push(event))
  actor.start()
  const inFlight = () => calls.filter((c) => !c.settled && !c.signal.aborted)
  return { actor, clock, calls, emitted, inFlight }
}

type Running = ReturnType<typeof startReplayer>

function advanceExactly({ actor, clock }: Running, ms: number): void {
  const before = actor.getSnapshot().value
  clock.increment(ms - 1)
  expect(actor.getSnapshot().value).toEqual(before)
  clock.increment(1)
}

async function cause(run: Running, event: AnyEventObject): Promise<void> {
  switch (event.type) {
    case 'xstate.done.actor.replayBatch':
      expect(run.inFlight()).toHaveLength(1)
      run.inFlight()[0]!.resolve(event.output)
      return settle()
    case 'xstate.error.actor.replayBatch':
      expect(run.inFlight()).toHaveLength(1)
      run.inFlight()[0]!.reject(event.error)
      return settle()
    case 'xstate.after.poll.dlqReplayer.waiting':
      return advanceExactly(run, run.actor.getSnapshot().context.pollIntervalMs)
    default:
      run.actor.send(event as Parameters<typeof run.actor.send>[0])
  }
}

const unavailable = new Error('connect ECONNREFUSED 127.0.0.1:5432')
const serialize = (s: AnyMachineSnapshot) => {
  const { depth, sinkHealthy, lastError } = s.context
  return JSON.stringify({ value: s.value, depth, sinkHealthy, lastError })
}

describe('dlqReplayer, model-based', () => {
  const input: DlqReplayerInput = { name: 'dlqReplayer.store', sink: 'store', pollIntervalMs: 500 }
  const model: AnyStateMachine = dlqReplayerMachine
  const partial: ReplayBatchOutput = { replayed: 2, parked: 0, remaining: 3 }
  const last: ReplayBatchOutput = { replayed: 1, parked: 1, remaining: 0 }
  const allEvents: AnyEventObject[] = [
    { type: 'sink.healthy' },
    { type: 'sink.unhealthy' },
    { type: 'dlq.changed', depth: 0 },
    { type: 'dlq.changed', depth: 5 },
    { type: 'replay' },
    { type: 'xstate.done.actor.replayBatch', output: partial },
    { type: 'xstate.done.actor.replayBatch', output: last },
    { type: 'xstate.error.actor.replayBatch', error: unavailable },
    { type: 'xstate.after.poll.dlqReplayer.waiting' },
  ]
  // Totals (replayed, parked) grow without bound; the model's states are what decides behaviour.
  const options = { input, serializeState: serialize, limit: 10_000, events: (snapshot: AnyMachineSnapshot) => allEvents.filter((e) => snapshot.can(e)) }
  const adjacency = getAdjacencyMap(model, options)
  const shortest = new Map(getShortestPaths(model, options).map((p) => [serialize(p.state), p]))
  const label = (e: AnyEventObject) =>
    e.type === 'dlq.changed' ? `dlq.changed(${e.depth})` : e.type === 'xstate.done.actor.replayBatch' ? `replayBatch done(remaining ${e.output.remaining})` : e.type
  const edges = adjacencyMapToArray(adjacency).map(({ state, event, nextState: next }) => {
    const head = shortest.get(serialize(state))!
    return { head, event, next, name: `${head.steps.slice(1).map((s) => label(s.event)).join(' → ') || '(start)'} → ${label(event)}` }
  })

  it('the model reaches every state', () => {
    expect(new Set([...shortest.values()].map((p) => p.state.value))).toEqual(new Set(['waiting', 'replaying', 'idle']))
  })

  it.each(edges.map((e) => [e.name, e] as const))('%s', async (_name, { head, event, next }) => {
    const run = startReplayer(input)
    for (const step of [...head.steps.slice(1), { event, state: next }]) {
      run.emitted.length = 0
      await cause(run, step.event)
      const actual = run.actor.getSnapshot()
      expect(serialize(actual)).toEqual(serialize(step.state))
      // A replay call is in flight exactly while replaying; never two at once.
      expect(run.inFlight()).toHaveLength(actual.value === 'replaying' ? 1 : 0)
      if (step.event.type === 'xstate.done.actor.replayBatch') {
        const { replayed, parked, remaining } = step.event.output as ReplayBatchOutput
        const common = { name: 'dlqReplayer.store', sink: 'store', remaining }
        expect(run.emitted).toEqual([
          ...(replayed > 0 ? [{ type: 'dlq.replayed', ...common, replayed }] : []),
          ...(parked > 0 ? [{ type: 'dlq.parked', ...common, parked }] : []),
        ])
      } else expect(run.emitted).toEqual([])
    }
    for (const call of run.calls) expect(call.input).toEqual({ sink: 'store' })
    // No call is abandoned: every one that started was settled by the test, none aborted.
    expect(run.calls.filter((c) => c.signal.aborted)).toEqual([])
    run.actor.stop()
  })
})

describe('dlqReplayer, behaviour', () => {
  const input: DlqReplayerInput = { name: 'dlqReplayer.store', sink: 'store', pollIntervalMs: 1_000 }

  it('waits for a healthy sink, then drains oldest-first batches until nothing remains', async () => {
    const run = startReplayer({ ...input, depth: 5 })
    expect(run.actor.getSnapshot().value).toBe('waiting')
    run.clock.increment(10_000)
    expect(run.calls).toHaveLength(0)
    run.actor.send({ type: 'sink.healthy' })
    expect(run.actor.getSnapshot().value).toBe('replaying')
    await cause(run, { type: 'xstate.done.actor.replayBatch', output: { replayed: 2, parked: 0, remaining: 3 } })
    await cause(run, { type: 'xstate.done.actor.replayBatch', output: { replayed: 2, parked: 1, remaining: 0 } })
    expect(run.actor.getSnapshot().value).toBe('idle')
    expect(run.actor.getSnapshot().context).toMatchObject({ depth: 0, replayed: 4, parked: 1 })
    expect(run.calls).toHaveLength(2)
    expect(run.emitted).toEqual([
      { type: 'dlq.replayed', name: 'dlqReplayer.store', sink: 'store', replayed: 2, remaining: 3 },
      { type: 'dlq.replayed', name: 'dlqReplayer.store', sink: 'store', replayed: 2, remaining: 0 },
      { type: 'dlq.parked', name: 'dlqReplayer.store', sink: 'store', parked: 1, remaining: 0 },
    ])
  })

  it('sink.unhealthy during a replay lets the call settle, then waits', async () => {
    const run = startReplayer({ ...input, depth: 5, sinkHealthy: true })
    run.clock.increment(1_000)
    expect(run.actor.getSnapshot().value).toBe('replaying')
    run.actor.send({ type: 'sink.unhealthy' })
    expect(run.actor.getSnapshot().value).toBe('replaying')
    expect(run.calls[0]!.signal.aborted).toBe(false)
    await cause(run, { type: 'xstate.done.actor.replayBatch', output: { replayed: 1, parked: 0, remaining: 4 } })
    expect(run.actor.getSnapshot().value).toBe('waiting')
    expect(run.actor.getSnapshot().context).toMatchObject({ depth: 4, replayed: 1 })
    // Polls keep waiting while unhealthy.
    run.clock.increment(5_000)
    expect(run.actor.getSnapshot().value).toBe('waiting')
    expect(run.calls).toHaveLength(1)
    run.actor.send({ type: 'sink.healthy' })
    expect(run.actor.getSnapshot().value).toBe('replaying')
  })

  it('a failed replay waits one poll interval before trying again, even if the sink still looks healthy', async () => {
    const run = startReplayer({ ...input, depth: 2, sinkHealthy: true })
    run.actor.send({ type: 'replay' })
    expect(run.actor.getSnapshot().value).toBe('replaying')
    await cause(run, { type: 'xstate.error.actor.replayBatch', error: unavailable })
    expect(run.actor.getSnapshot().value).toBe('waiting')
    expect(run.actor.getSnapshot().context.lastError).toBe(unavailable.message)
    advanceExactly(run, 1_000)
    expect(run.actor.getSnapshot().value).toBe('replaying')
    expect(run.calls).toHaveLength(2)
  })

  it('idle wakes on new dead letters: straight to replaying when healthy, to waiting when not', () => {
    const healthy = startReplayer({ ...input, sinkHealthy: true })
    healthy.clock.increment(1_000)
    expect(healthy.actor.getSnapshot().value).toBe('idle')
    healthy.actor.send({ type: 'dlq.changed', depth: 0 })
    expect(healthy.actor.getSnapshot().value).toBe('idle')
    healthy.actor.send({ type: 'dlq.changed', depth: 7 })
    expect(healthy.actor.getSnapshot().value).toBe('replaying')

    const sick = startReplayer({ ...input, sinkHealthy: true })
    sick.clock.increment(1_000)
    sick.actor.send({ type: 'sink.unhealthy' })
    sick.actor.send({ type: 'dlq.changed', depth: 7 })
    expect(sick.actor.getSnapshot().value).toBe('waiting')
    expect(sick.calls).toHaveLength(0)
  })

  it('the admin replay command replays when the sink is healthy and waits otherwise', () => {
    const run = startReplayer({ ...input, sinkHealthy: true })
    run.clock.increment(1_000)
    run.actor.send({ type: 'sink.unhealthy' })
    run.actor.send({ type: 'replay' })
    expect(run.actor.getSnapshot().value).toBe('waiting')
    run.actor.send({ type: 'replay' })
    expect(run.actor.getSnapshot().value).toBe('waiting')
    expect(run.calls).toHaveLength(0)
  })

  it('the placeholder replayBatch says what is missing', async () => {
    const actor = createActor(dlqReplayerMachine, { input: { ...input, depth: 1 }, inspect: coverage.inspect }).start()
    actor.send({ type: 'sink.healthy' })
    await settle()
    expect(actor.getSnapshot().value).toBe('waiting')
    expect(actor.getSnapshot().context.lastError).toBe("dlqReplayer 'store': no replayBatch actor provided")
    actor.stop()
  })

  it('covers every state and transition of the machine', () => {
    coverage.assertComplete()
  })
})
