import { describe, expect, it } from 'vitest'
import { createActor, setup } from 'xstate'
import { MachineCoverage } from './coverage.js'

const toggle = setup({ types: { events: {} as { type: 'flip' } | { type: 'reset' } }, delays: { soon: 10 } }).createMachine({
  id: 'toggle',
  initial: 'off',
  states: {
    off: { on: { flip: 'on' } },
    on: { on: { flip: 'off', reset: 'off' }, after: { soon: 'done' } },
    done: { type: 'final' },
  },
})

describe('MachineCoverage', () => {
  it('fails listing the states and transitions never taken', () => {
    const cov = new MachineCoverage(toggle)
    const actor = createActor(toggle, { inspect: cov.inspect }).start()
    actor.send({ type: 'flip' })
    actor.stop()
    expect(() => cov.assertComplete()).toThrow(/toggle.done[\s\S]*on reset/)
    expect(cov.missingStates()).toEqual(['toggle.done'])
  })

  it('passes once every state and transition (delayed included) is taken, even on a provided machine', async () => {
    const cov = new MachineCoverage(toggle)
    const provided = toggle.provide({ delays: { soon: 1 } })
    const a = createActor(provided, { inspect: cov.inspect }).start()
    a.send({ type: 'flip' })
    a.send({ type: 'flip' })
    a.send({ type: 'flip' })
    a.send({ type: 'reset' })
    a.send({ type: 'flip' })
    await new Promise<void>((resolve) => a.subscribe({ complete: resolve }))
    expect(cov.missingTransitions()).toEqual([])
    cov.assertComplete()
  })
})
