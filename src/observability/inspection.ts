import type { InspectionEvent, StateValue } from 'xstate'
import type { Logger } from './logger.js'
import type { Metrics } from './metrics.js'
import { logReport } from './reports.js'

/** Leaf state paths of a state value: `running.serving`, or one per region of a parallel state. */
export function statePaths(value: StateValue): string[] {
  if (typeof value === 'string') return [value]
  return Object.entries(value).flatMap(([k, v]) => (v === undefined || (typeof v === 'object' && Object.keys(v).length === 0) ? [k] : statePaths(v as StateValue).map((p) => `${k}.${p}`)))
}

/**
 * One inspection observer for the whole actor system: a log line per state change of every
 * machine (machine, from, to, event), one per report a machine emits (connection lost, breaker
 * opened, entries replayed…), and the relay_machine_state gauge.
 */
export function machineObserver(opts: { logger: Logger; metrics: Metrics; extra?: (e: InspectionEvent) => void }) {
  const previous = new Map<string, { name: string; paths: string[] }>()
  return (event: InspectionEvent): void => {
    opts.extra?.(event)
    if (event.type === '@xstate.action' && event.action.type === 'xstate.emit') {
      const ref = event.actorRef as unknown as { id: string; systemId?: string }
      const emitted = (event.action.params as { event?: { type: string } } | undefined)?.event
      if (emitted) logReport(opts.logger, ref.systemId ?? ref.id, emitted)
      return
    }
    if (event.type !== '@xstate.snapshot') return
    const snapshot = event.snapshot as { value?: StateValue; status?: string }
    if (snapshot.value === undefined) return
    const ref = event.actorRef as unknown as { sessionId: string; id: string; systemId?: string }
    const name = ref.systemId ?? ref.id
    const paths = statePaths(snapshot.value)
    const before = previous.get(ref.sessionId)
    const from = before?.paths.join(',')
    const to = paths.join(',')
    if (from === to) return
    previous.set(ref.sessionId, { name, paths })
    for (const p of before?.paths ?? []) opts.metrics.machineState.labels(name, p).set(0)
    for (const p of paths) opts.metrics.machineState.labels(name, p).set(1)
    opts.logger.info({ machine: name, from: from ?? null, to, event: event.event.type }, 'state changed')
  }
}
