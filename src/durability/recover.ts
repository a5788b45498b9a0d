import type { Outbox } from '../delivery/outbox.js'
import type { Logger } from '../observability/logger.js'
import { isRejected, type Store } from '../store/store.js'
import type { Wal } from './wal.js'

/** Replay the WAL into the store in chunks of this many events. */
const REPLAY_CHUNK = 1000

/**
 * Migrations and WAL replay at start; resolves with the last seq the relay has. When the store is
 * unreachable the relay still starts: the WAL's events wait in the store outbox (and so the DLQ),
 * and ingest and fan-out work. A migration the database refuses is fatal.
 */
export async function recover(store: Store, wal: Wal, outbox: Outbox, logger: Logger): Promise<number> {
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
    return Math.max(wal.maxSeq, 0)
  }
  let replayed = 0
  for await (const chunk of wal.replay(0, REPLAY_CHUNK)) {
    await store.insertEvents(chunk)
    replayed += chunk.length
  }
  if (replayed) logger.info({ replayed, upToSeq: wal.maxSeq }, 'write-ahead log replayed into the store')
  await wal.release(wal.maxSeq)
  return Math.max(storeMax, wal.maxSeq)
}
