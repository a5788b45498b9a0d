import { assign, enqueueActions, setup } from 'xstate'
import { circuitBreakerMachine, type CircuitBreakerEmitted, type CircuitBreakerInput } from './circuitBreaker.js'
import { connectionMachine, type ConnectionEmitted, type ConnectionFault, type ConnectionInput } from './connection.js'
import { dlqReplayerMachine, type DlqReplayerInput } from './dlqReplayer.js'

/** An outbound dependency the relay writes to. */
export type DependencyName = 'store' | 'realtime'

/** A child this machine spawns; `id` is both its child id and its systemId. */
export interface Owned<I> { id: string; input: I }

export interface DependencyInput {
  dependency: DependencyName
  /** This machine's own systemId: its children report to it. */
  id: string
  /** systemId of the machine told when this dependency degrades or recovers (the supervisor); none when absent. */
  reportTo?: string
  connection: Owned<Omit<ConnectionInput, 'reportTo'>>
  breaker: Owned<Omit<CircuitBreakerInput, 'reportTo'>>
  /** The store has a dead-letter queue to replay; Realtime has none. */
  replayer?: Owned<DlqReplayerInput>
  /** systemIds of the batch flushers writing to this dependency: told the moment it is usable again. */
  flushers?: string[]
}

/** Commands: `retry` (admin) reconnects a connection that gave up; `stop` closes it (shutdown). */
export type DependencyCommand = { type: 'retry' } | { type: 'stop' }

/** What xstate delivers when a child fails. */
export type ChildErrorEvent = { type: `xstate.error.actor.${string}`; error: unknown }

export type DependencyEvent = DependencyCommand | ConnectionEmitted | CircuitBreakerEmitted | ChildErrorEvent

/** What the owner (supervisor) hears. */
export type DependencyReport =
  | { type: 'dependency.degraded'; dependency: DependencyName; reason: string }
  | { type: 'dependency.healthy'; dependency: DependencyName }

export interface DependencyContext extends DependencyInput {
  /** Why the connection is down, while it is; the degraded reason names it. */
  fault: ConnectionFault | null
  /** The breaker's failure rate when it last opened. */
  failureRate: number
}

const reasonOf = (c: DependencyContext): string =>
  c.fault ? `connection lost (${c.fault.code}: ${c.fault.message})` : `circuit breaker open (failure rate ${c.failureRate}%)`

/**
 * One outbound dependency: its connection, its circuit breaker and (for the store) its dead-letter
 * replayer, and the decisions that couple them. The children report here by systemId; this machine
 * reacts by transitions:
 *
 * - connection lost or given up → breaker forced open now (no batch is sent into a dead link);
 * - connection (re)established → breaker probes at once (half-open, not after its cool-down);
 * - breaker opened → replayer pauses, the owner hears `dependency.degraded`;
 * - breaker half-open → replayer resumes (replays are probes too) and flushers retry now;
 * - breaker closed → replayer resumes, flushers retry now, the owner hears `dependency.healthy`.
 *
 * A child that fails fails this machine, so the owner sees the crash.
 */
export const dependencyMachine = setup({
  types: { input: {} as DependencyInput, context: {} as DependencyContext, events: {} as DependencyEvent },
  actors: { connection: connectionMachine, circuitBreaker: circuitBreakerMachine, dlqReplayer: dlqReplayerMachine },
  actions: {
    spawnOwned: enqueueActions(({ context: c, enqueue }) => {
      enqueue.spawnChild('circuitBreaker', { id: c.breaker.id, systemId: c.breaker.id, input: { ...c.breaker.input, reportTo: c.id } })
      if (c.replayer) enqueue.spawnChild('dlqReplayer', { id: c.replayer.id, systemId: c.replayer.id, input: c.replayer.input })
      enqueue.spawnChild('connection', { id: c.connection.id, systemId: c.connection.id, input: { ...c.connection.input, reportTo: c.id } })
    }),
    // A child that has stopped (the connection, at shutdown) is no longer in the system: nothing to tell.
    toConnection: enqueueActions(({ context, enqueue, system }, event: { type: 'connect' | 'retry' | 'stop' }) => {
      const connection = system.get(context.connection.id)
      if (connection) enqueue.sendTo(connection, event)
    }),
    toBreaker: enqueueActions(({ context, enqueue, system }, event: { type: 'forceOpen' | 'probe' }) => {
      const breaker = system.get(context.breaker.id)
      if (breaker) enqueue.sendTo(breaker, event)
    }),
    toReplayer: enqueueActions(({ context, enqueue, system }, event: { type: 'sink.healthy' | 'sink.unhealthy' }) => {
      const replayer = context.replayer ? system.get(context.replayer.id) : undefined
      if (replayer) enqueue.sendTo(replayer, event)
    }),
    wakeFlushers: enqueueActions(({ context, enqueue, system }) => {
      for (const id of context.flushers ?? []) {
        const flusher = system.get(id)
        if (flusher) enqueue.sendTo(flusher, { type: 'sink.recovered' })
      }
    }),
    report: enqueueActions(({ context, enqueue, system }, health: 'degraded' | 'healthy') => {
      const owner = context.reportTo === undefined ? undefined : system.get(context.reportTo)
      if (!owner) return
      const report: DependencyReport =
        health === 'degraded' ? { type: 'dependency.degraded', dependency: context.dependency, reason: reasonOf(context) } : { type: 'dependency.healthy', dependency: context.dependency }
      enqueue.sendTo(owner, report)
    }),
    recordFault: assign((_, fault: ConnectionFault) => ({ fault })),
    clearFault: assign({ fault: null }),
    recordFailureRate: assign((_, { failureRate }: { failureRate: number }) => ({ failureRate })),
    escalate: (_, { error }: { error: unknown }) => {
      throw error
    },
  },
}).createMachine({
  id: 'dependency',
  context: ({ input }) => ({ ...input, fault: null, failureRate: 0 }),
  entry: ['spawnOwned', { type: 'toConnection', params: { type: 'connect' } }],
  on: {
    'connection.lost': {
      actions: [{ type: 'recordFault', params: ({ event }) => ({ code: event.code, message: event.message }) }, { type: 'toBreaker', params: { type: 'forceOpen' } }],
    },
    'connection.failed': {
      actions: [{ type: 'recordFault', params: ({ event }) => ({ code: event.code, message: event.message }) }, { type: 'toBreaker', params: { type: 'forceOpen' } }],
    },
    'connection.established': { actions: ['clearFault', { type: 'toBreaker', params: { type: 'probe' } }] },
    retry: { actions: { type: 'toConnection', params: { type: 'retry' } } },
    stop: { actions: { type: 'toConnection', params: { type: 'stop' } } },
    'xstate.error.actor.*': { actions: { type: 'escalate', params: ({ event }) => ({ error: event.error }) } },
  },
  initial: 'healthy',
  states: {
    healthy: {
      on: {
        'breaker.opened': {
          target: 'degraded',
          actions: [
            { type: 'recordFailureRate', params: ({ event }) => event },
            { type: 'toReplayer', params: { type: 'sink.unhealthy' } },
            { type: 'report', params: 'degraded' },
          ],
        },
      },
    },
    degraded: {
      on: {
        // A failed probe: still degraded; the reason may have changed.
        'breaker.opened': {
          actions: [
            { type: 'recordFailureRate', params: ({ event }) => event },
            { type: 'toReplayer', params: { type: 'sink.unhealthy' } },
            { type: 'report', params: 'degraded' },
          ],
        },
        'breaker.halfOpened': { actions: [{ type: 'toReplayer', params: { type: 'sink.healthy' } }, 'wakeFlushers'] },
        'breaker.closed': {
          target: 'healthy',
          actions: [{ type: 'toReplayer', params: { type: 'sink.healthy' } }, 'wakeFlushers', { type: 'report', params: 'healthy' }],
        },
      },
    },
  },
})
