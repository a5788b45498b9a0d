import { describe, expect, it } from 'vitest'
import { Ingest, IngestClosedError, OverloadedError, DurabilityError } from '../../src/ingest/ingest.js'
import { LocalSequencer } from '../../src/ingest/sequencer.js'
import { LocalBus } from '../../src/bus.js'
import type { MonitoringEvent, StoredEvent } from '../../src/types.js'

const ev = (i: number): MonitoringEvent => ({ id: `id-${i}`, event_type: 't', timestamp: new Date(0).toISOString(), source: 's', data: { i }, metadata: {} })

function deferred() {
  let resolve!: () => void
  let reject!: (e: Error) => void
  const promise = new Promise<void>((res, rej) => ((resolve = res), (reject = rej)))
  return { promise, resolve, reject }
}

const busOf = (listener: (batch: readonly StoredEvent[]) => void) => {
  const bus = new LocalBus()
  bus.subscribe(listener)
  return bus
}

describe('Ingest', () => {
  it('hands durable batches on strictly in seq order, even when appends settle out of order', async () => {
    const appends: Array<ReturnType<typeof deferred>> = []
    const out: number[] = []
    const seq = new LocalSequencer(41)
    const ingest = new Ingest({
      log: {
        append: () => {
          const d = deferred()
          appends.push(d)
          return d.promise
        },
      },
      sequencer: seq,
      bus: busOf((b: readonly StoredEvent[]) => out.push(...b.map((e) => e.seq))),
      admission: { overloaded: () => undefined },
    })
    const a = ingest.accept([ev(1), ev(2)])
    const b = ingest.accept([ev(3)])
    const c = ingest.accept([ev(4)])
    appends[2]!.resolve()
    appends[1]!.reject(new Error('disk full'))
    await expect(c).resolves.toHaveLength(1)
    await expect(b).rejects.toBeInstanceOf(DurabilityError)
    expect(out).toEqual([])
    appends[0]!.resolve()
    expect((await a).map((e) => e.seq)).toEqual([42, 43])
    expect(out).toEqual([42, 43, 45])
  })

  it('refuses with OverloadedError when a bounded queue is full, consuming no seq', async () => {
    const seq = new LocalSequencer(0)
    const ingest = new Ingest({ log: { append: async () => {} }, sequencer: seq, bus: busOf(() => {}), admission: { overloaded: (n) => (n > 2 ? 'store' : undefined) } })
    await expect(ingest.accept([ev(1), ev(2), ev(3)])).rejects.toBeInstanceOf(OverloadedError)
    expect(seq.last).toBe(0)
  })

  it('stop() waits for in-flight appends and then refuses new events', async () => {
    const d = deferred()
    const ingest = new Ingest({ log: { append: () => d.promise }, sequencer: new LocalSequencer(0), bus: busOf(() => {}), admission: { overloaded: () => undefined } })
    const inflight = ingest.accept([ev(1)])
    let stopped = false
    const stopping = ingest.stop().then(() => (stopped = true))
    await Promise.resolve()
    expect(stopped).toBe(false)
    await expect(ingest.accept([ev(2)])).rejects.toBeInstanceOf(IngestClosedError)
    d.resolve()
    await inflight
    await stopping
    expect(stopped).toBe(true)
  })
})
