import { Writable } from 'node:stream'
import { describe, expect, it } from 'vitest'
import { Lifecycle } from '../../src/lifecycle.js'
import { createLogger } from '../../src/observability/logger.js'

function quietLogger() {
  const lines: Array<Record<string, unknown>> = []
  const sink = new Writable({
    write(chunk, _enc, cb) {
      for (const line of String(chunk).split('\n')) if (line.trim()) lines.push(JSON.parse(line))
      cb()
    },
  })
  return { logger: createLogger('info', sink), lines }
}

describe('Lifecycle', () => {
  it('closes services newest first', async () => {
    const closed: string[] = []
    const life = new Lifecycle(quietLogger().logger)
    for (const name of ['wal', 'dlq', 'store', 'server']) life.use(name, name, async (n) => void closed.push(n))
    expect(await life.closeAll()).toEqual([])
    expect(closed).toEqual(['server', 'store', 'dlq', 'wal'])
  })

  it('a service that fails to close (throwing or rejecting) skips none of the others, and is reported', async () => {
    const closed: string[] = []
    const { logger, lines } = quietLogger()
    const life = new Lifecycle(logger)
    life.use('a', 'a', () => void closed.push('a'))
    life.use('b', 'b', () => {
      throw new Error('b broke')
    })
    life.use('c', 'c', async () => {
      throw new Error('c broke')
    })
    life.use('d', 'd', () => void closed.push('d'))
    expect(await life.closeAll()).toEqual(['c', 'b'])
    expect(closed).toEqual(['d', 'a'])
    await new Promise((resolve) => setImmediate(resolve))
    expect(lines.filter((l) => l.msg === 'service failed to close').map((l) => [l.service, l.err])).toEqual([
      ['c', 'c broke'],
      ['b', 'b broke'],
    ])
  })

  it('closing twice closes nothing twice', async () => {
    let n = 0
    const life = new Lifecycle(quietLogger().logger)
    life.use('x', 1, () => void n++)
    await life.closeAll()
    await life.closeAll()
    expect(n).toBe(1)
  })
})
