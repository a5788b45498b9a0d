import type { StoredEvent } from '../types.js'

/** The payload of each broadcast message. */
export interface BroadcastBatch {
  first_seq: number
  last_seq: number
  events: StoredEvent[]
}

/** A prefix of a batch sized for one broadcast; see {@link fitPayload}. */
export interface FittedPayload {
  events: StoredEvent[]
  payloadBytes: number
  tooLarge: boolean
}

export function buildPayload(events: readonly StoredEvent[]): BroadcastBatch {
  const first = events[0]
  const last = events[events.length - 1]
  if (!first || !last) throw new RangeError('a broadcast batch needs at least one event')
  return { first_seq: first.seq, last_seq: last.seq, events: [...events] }
}

/** Bytes of JSON.stringify(buildPayload(events)) without `events`' items: {"first_seq":F,"last_seq":L,"events":[]} */
function envelopeBytes(firstSeq: number, lastSeq: number): number {
  return Buffer.byteLength(`{"first_seq":${JSON.stringify(firstSeq)},"last_seq":${JSON.stringify(lastSeq)},"events":[]}`)
}

/**
 * The longest prefix of `events` whose BroadcastBatch serialises to at most maxPayloadBytes
 * (UTF-8), with its exact size. At least one event: a first event over the limit alone comes
 * back as { events: [first], tooLarge: true }. Each event is serialised once.
 */
export function fitPayload(events: readonly StoredEvent[], maxPayloadBytes: number): FittedPayload {
  const first = events[0]
  if (!first) return { events: [], payloadBytes: 0, tooLarge: false }
  let itemBytes = 0
  let fitted = 0
  let fittedBytes = 0
  for (const [i, event] of events.entries()) {
    itemBytes += Buffer.byteLength(JSON.stringify(event)) + (i > 0 ? 1 : 0)
    const total = envelopeBytes(first.seq, event.seq) + itemBytes
    if (total > maxPayloadBytes) {
      if (i === 0) return { events: [first], payloadBytes: total, tooLarge: true }
      break
    }
    fitted = i + 1
    fittedBytes = total
  }
  return { events: events.slice(0, fitted), payloadBytes: fittedBytes, tooLarge: false }
}
