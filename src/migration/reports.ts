import type { Logger } from '../observability/logger.js'
import type { ConsistencyReport, MismatchSample, PathName } from './consistency.js'

/**
 * Periodic consistency reports: one row per validated path every interval, into
 * public.consistency_reports (migration 20261122000400). A row holds the path's sliding-window
 * figures at the time of writing, and the mismatch samples that arrived since the last row written.
 */

export interface ReportRow {
  /** When the row was written (ISO 8601). */
  at: string
  window_ms: number
  path: PathName
  sent: number
  matched: number
  missing: number
  duplicated: number
  reordered: number
  mismatched: number
  late: number
  unexpected: number
  consistency_pct: number | null
  p50_ms: number | null
  p95_ms: number | null
  p99_ms: number | null
  noise_floor_pct: number | null
  /** This path's mismatch samples new since the previous row. */
  samples: MismatchSample[]
}

const COLUMNS = [
  'at',
  'window_ms',
  'path',
  'sent',
  'matched',
  'missing',
  'duplicated',
  'reordered',
  'mismatched',
  'late',
  'unexpected',
  'consistency_pct',
  'p50_ms',
  'p95_ms',
  'p99_ms',
  'noise_floor_pct',
  'samples',
] as const satisfies ReadonlyArray<keyof ReportRow>

const CASTS: Partial<Record<(typeof COLUMNS)[number], string>> = { at: 'timestamptz', samples: 'jsonb' }

/** Parameterised INSERT of one ReportRow; run it with reportParams(row). Same text on pg and PGlite. */
export const insertReportSql = `insert into public.consistency_reports (${COLUMNS.join(', ')})
values (${COLUMNS.map((c, i) => `$${i + 1}${CASTS[c] ? `::${CASTS[c]}` : ''}`).join(', ')})`

/** The parameters of insertReportSql for a row, in order (samples as JSON text: pg would send an array as a Postgres array). */
export function reportParams(row: ReportRow): unknown[] {
  return COLUMNS.map((c) => (c === 'samples' ? JSON.stringify(row.samples) : row[c]))
}

/** The rows of one report: one per validated path, window figures, samples newer than `samplesAfter`. */
export function reportRows(report: ConsistencyReport, at: Date, samplesAfter = -Infinity): ReportRow[] {
  return report.paths.flatMap((path) => {
    const s = report.window[path]
    if (!s) return []
    return [
      {
        at: at.toISOString(),
        window_ms: report.windowMs,
        path,
        sent: s.sent,
        matched: s.matched,
        missing: s.missing,
        duplicated: s.duplicated,
        reordered: s.reordered,
        mismatched: s.mismatched,
        late: s.late,
        unexpected: s.unexpected,
        consistency_pct: s.consistencyPct,
        p50_ms: s.latencyMs.p50,
        p95_ms: s.latencyMs.p95,
        p99_ms: s.latencyMs.p99,
        noise_floor_pct: report.noiseFloorPct,
        samples: report.samples.filter((m) => m.path === path && m.at > samplesAfter),
      },
    ]
  })
}

export interface ReportWriterOptions {
  /** VALIDATOR_REPORT_INTERVAL_MS, 60,000 */
  intervalMs: number
  /** The validator's snapshot (tick it first). */
  snapshot: () => ConsistencyReport
  write: (row: ReportRow) => Promise<void>
  logger: Logger
  /** Wall clock for the rows' `at`; default Date.now. */
  clock?: () => number
}

export interface ReportWriter {
  /** Stops the timer, waits for a write in flight, then writes a final report. Never rejects. */
  stop(): Promise<void>
  /** Writes a report now (after any write in flight); rejects when a row could not be written. */
  flush(): Promise<void>
}

/**
 * Writes a report every intervalMs on an unref'd timer. Writes never overlap: a tick that finds
 * one in flight is skipped. A failed write is logged and the next interval writes afresh; samples
 * not written are kept for the next row while the validator still holds them.
 */
export function startReportWriter(opts: ReportWriterOptions): ReportWriter {
  if (!(opts.intervalMs > 0)) throw new RangeError(`intervalMs must be positive, got ${opts.intervalMs}`)
  const clock = opts.clock ?? Date.now
  let samplesAfter = -Infinity
  let chain: Promise<void> = Promise.resolve()
  let inFlight = 0
  let stopping: Promise<void> | null = null

  const writeOnce = async (): Promise<void> => {
    const report = opts.snapshot()
    const rows = reportRows(report, new Date(clock()), samplesAfter)
    for (const row of rows) await opts.write(row)
    for (const s of report.samples) if (s.at > samplesAfter) samplesAfter = s.at
  }

  const enqueue = (): Promise<void> => {
    inFlight++
    const run = chain.then(writeOnce).finally(() => inFlight--)
    // Only the queue forgets the failure: the caller gets `run` itself, and logs it (logFailure).
    chain = run.catch(() => undefined)
    return run
  }

  const logFailure = (err: unknown): void => {
    opts.logger.warn({ err: err instanceof Error ? err.message : String(err) }, 'consistency report not written')
  }

  const timer = setInterval(() => {
    if (inFlight === 0) enqueue().catch(logFailure)
  }, opts.intervalMs)
  timer.unref()

  return {
    flush: enqueue,
    stop() {
      stopping ??= (async () => {
        clearInterval(timer)
        await enqueue().catch(logFailure)
      })()
      return stopping
    },
  }
}
