import { createMachine, fromCallback, spawnChild, type AnyActorLogic, type AnyActorRef, type AnyEventObject, type InspectionEvent } from 'xstate'

// What test/helpers/machines.ts does not have, for machines that coordinate by systemId: who an
// actor sent what to (itself included), and recorders standing in for other actors of a system.

/** The systemId an actor was registered under (the Actor has it; the ActorRef type does not say so). */
export const systemIdOf = (actor: unknown): string | undefined => (actor as { systemId?: string } | undefined)?.systemId

/** How a test names an actor: its systemId, else its id. */
export const nameOf = (actor: unknown): string => systemIdOf(actor) ?? (actor as AnyActorRef | undefined)?.id ?? '(outside)'

// ---------------------------------------------------------------------------------------------
// What an actor sent, seen from the system's inspection stream.

export interface Sent { to: string; event: AnyEventObject }

/** Whether an inspected event is one the actor registered as `systemId` sent (see {@link SendLog}). */
export function isSend(event: InspectionEvent & { type: '@xstate.event' }, systemId: string): boolean {
  if (systemIdOf(event.sourceRef) !== systemId || event.event.type === 'xstate.init') return false
  return !(event.sourceRef === event.actorRef && event.event.type.startsWith('xstate.after.'))
}

/**
 * Records every event the actor registered as `systemId` sends (sendTo, done and error events to
 * its parent), by the recipient's systemId (else id); an event it sends itself counts too (xstate
 * turns `sendTo(undefined)` into one). Spawning (`xstate.init`) and its own delayed events
 * (`after`) are not sends. Pass `inspect` to createActor; `take()` returns and forgets what was
 * sent since the last call.
 */
export class SendLog {
  private sent: Sent[] = []
  constructor(readonly systemId: string) {}

  readonly inspect = (event: InspectionEvent): void => {
    if (event.type === '@xstate.event' && isSend(event, this.systemId)) this.sent.push({ to: nameOf(event.actorRef), event: event.event })
  }

  take(): Sent[] {
    const sent = this.sent
    this.sent = []
    return sent
  }
}

/** Several inspection observers as one. */
export const inspectAll =
  (...observers: Array<(event: InspectionEvent) => void>) =>
  (event: InspectionEvent): void => {
    for (const observe of observers) observe(event)
  }

// ---------------------------------------------------------------------------------------------
// A host: the root of a test system, holding the machine under test beside recorders.

export interface Received { by: string; event: AnyEventObject }

/** A callback actor that records every event it receives, as `by` (its systemId). */
export const recorder = (by: string, log: Received[]) =>
  fromCallback<AnyEventObject>(({ receive }) => {
    receive((event) => void log.push({ by, event }))
  })

/**
 * A root machine that spawns `children` in order (recorders first, so the machine under test finds
 * them), each under its id as systemId, and records as `host` every event a child sends it (done,
 * error).
 */
export function hostMachine(children: Array<{ id: string; logic: AnyActorLogic; input?: unknown }>, log: Received[]) {
  return createMachine({
    id: 'host',
    entry: children.map(({ id, logic, input }) => spawnChild(logic, { id, systemId: id, input })),
    on: { '*': { actions: ({ event }) => void log.push({ by: 'host', event }) } },
  })
}
