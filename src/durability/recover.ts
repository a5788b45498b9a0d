import type { Outbox } from '../delivery/outbox.js'
import type { Logger } from '../observability/logger.js'
import { isRejected, type Store } from '../store/store.js'
import type { Wal } from './wal.js'

/** Replay the WAL into the store in chunks of this many events. */
const REPLAY_CHUNK = 1000

/**
 * Migrations and WAL replay at start; resolves with the last seq the relay has. When the store is
 * unreachable the relay still starts: the WAL's events wait in the store outbox (and so the DLQ),
 * and ingest and fan-out work; the migrations run when the store's connection is first
 * established (see storeLink). A migration the database refuses is fatal.
 */
export interface Recovered {
  /** The last seq the relay has. */
  lastSeq: number
  /** Whether the migrations ran; when not (the store was down), they run when the store is back. */
  migrated: boolean
}

export async function recover(store: Store, wal: Wal, outbox: Outbox, logger: Logger): Promise<Recovered> {
  let storeMax = 0
  try {
    const applied = await store.migrate()
    storeMax = await store.maxSeq()
    logger.info({ store: store.kind, applied }, 'store ready')
  } catch (err) {
    if (isRejected(err)) throw err
    logger.error({ store: store.kind, err: err instanceof Error ? err.message : String(err) }, 'store unavailable at start; events will wait in the write-ahead log and the dead-letter queue')
    let queued = 0
    for await (const chunk of wal.replay(0, REPLAY_CHUNK)) {
      outbox.queue.push(chunk)
      queued += chunk.length
    }
    if (queued) logger.info({ queued }, 'write-ahead log queued for the store')
    return { lastSeq: Math.max(wal.maxSeq, 0), migrated: false }
  }
  let replayed = 0
  for await (const chunk of wal.replay(0, REPLAY_CHUNK)) {
    await store.insertEvents(chunk)
    replayed += chunk.length
  }
  if (replayed) logger.info({ replayed, upToSeq: wal.maxSeq }, 'write-ahead log replayed into the store')
  await wal.release(wal.maxSeq)
  return { lastSeq: Math.max(storeMax, wal.maxSeq), migrated: true }
}
