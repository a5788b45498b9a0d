import { describe, expect, it } from 'vitest'
import { frameOf } from '../../src/ws/hub.js'
import { RecentEvents } from '../../src/ws/recentEvents.js'
import type { StoredEvent } from '../../src/types.js'

const ev = (seq: number): StoredEvent => ({ id: `id-${seq}`, seq, event_type: 't', timestamp: 'ts', source: 's', data: {}, metadata: {} })
const range = (a: number, b: number) => Array.from({ length: b - a + 1 }, (_, i) => ev(a + i))

describe('RecentEvents', () => {
  it('never drops an event the store has not committed, however many arrive', () => {
    const r = new RecentEvents(100)
    r.append(range(1, 1000))
    expect(r.size).toBe(1000)
    r.markCommitted(500)
    expect(r.oldestSeq).toBe(501)
    r.markCommitted(1000)
    expect(r.size).toBe(100)
    expect(r.oldestSeq).toBe(901)
  })

  it('since() returns exactly the events after a seq', () => {
    const r = new RecentEvents(10)
    r.append(range(5, 20))
    expect(r.since(12).map((e) => e.seq)).toEqual(range(13, 20).map((e) => e.seq))
    expect(r.since(0)).toHaveLength(16)
    expect(r.since(20)).toEqual([])
  })
})

describe('frameOf', () => {
  it('frames one event as `event` and a burst as `events`', () => {
    expect(JSON.parse(frameOf([ev(7)]))).toEqual({ type: 'event', seq: 7, event: ev(7) })
    expect(JSON.parse(frameOf(range(1, 3)))).toEqual({ type: 'events', events: range(1, 3) })
  })
})
