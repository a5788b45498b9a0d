import type { AnyStateMachine, AnyStateNode, InspectionEvent, StateValue } from 'xstate'

/**
 * Records which states and transitions of a machine definition real actors took, and fails
 * when one was never reached. Pass `coverage.inspect` as the `inspect` option of every actor
 * (or actor system) a test runs; call `coverage.assertComplete()` once all paths have run.
 *
 * Transitions are keyed by source state id, event type and their index among that event's
 * transitions, so a machine after `.provide()` (new objects, same definition) still matches.
 */
export class MachineCoverage {
  readonly states = new Set<string>()
  readonly transitions = new Map<string, string>()
  readonly seenStates = new Set<string>()
  readonly seenTransitions = new Set<string>()

  constructor(readonly machine: AnyStateMachine, readonly options: { ignoreTransitions?: string[] } = {}) {
    walk(machine.root, (node) => {
      this.states.add(node.id)
      for (const [eventType, list] of node.transitions) {
        list.forEach((t, i) => this.transitions.set(key(node.id, eventType, i), describe(t)))
      }
      ;(node.always ?? []).forEach((t, i) => this.transitions.set(key(node.id, '(always)', i), describe(t)))
    })
    for (const ignored of options.ignoreTransitions ?? []) this.transitions.delete(ignored)
  }

  /** Inspection observer: pass as `createActor(machine, { inspect: coverage.inspect })`. */
  readonly inspect = (event: InspectionEvent): void => {
    if (event.type === '@xstate.snapshot' || event.type === '@xstate.microstep') {
      const snapshot = event.snapshot as { machine?: AnyStateMachine; value?: StateValue }
      if (snapshot.machine?.id === this.machine.id && snapshot.value !== undefined) this.recordValue(snapshot.value)
    }
    if (event.type === '@xstate.microstep') {
      for (const t of event._transitions) {
        const source = t.source as AnyStateNode
        if (source.machine.id !== this.machine.id) continue
        const eventType = t.eventType
        const list = eventType === '' ? source.always ?? [] : source.transitions.get(eventType) ?? source.always ?? []
        let index = list.indexOf(t)
        let k = key(source.id, eventType === '' ? '(always)' : eventType, index)
        if (index < 0 && source.always) {
          index = source.always.indexOf(t)
          k = key(source.id, '(always)', index)
        }
        this.seenTransitions.add(k)
      }
    }
  }

  /** Marks every state node active in `value` as reached. */
  recordValue(value: StateValue): void {
    const visit = (node: AnyStateNode, v: StateValue | undefined): void => {
      this.seenStates.add(node.id)
      if (v === undefined) return
      if (typeof v === 'string') {
        const child = node.states[v]
        if (child) visit(child, undefined)
        return
      }
      for (const [k, sub] of Object.entries(v)) {
        const child = node.states[k]
        if (child) visit(child, sub as StateValue)
      }
    }
    visit(this.machine.root, value)
  }

  missingStates(): string[] {
    return [...this.states].filter((s) => !this.seenStates.has(s))
  }

  missingTransitions(): string[] {
    return [...this.transitions.keys()].filter((t) => !this.seenTransitions.has(t)).map((k) => `${k}  (${this.transitions.get(k)})`)
  }

  /** Throws, listing what was never reached, unless every state and transition was taken. */
  assertComplete(): void {
    const states = this.missingStates()
    const transitions = this.missingTransitions()
    if (states.length || transitions.length) {
      throw new Error(
        `machine '${this.machine.id}' not fully covered:\n` +
          (states.length ? `  states never reached:\n    ${states.join('\n    ')}\n` : '') +
          (transitions.length ? `  transitions never taken:\n    ${transitions.join('\n    ')}\n` : ''),
      )
    }
  }
}

function walk(node: AnyStateNode, fn: (node: AnyStateNode) => void): void {
  fn(node)
  for (const child of Object.values(node.states)) walk(child as AnyStateNode, fn)
}

function key(sourceId: string, eventType: string, index: number): string {
  return `${sourceId} on ${eventType} #${index}`
}

function describe(t: { target?: readonly AnyStateNode[] | undefined; guard?: unknown }): string {
  const targets = t.target?.map((n) => n.id).join(',') ?? '(self)'
  const guard = t.guard ? ` [${typeof t.guard === 'string' ? t.guard : (t.guard as { type?: string }).type ?? 'guard'}]` : ''
  return `→ ${targets}${guard}`
}
