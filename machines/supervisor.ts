import { assign, enqueueActions, fromCallback, fromPromise, setup, type SnapshotFrom } from 'xstate'
import { batchFlusherMachine, type BatchFlusherInput, type BatchFlusherOutput } from './batchFlusher.js'
import { dependencyMachine, type DependencyInput, type DependencyName } from './dependency.js'
import { rolloutControllerMachine, type RolloutEvent, type RolloutInput } from './rolloutController.js'

/** A flusher the supervisor spawns once the relay runs; `id` is both its child id and systemId. */
export interface FlusherSpec { id: string; input: BatchFlusherInput }

/** Another machine the supervisor spawns beside the flushers; `id` is both its child id and systemId. */
export type ChildSpec = { id: string; src: 'dependency'; input: DependencyInput } | { id: string; src: 'rolloutController'; input: RolloutInput }

export interface SupervisorInput {
  shutdownTimeoutMs: number
  /** Bound on `flushingDlq`; 5 s when absent. */
  dlqFlushTimeoutMs?: number
  flushers: FlusherSpec[]
  children?: ChildSpec[]
  /** Whether this configuration (its adapter mode) delivers over Supabase Realtime; false when absent. */
  realtime?: boolean
  /** The clock for the times the rollout controller records (Date.now when absent). */
  now?: () => number
}

/** An outbound dependency whose health `running` shows; each has a region of its own. */
export type Dependency = DependencyName

/** Commands src/ sends (`actor.send(...)`). A second `shutdown` while shutting down is ignored. */
export type SupervisorCommand = { type: 'shutdown'; reason?: string }

/** Health reports from the dependency machines (their breaker and connection decide). */
export type DependencyEvent =
  | { type: 'dependency.degraded'; dependency: Dependency; reason: string }
  | { type: 'dependency.healthy'; dependency: Dependency }

/** What a flusher child reports when it has drained and completed. */
export type FlusherDoneEvent = { type: `xstate.done.actor.${string}`; actorId: string; output: BatchFlusherOutput }

/** What xstate delivers when a child (spawned or invoked) fails. */
export type ChildErrorEvent = { type: `xstate.error.actor.${string}`; actorId: string; error: unknown }

export type SupervisorEvent = SupervisorCommand | DependencyEvent | FlusherDoneEvent | ChildErrorEvent

/** The states of `running.realtime`; `disabled` when the relay does not deliver over Realtime. */
export type RealtimeHealth = 'disabled' | 'healthy' | 'failedOver'

export type SupervisorOutput = { exitCode: 0 } | { exitCode: 1; error: string }

export interface SupervisorContext {
  shutdownTimeoutMs: number
  dlqFlushTimeoutMs: number
  flushers: FlusherSpec[]
  children: ChildSpec[]
  /** Whether the relay delivers over Realtime (input `realtime`). */
  realtime: boolean
  now: () => number
  /** Why each degraded dependency is degraded; absent when healthy. */
  degraded: Partial<Record<Dependency, string>>
  /** Ids of flushers that have drained and completed. */
  drained: string[]
  /** Ids of children that failed; never waited for, never sent to. */
  crashed: string[]
  /** A bounded shutdown step timed out (acknowledged events stay in the WAL). */
  shutdownIncomplete: boolean
  /** Failures during shutdown: it goes on, but they stay visible. */
  shutdownErrors: string[]
  /** Why telling dashboards to leave Realtime failed, for the current (or last) failover. */
  failoverAnnounceError: string | null
  /** Why telling dashboards to come back to Realtime failed, for the current (or last) recovery. */
  recoveryAnnounceError: string | null
  /** Why the relay failed to start or had to stop (exit code 1). */
  error: string | null
}

const messageOf = (error: unknown): string => (error instanceof Error ? error.message : String(error))

// Every dependency region reacts only to the events about its own dependency.
const aboutStore = { type: 'isAbout', params: { dependency: 'store' } } as const
const aboutRealtime = { type: 'isAbout', params: { dependency: 'realtime' } } as const

export const supervisorMachine = setup({
  types: {
    input: {} as SupervisorInput,
    context: {} as SupervisorContext,
    events: {} as SupervisorEvent,
    output: {} as SupervisorOutput,
  },
  actors: {
    /** Opens the store, runs migrations, replays the WAL, starts the servers. */
    startRelay: fromPromise<void>(async () => {
      throw new Error('startRelay not provided')
    }),
    /** Stops accepting events (503) and waits for in-flight requests. */
    stopIngest: fromPromise<void>(async () => {
      throw new Error('stopIngest not provided')
    }),
    /** Moves whatever is still in memory that the flushers could not write into the DLQ, and fsyncs it. */
    deadLetterLeftovers: fromPromise<void>(async () => {
      throw new Error('deadLetterLeftovers not provided')
    }),
    /** Closes every service the relay opened (dashboards, the server, Realtime, flags, the store, the DLQ, the WAL), newest first. */
    closeServices: fromPromise<void>(async () => {
      throw new Error('closeServices not provided')
    }),
    /** Tells dashboards on Realtime (a control broadcast, while the channel may still work) to use /ws with ?since=. */
    announceFailover: fromPromise<void, { reason: string }>(async () => {
      throw new Error('announceFailover not provided')
    }),
    /** Tells dashboards assigned to Realtime that it works again. */
    announceRecovery: fromPromise<void, {}>(async () => {
      throw new Error('announceRecovery not provided')
    }),
    /** Publishes relay.health while running; returns its cleanup. */
    healthReporter: fromCallback(() => {}),
    batchFlusher: batchFlusherMachine,
    dependency: dependencyMachine,
    rolloutController: rolloutControllerMachine,
  },
  actions: {
    spawnChildren: enqueueActions(({ context, enqueue }) => {
      for (const child of context.children) {
        // One branch per src, so each spawnChild checks its input against that machine's.
        const options = { id: child.id, systemId: child.id }
        if (child.src === 'dependency') enqueue.spawnChild('dependency', { ...options, input: child.input })
        else enqueue.spawnChild('rolloutController', { ...options, input: child.input })
      }
      for (const { id, input } of context.flushers) enqueue.spawnChild('batchFlusher', { id, systemId: id, input })
    }),
    /** Provided by src/: hands the children what start-up found (events waiting for a sink, DLQ depth). */
    reportBacklog: enqueueActions(() => {}),
    // The Realtime path failed: a rollout in progress rolls back at once.
    tellRollout: enqueueActions(({ context, enqueue, system }) => {
      for (const { id, src } of context.children) {
        const rollout = src === 'rolloutController' && !context.crashed.includes(id) ? system.get(id) : undefined
        const opened: RolloutEvent = { type: 'breaker.opened', at: context.now() }
        if (rollout) enqueue.sendTo(rollout, opened)
      }
    }),
    drainFlushers: enqueueActions(({ context, enqueue, system }) => {
      for (const { id } of context.flushers) {
        const flusher = context.crashed.includes(id) ? undefined : system.get(id)
        if (flusher) enqueue.sendTo(flusher, { type: 'drain' })
      }
    }),
    stopDependencies: enqueueActions(({ context, enqueue, system }) => {
      for (const { id, src } of context.children) {
        const dependency = src === 'dependency' && !context.crashed.includes(id) ? system.get(id) : undefined
        if (dependency) enqueue.sendTo(dependency, { type: 'stop' })
      }
    }),
    markFlusherDrained: assign(({ context }, { id }: { id: string }) => ({
      drained: context.flushers.some((f) => f.id === id) && !context.drained.includes(id) ? [...context.drained, id] : context.drained,
    })),
    markDegraded: assign(({ context }, { dependency, reason }: { dependency: Dependency; reason: string }) => ({
      degraded: { ...context.degraded, [dependency]: reason },
    })),
    markHealthy: assign(({ context }, { dependency }: { dependency: Dependency }) => {
      const { [dependency]: _, ...degraded } = context.degraded
      return { degraded }
    }),
    recordStartFailure: assign((_, { error }: { error: unknown }) => ({ error: messageOf(error) })),
    recordCrash: assign(({ context }, { id, error }: { id: string; error: unknown }) => ({
      error: `${id}: ${messageOf(error)}`,
      crashed: [...context.crashed, id],
    })),
    recordShutdownCrash: assign(({ context }, { id, error }: { id: string; error: unknown }) => ({
      shutdownErrors: [...context.shutdownErrors, `${id}: ${messageOf(error)}`],
      crashed: [...context.crashed, id],
    })),
    recordShutdownError: assign(({ context }, { error }: { error: unknown }) => ({ shutdownErrors: [...context.shutdownErrors, messageOf(error)] })),
    markShutdownIncomplete: assign({ shutdownIncomplete: true }),
    resetFailoverAnnounceError: assign({ failoverAnnounceError: null }),
    recordFailoverAnnounceError: assign((_, { error }: { error: unknown }) => ({ failoverAnnounceError: messageOf(error) })),
    resetRecoveryAnnounceError: assign({ recoveryAnnounceError: null }),
    recordRecoveryAnnounceError: assign((_, { error }: { error: unknown }) => ({ recoveryAnnounceError: messageOf(error) })),
  },
  guards: {
    // A crashed flusher will never complete: its events are left to deadLetterLeftovers and the WAL.
    allFlushersSettled: ({ context }) => context.flushers.every((f) => context.drained.includes(f.id) || context.crashed.includes(f.id)),
    isRealtimeEnabled: ({ context }) => context.realtime,
    isAbout: ({ event }, { dependency }: { dependency: Dependency }) => 'dependency' in event && event.dependency === dependency,
  },
  delays: {
    shutdownTimeout: ({ context }) => context.shutdownTimeoutMs,
    dlqFlushTimeout: ({ context }) => context.dlqFlushTimeoutMs,
  },
}).createMachine({
  id: 'supervisor',
  context: ({ input }) => ({
    shutdownTimeoutMs: input.shutdownTimeoutMs,
    dlqFlushTimeoutMs: input.dlqFlushTimeoutMs ?? 5_000,
    flushers: input.flushers,
    children: input.children ?? [],
    realtime: input.realtime ?? false,
    now: input.now ?? Date.now,
    degraded: {},
    drained: [],
    crashed: [],
    shutdownIncomplete: false,
    shutdownErrors: [],
    failoverAnnounceError: null,
    recoveryAnnounceError: null,
    error: null,
  }),
  output: ({ context }) => (context.error === null ? { exitCode: 0 } : { exitCode: 1, error: context.error }),
  initial: 'starting',
  // A child failing before shutdown is fatal, but ordered: drain, flush the DLQ, close, exit 1.
  on: {
    'xstate.error.actor.*': { target: '.shuttingDown', actions: { type: 'recordCrash', params: ({ event }) => ({ id: event.actorId, error: event.error }) } },
  },
  states: {
    starting: {
      invoke: {
        id: 'startRelay',
        src: 'startRelay',
        onDone: { target: 'running', actions: 'spawnChildren' },
        onError: { target: 'failed', actions: { type: 'recordStartFailure', params: ({ event }) => ({ error: event.error }) } },
      },
      // Nothing was accepted yet: only the transports need closing.
      on: { shutdown: 'shuttingDown.closingTransports' },
    },
    running: {
      type: 'parallel',
      entry: 'reportBacklog',
      invoke: { id: 'healthReporter', src: 'healthReporter' },
      states: {
        store: {
          initial: 'healthy',
          states: {
            healthy: {
              on: { 'dependency.degraded': { guard: aboutStore, target: 'degraded', actions: { type: 'markDegraded', params: ({ event }) => event } } },
            },
            degraded: {
              on: {
                // A new reason (e.g. breaker open, then connection lost) replaces the old one.
                'dependency.degraded': { guard: aboutStore, actions: { type: 'markDegraded', params: ({ event }) => event } },
                'dependency.healthy': { guard: aboutStore, target: 'healthy', actions: { type: 'markHealthy', params: ({ event }) => event } },
              },
            },
          },
        },
        realtime: {
          initial: 'checking',
          states: {
            // Decided once, from the input: `initial` cannot read context.
            checking: {
              always: [{ guard: 'isRealtimeEnabled', target: 'healthy' }, { target: 'disabled' }],
            },
            // Not in this adapter mode: Realtime's health reports are ignored.
            disabled: {},
            healthy: {
              initial: 'steady',
              states: {
                steady: {},
                // Announcing is best effort: dashboards that miss it keep using /ws until their next /config.
                recovering: {
                  entry: 'resetRecoveryAnnounceError',
                  invoke: {
                    id: 'announceRecovery',
                    src: 'announceRecovery',
                    input: {},
                    onDone: 'steady',
                    onError: { target: 'steady', actions: { type: 'recordRecoveryAnnounceError', params: ({ event }) => ({ error: event.error }) } },
                  },
                },
              },
              on: { 'dependency.degraded': { guard: aboutRealtime, target: 'failedOver', actions: { type: 'markDegraded', params: ({ event }) => event } } },
            },
            // Events keep flowing over /ws; dashboards that miss the announcement fall back on their own timeout.
            failedOver: {
              entry: ['resetFailoverAnnounceError', 'tellRollout'],
              invoke: {
                id: 'announceFailover',
                src: 'announceFailover',
                input: ({ context }) => ({ reason: context.degraded.realtime ?? 'unknown' }),
                onError: { actions: { type: 'recordFailoverAnnounceError', params: ({ event }) => ({ error: event.error }) } },
              },
              on: {
                // A new reason replaces the old one; dashboards were already told.
                'dependency.degraded': { guard: aboutRealtime, actions: { type: 'markDegraded', params: ({ event }) => event } },
                'dependency.healthy': { guard: aboutRealtime, target: 'healthy.recovering', actions: { type: 'markHealthy', params: ({ event }) => event } },
              },
            },
          },
        },
      },
      on: { shutdown: 'shuttingDown' },
    },
    shuttingDown: {
      initial: 'stoppingIngest',
      on: {
        shutdown: {},
        'xstate.error.actor.*': { actions: { type: 'recordShutdownCrash', params: ({ event }) => ({ id: event.actorId, error: event.error }) } },
      },
      states: {
        stoppingIngest: {
          invoke: {
            id: 'stopIngest',
            src: 'stopIngest',
            onDone: 'drainingFlushers',
            onError: { target: 'drainingFlushers', actions: { type: 'recordShutdownError', params: ({ event }) => ({ error: event.error }) } },
          },
        },
        drainingFlushers: {
          entry: 'drainFlushers',
          always: { guard: 'allFlushersSettled', target: 'flushingDlq' },
          on: { 'xstate.done.actor.*': { actions: { type: 'markFlusherDrained', params: ({ event }) => ({ id: event.actorId }) } } },
          // Acknowledged events are safe in the write-ahead log; the next start replays them.
          after: { shutdownTimeout: { target: 'flushingDlq', actions: 'markShutdownIncomplete' } },
        },
        flushingDlq: {
          invoke: {
            id: 'deadLetterLeftovers',
            src: 'deadLetterLeftovers',
            onDone: 'closingTransports',
            onError: { target: 'closingTransports', actions: { type: 'recordShutdownError', params: ({ event }) => ({ error: event.error }) } },
          },
          after: { dlqFlushTimeout: { target: 'closingTransports', actions: 'markShutdownIncomplete' } },
        },
        closingTransports: {
          entry: 'stopDependencies',
          invoke: {
            id: 'closeServices',
            src: 'closeServices',
            onDone: '#supervisor.stopped',
            onError: { target: '#supervisor.stopped', actions: { type: 'recordShutdownError', params: ({ event }) => ({ error: event.error }) } },
          },
        },
      },
    },
    stopped: { type: 'final' },
    failed: { type: 'final' },
  },
})

export type SupervisorSnapshot = SnapshotFrom<typeof supervisorMachine>

const realtimeHealths: readonly RealtimeHealth[] = ['disabled', 'healthy', 'failedOver']

/** The state of `running.realtime`; undefined when the supervisor is not running. */
export const realtimeHealthOf = (snapshot: SupervisorSnapshot): RealtimeHealth | undefined =>
  realtimeHealths.find((health) => snapshot.matches({ running: { realtime: health } }))
