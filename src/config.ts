import { Config, ConfigProvider, Effect, Exit, Option, Redacted } from 'effect'
import { isIP } from 'node:net'
import { defaultFlusherProfiles, defaultRateThresholds } from '../machines/batchFlusher.js'
import { defaultBreakerSettings, type CircuitBreakerSettings } from '../machines/circuitBreaker.js'

/**
 * Every env flag of the relay, read once at start with effect Config. Each flag is parsed on
 * its own so that all bad values are reported together, each with its variable name.
 * README's flag table is generated from (and tested against) `FLAGS`.
 */
export interface FlagSpec {
  readonly name: string
  readonly default: string
  readonly description: string
}

export const FLAGS: readonly FlagSpec[] = [
  { name: 'PORT', default: '8787', description: 'HTTP/WebSocket port (0 picks a free one).' },
  { name: 'HOST', default: '127.0.0.1', description: 'Bind address. A non-loopback address requires INGEST_TOKEN.' },
  { name: 'DATA_DIR', default: './data', description: 'Write-ahead log, dead-letter queue and the embedded PGlite database.' },
  { name: 'DATABASE_URL', default: '(unset → embedded PGlite in DATA_DIR/pglite)', description: 'Any Postgres or Supabase connection string.' },
  { name: 'INGEST_TOKEN', default: '(unset → no auth on loopback)', description: 'Bearer token producers must send to POST /events.' },
  { name: 'ADMIN_TOKEN', default: '(unset → /admin disabled)', description: 'Bearer token for the /admin API.' },
  { name: 'LOG_LEVEL', default: 'info', description: 'pino level: fatal, error, warn, info, debug, trace, silent.' },
  { name: 'BATCH_HIGH_SIZE', default: String(defaultFlusherProfiles.high.batchSize), description: 'Store batch size in the high-rate profile.' },
  { name: 'BATCH_HIGH_INTERVAL_MS', default: String(defaultFlusherProfiles.high.flushIntervalMs), description: 'Flush interval in the high-rate profile.' },
  { name: 'BATCH_MEDIUM_SIZE', default: String(defaultFlusherProfiles.medium.batchSize), description: 'Store batch size in the medium-rate profile.' },
  { name: 'BATCH_MEDIUM_INTERVAL_MS', default: String(defaultFlusherProfiles.medium.flushIntervalMs), description: 'Flush interval in the medium-rate profile.' },
  { name: 'BATCH_LOW_SIZE', default: String(defaultFlusherProfiles.low.batchSize), description: 'Store batch size in the low-rate profile.' },
  { name: 'BATCH_LOW_INTERVAL_MS', default: String(defaultFlusherProfiles.low.flushIntervalMs), description: 'Flush interval in the low-rate profile.' },
  { name: 'BATCH_RATE_MEDIUM', default: String(defaultRateThresholds.mediumAbove), description: 'Events/s above which the flusher switches to the medium profile.' },
  { name: 'BATCH_RATE_HIGH', default: String(defaultRateThresholds.highAbove), description: 'Events/s above which the flusher switches to the high profile.' },
  { name: 'BATCH_MAX_PENDING', default: '100000', description: 'Accepted events waiting for the store before ingest answers 429.' },
  { name: 'WS_CLIENT_MAX_BUFFER_BYTES', default: '8388608', description: 'Per-dashboard send queue bound; a client past it is closed with 1013.' },
  { name: 'WS_RING_SIZE', default: '10000', description: 'Recent events kept in memory for resuming clients (plus all not yet stored).' },
  { name: 'HEALTH_INTERVAL_MS', default: '10000', description: 'Period of the relay.health events (0 turns them off).' },
  { name: 'SHUTDOWN_TIMEOUT_MS', default: '10000', description: 'Bound on draining the flushers at shutdown.' },
  { name: 'STORE_STATEMENT_TIMEOUT_MS', default: '5000', description: 'Postgres statement_timeout for the relay\'s queries; the client gives up 2 s later.' },
  { name: 'STORE_PROBE_INTERVAL_MS', default: '2000', description: 'Liveness ping of the store connection; a failed or stalled ping opens the store breaker at once.' },
  { name: 'CONNECTION_BACKOFF_BASE_MS', default: '250', description: 'Reconnect backoff base (exponential, full jitter).' },
  { name: 'CONNECTION_BACKOFF_CAP_MS', default: '30000', description: 'Reconnect backoff cap.' },
  { name: 'CONNECTION_MAX_ATTEMPTS', default: '0', description: 'Reconnect attempts before a connection is `failed` (0 = unlimited).' },
  { name: 'CONNECTION_FAILED_RETRY_MS', default: '60000', description: 'A `failed` connection tries again by itself after this long (POST /admin/retry does it at once).' },
  { name: 'BREAKER_FAILURE_RATE', default: String(defaultBreakerSettings.failureRateThreshold), description: 'Percent of failed calls in the window that opens a breaker.' },
  { name: 'BREAKER_WINDOW', default: String(defaultBreakerSettings.slidingWindowSize), description: 'Sliding window: the last N calls.' },
  { name: 'BREAKER_MIN_CALLS', default: String(defaultBreakerSettings.minimumNumberOfCalls), description: 'Calls in the window before the failure rate counts.' },
  { name: 'BREAKER_SLOW_CALL_MS', default: String(defaultBreakerSettings.slowCallDurationMs), description: 'A successful call slower than this counts as a failure.' },
  { name: 'BREAKER_OPEN_MS', default: String(defaultBreakerSettings.openDurationMs), description: 'Cool-down of an open breaker before probing.' },
  { name: 'BREAKER_HALF_OPEN_PROBES', default: String(defaultBreakerSettings.halfOpenProbes), description: 'Probe calls in half-open; all must succeed to close.' },
  { name: 'DLQ_MAX_BYTES', default: '1073741824', description: 'Dead-letter queue bound on disk; at 90 % ingest answers 429.' },
  { name: 'DLQ_POLL_INTERVAL_MS', default: '1000', description: 'How often the DLQ replayer re-checks while waiting.' },
  { name: 'MONITORING_USE_ADAPTER', default: 'false', description: 'false: WebSocket only (legacy). true: MONITORING_ADAPTER_TYPE decides.' },
  { name: 'MONITORING_ADAPTER_TYPE', default: 'auto', description: 'auto (realtime when SUPABASE_URL is set) | websocket | realtime | dual.' },
  { name: 'MONITORING_DUAL_MODE', default: 'false', description: 'true: every event goes over both paths (WebSocket and Realtime) for the validator.' },
  { name: 'SUPABASE_URL', default: '(unset)', description: 'Project URL, e.g. https://<ref>.supabase.co; required when Realtime is on.' },
  { name: 'SUPABASE_SERVICE_ROLE_KEY', default: '(unset)', description: 'Server-side key the relay broadcasts with; never sent to a browser or logged.' },
  { name: 'SUPABASE_ANON_KEY', default: '(unset)', description: 'Public key handed to dashboards by GET /config so they can subscribe.' },
  { name: 'REALTIME_CHANNEL', default: 'monitoring', description: 'Broadcast channel (topic realtime:<channel>).' },
  { name: 'REALTIME_PRIVATE', default: 'false', description: 'Use a private channel (RLS on realtime.messages; see the migrations).' },
  { name: 'REALTIME_DELIVERY', default: 'broadcast', description: 'broadcast: the relay sends batches. database: a trigger on monitoring_events broadcasts each row (Supabase only).' },
  { name: 'REALTIME_MAX_PAYLOAD_BYTES', default: '250000', description: 'Largest broadcast payload (free plan limit 256 KB; paid 3,000 KB).' },
  { name: 'REALTIME_MAX_MESSAGES_PER_SECOND', default: '100', description: 'Broadcast messages/s (free plan 100; raise to 500 on Pro, 2,500 on Team).' },
  { name: 'REALTIME_BACKLOG_EVENTS', default: '50000', description: 'Events held for Realtime while it is unhealthy, sent first (in seq order) on recovery; past it the oldest are dropped and counted.' },
  { name: 'REALTIME_FLUSH_INTERVAL_MS', default: '50', description: 'Longest wait before pending events go out on Realtime (batches fill up to the payload limit).' },
  { name: 'REALTIME_ACK_TIMEOUT_MS', default: '5000', description: 'A broadcast not acknowledged within this is a failed call for the Realtime breaker.' },
  { name: 'VALIDATOR_DEADLINE_MS', default: '5000', description: 'Dual mode: an event not seen on Realtime within this counts as missing.' },
  { name: 'VALIDATOR_REPORT_INTERVAL_MS', default: '60000', description: 'Dual mode: how often a consistency_reports row is written.' },
  { name: 'VALIDATOR_CALIBRATE', default: 'true', description: 'Dual mode: also compare the WebSocket path with itself (a shadow /ws client) to know the noise floor.' },
  { name: 'ROLLOUT_STAGES', default: '25,50,75,100', description: 'Percent of dashboards on Realtime at each stage.' },
  { name: 'ROLLOUT_SOAK_MS', default: '300000', description: 'How long a stage runs before its gates are evaluated.' },
  { name: 'ROLLOUT_MIN_CONSISTENCY', default: '99.9', description: 'Gate: consistency % (matched / sent) at least this.' },
  { name: 'ROLLOUT_MAX_ERROR_RATE', default: '0.1', description: 'Gate: Realtime error rate % below this.' },
  { name: 'ROLLOUT_MAX_P99_MS', default: '100', description: 'Gate: Realtime p99 latency (publish → arrival) below this.' },
  { name: 'ROLLOUT_MIN_SAMPLES', default: '1000', description: 'Gate: at least this many events compared in the window (missing data fails).' },
  { name: 'REDIS_URL', default: '(unset)', description: 'Redis for the flag override tier and cross-relay invalidation (pub/sub); without it, Postgres LISTEN/NOTIFY.' },
  { name: 'REDIS_PREFIX', default: 'relay:', description: 'Key prefix of the relay in Redis.' },
  { name: 'INSPECT_URL', default: '(unset)', description: 'WebSocket URL of a Stately inspector to stream every machine to.' },
]

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent'

export interface Profile {
  batchSize: number
  flushIntervalMs: number
}

export interface RelayConfig {
  port: number
  host: string
  dataDir: string
  databaseUrl: Redacted.Redacted<string> | undefined
  ingestToken: Redacted.Redacted<string> | undefined
  adminToken: Redacted.Redacted<string> | undefined
  logLevel: LogLevel
  batch: {
    profiles: { low: Profile; medium: Profile; high: Profile }
    rate: { mediumAbove: number; highAbove: number; windowMs: number }
    maxPending: number
  }
  ws: { clientMaxBufferBytes: number; ringSize: number }
  healthIntervalMs: number
  shutdownTimeoutMs: number
  store: { statementTimeoutMs: number; probeIntervalMs: number }
  connection: { backoffBaseMs: number; backoffCapMs: number; maxAttempts: number | undefined; failedRetryMs: number }
  breaker: CircuitBreakerSettings
  dlq: { maxBytes: number; pollIntervalMs: number }
  realtime: RealtimeConfig
  validator: { deadlineMs: number; reportIntervalMs: number; calibrate: boolean }
  rollout: {
    stages: number[]
    soakMs: number
    gates: { minConsistencyPct: number; maxErrorRatePct: number; maxP99LatencyMs: number; minSamples: number }
  }
  redis: { url: string | undefined; prefix: string }
  inspectUrl: string | undefined
}

export type AdapterType = 'auto' | 'websocket' | 'realtime' | 'dual'

export interface RealtimeConfig {
  /** Whether events go over Supabase Realtime at all (adapter modes resolved). */
  enabled: boolean
  /** The resolved adapter mode: websocket only, realtime (dashboards move to Realtime), or dual (both, compared). */
  mode: 'websocket' | 'realtime' | 'dual'
  useAdapter: boolean
  adapterType: AdapterType
  dualMode: boolean
  url: string | undefined
  serviceRoleKey: Redacted.Redacted<string> | undefined
  anonKey: string | undefined
  channel: string
  privateChannel: boolean
  delivery: 'broadcast' | 'database'
  maxPayloadBytes: number
  maxMessagesPerSecond: number
  ackTimeoutMs: number
  flushIntervalMs: number
  /** Bound on the events held for Realtime (REALTIME_BACKLOG_EVENTS). */
  backlogEvents: number
}

/** Whether this relay broadcasts to Supabase Realtime itself (adapter modes, delivery=broadcast). */
export const realtimeOn = (config: Pick<RelayConfig, 'realtime'>): boolean => config.realtime.enabled && config.realtime.delivery === 'broadcast'
/** Dual mode: dashboards move to Realtime by the rollout controller's percent. */
export const rolloutOn = (config: Pick<RelayConfig, 'realtime'>): boolean => realtimeOn(config) && config.realtime.mode === 'dual'

export type ConfigResult = { ok: true; config: RelayConfig } | { ok: false; errors: string[] }

/** Reads and validates every flag; never throws. */
export function loadConfig(env: Record<string, string | undefined>): ConfigResult {
  const provider = ConfigProvider.fromEnvRecord(env)
  const errors: string[] = []
  const read = <A>(name: string, config: Config.Config<A>, fallback: A, expected?: string): A => {
    const exit = Effect.runSyncExit(config.parse(provider))
    if (Exit.isSuccess(exit)) return exit.value
    errors.push(`${name}: ${expected ? `${expected}, got ${JSON.stringify(env[name])}` : describeFailure(exit, env[name])}`)
    return fallback
  }
  const optionalSecret = (name: string) =>
    read(name, Config.option(Config.Redacted(name)), Option.none()).pipe(Option.getOrUndefined)
  const int = (name: string, min: number, max: number, fallback = flagDefault(name)): number => {
    const expected = `expected an integer from ${min} to ${max}`
    const value = read(name, Config.Int(name).pipe(Config.withDefault(fallback)), fallback, expected)
    if (value < min || value > max) {
      errors.push(`${name}: ${expected}, got ${JSON.stringify(env[name])}`)
      return fallback
    }
    return value
  }

  const host = read('HOST', Config.String('HOST').pipe(Config.withDefault('127.0.0.1')), '127.0.0.1')
  const logLevel = read(
    'LOG_LEVEL',
    Config.Literals(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], 'LOG_LEVEL').pipe(Config.withDefault('info' as const)),
    'info',
  )
  const databaseUrl = optionalSecret('DATABASE_URL')
  if (databaseUrl && !/^postgres(ql)?:\/\//.test(Redacted.value(databaseUrl))) {
    errors.push('DATABASE_URL: expected a postgres:// or postgresql:// connection string')
  }
  const ingestToken = nonEmpty(optionalSecret('INGEST_TOKEN'))
  const inspectUrl = read('INSPECT_URL', Config.option(Config.String('INSPECT_URL')), Option.none()).pipe(Option.getOrUndefined)
  if (inspectUrl !== undefined && !/^wss?:\/\//.test(inspectUrl)) errors.push('INSPECT_URL: expected a ws:// or wss:// URL')

  const bool = (name: string, fallback: boolean): boolean =>
    read(name, Config.Boolean(name).pipe(Config.withDefault(fallback)), fallback, 'expected true or false')
  const useAdapter = bool('MONITORING_USE_ADAPTER', false)
  const adapterType = read(
    'MONITORING_ADAPTER_TYPE',
    Config.Literals(['auto', 'websocket', 'realtime', 'dual'], 'MONITORING_ADAPTER_TYPE').pipe(Config.withDefault('auto' as const)),
    'auto',
  )
  const dualMode = bool('MONITORING_DUAL_MODE', false)
  const supabaseUrl = read('SUPABASE_URL', Config.option(Config.String('SUPABASE_URL')), Option.none()).pipe(Option.getOrUndefined)
  if (supabaseUrl !== undefined && !/^https?:\/\/[^\s/]+/.test(supabaseUrl)) errors.push('SUPABASE_URL: expected an http(s):// project URL')
  const serviceRoleKey = nonEmpty(optionalSecret('SUPABASE_SERVICE_ROLE_KEY'))
  const realtimeEnabled =
    dualMode || (useAdapter && (adapterType === 'realtime' || adapterType === 'dual' || (adapterType === 'auto' && supabaseUrl !== undefined)))
  if (realtimeEnabled && supabaseUrl === undefined) errors.push('SUPABASE_URL: required when Realtime delivery is on (MONITORING_DUAL_MODE or MONITORING_USE_ADAPTER with realtime/dual)')
  if (realtimeEnabled && !serviceRoleKey) errors.push('SUPABASE_SERVICE_ROLE_KEY: required when Realtime delivery is on (the relay broadcasts server side)')
  const channel = read('REALTIME_CHANNEL', Config.String('REALTIME_CHANNEL').pipe(Config.withDefault('monitoring')), 'monitoring')
  if (!/^[A-Za-z0-9_.:-]{1,100}$/.test(channel)) errors.push(`REALTIME_CHANNEL: expected 1–100 characters of [A-Za-z0-9_.:-], got ${JSON.stringify(channel)}`)
  const realtime: RealtimeConfig = {
    enabled: realtimeEnabled,
    mode: !realtimeEnabled ? 'websocket' : dualMode || adapterType === 'dual' ? 'dual' : 'realtime',
    useAdapter,
    adapterType,
    dualMode,
    url: supabaseUrl?.replace(/\/+$/, ''),
    serviceRoleKey,
    anonKey: read('SUPABASE_ANON_KEY', Config.option(Config.String('SUPABASE_ANON_KEY')), Option.none()).pipe(Option.getOrUndefined) || undefined,
    channel,
    privateChannel: bool('REALTIME_PRIVATE', false),
    delivery: read('REALTIME_DELIVERY', Config.Literals(['broadcast', 'database'], 'REALTIME_DELIVERY').pipe(Config.withDefault('broadcast' as const)), 'broadcast'),
    maxPayloadBytes: int('REALTIME_MAX_PAYLOAD_BYTES', 1024, 3_000_000),
    maxMessagesPerSecond: int('REALTIME_MAX_MESSAGES_PER_SECOND', 1, 1_000_000),
    ackTimeoutMs: int('REALTIME_ACK_TIMEOUT_MS', 100, 600_000),
    flushIntervalMs: int('REALTIME_FLUSH_INTERVAL_MS', 1, 60_000),
    backlogEvents: int('REALTIME_BACKLOG_EVENTS', 1, 10_000_000),
  }

  const num = (name: string, min: number, max: number, fallback = flagDefault(name)): number => {
    const expected = `expected a number from ${min} to ${max}`
    const value = read(name, Config.Number(name).pipe(Config.withDefault(fallback)), fallback, expected)
    if (!(value >= min && value <= max)) {
      errors.push(`${name}: ${expected}, got ${JSON.stringify(env[name])}`)
      return fallback
    }
    return value
  }
  const stagesRaw = read('ROLLOUT_STAGES', Config.String('ROLLOUT_STAGES').pipe(Config.withDefault('25,50,75,100')), '25,50,75,100')
  const stages = stagesRaw.split(',').map((x) => Number(x.trim()))
  if (!stages.length || stages.some((x) => !Number.isInteger(x) || x < 1 || x > 100) || stages.some((x, i) => i > 0 && x <= stages[i - 1]!)) {
    errors.push(`ROLLOUT_STAGES: expected increasing integers from 1 to 100 separated by commas, got ${JSON.stringify(stagesRaw)}`)
  }
  const redisUrl = read('REDIS_URL', Config.option(Config.String('REDIS_URL')), Option.none()).pipe(Option.getOrUndefined) || undefined
  if (redisUrl !== undefined && !/^rediss?:\/\//.test(redisUrl)) errors.push('REDIS_URL: expected a redis:// or rediss:// URL')

  const config: RelayConfig = {
    port: int('PORT', 0, 65535),
    host,
    dataDir: read('DATA_DIR', Config.NonEmptyString('DATA_DIR').pipe(Config.withDefault('./data')), './data'),
    databaseUrl,
    ingestToken,
    adminToken: nonEmpty(optionalSecret('ADMIN_TOKEN')),
    logLevel,
    batch: {
      profiles: {
        high: { batchSize: int('BATCH_HIGH_SIZE', 1, 10_000), flushIntervalMs: int('BATCH_HIGH_INTERVAL_MS', 1, 3_600_000) },
        medium: { batchSize: int('BATCH_MEDIUM_SIZE', 1, 10_000), flushIntervalMs: int('BATCH_MEDIUM_INTERVAL_MS', 1, 3_600_000) },
        low: { batchSize: int('BATCH_LOW_SIZE', 1, 10_000), flushIntervalMs: int('BATCH_LOW_INTERVAL_MS', 1, 3_600_000) },
      },
      rate: { mediumAbove: int('BATCH_RATE_MEDIUM', 0, 10_000_000), highAbove: int('BATCH_RATE_HIGH', 0, 10_000_000), windowMs: defaultRateThresholds.windowMs },
      maxPending: int('BATCH_MAX_PENDING', 100, 100_000_000),
    },
    ws: {
      clientMaxBufferBytes: int('WS_CLIENT_MAX_BUFFER_BYTES', 65_536, 1 << 30),
      ringSize: int('WS_RING_SIZE', 100, 10_000_000),
    },
    healthIntervalMs: int('HEALTH_INTERVAL_MS', 0, 86_400_000),
    shutdownTimeoutMs: int('SHUTDOWN_TIMEOUT_MS', 100, 3_600_000),
    store: {
      statementTimeoutMs: int('STORE_STATEMENT_TIMEOUT_MS', 100, 600_000),
      probeIntervalMs: int('STORE_PROBE_INTERVAL_MS', 100, 600_000),
    },
    connection: {
      backoffBaseMs: int('CONNECTION_BACKOFF_BASE_MS', 1, 600_000),
      backoffCapMs: int('CONNECTION_BACKOFF_CAP_MS', 1, 3_600_000),
      maxAttempts: int('CONNECTION_MAX_ATTEMPTS', 0, 1_000_000) || undefined,
      failedRetryMs: int('CONNECTION_FAILED_RETRY_MS', 100, 86_400_000),
    },
    breaker: {
      failureRateThreshold: int('BREAKER_FAILURE_RATE', 1, 100),
      slidingWindowSize: int('BREAKER_WINDOW', 1, 10_000),
      minimumNumberOfCalls: int('BREAKER_MIN_CALLS', 1, 10_000),
      slowCallDurationMs: int('BREAKER_SLOW_CALL_MS', 1, 600_000),
      openDurationMs: int('BREAKER_OPEN_MS', 1, 3_600_000),
      halfOpenProbes: int('BREAKER_HALF_OPEN_PROBES', 1, 1000),
    },
    dlq: {
      maxBytes: int('DLQ_MAX_BYTES', 1_048_576, Number.MAX_SAFE_INTEGER),
      pollIntervalMs: int('DLQ_POLL_INTERVAL_MS', 10, 600_000),
    },
    realtime,
    validator: {
      deadlineMs: int('VALIDATOR_DEADLINE_MS', 10, 600_000),
      reportIntervalMs: int('VALIDATOR_REPORT_INTERVAL_MS', 100, 86_400_000),
      calibrate: bool('VALIDATOR_CALIBRATE', true),
    },
    rollout: {
      stages,
      soakMs: int('ROLLOUT_SOAK_MS', 10, 604_800_000),
      gates: {
        minConsistencyPct: num('ROLLOUT_MIN_CONSISTENCY', 0, 100),
        maxErrorRatePct: num('ROLLOUT_MAX_ERROR_RATE', 0, 100),
        maxP99LatencyMs: num('ROLLOUT_MAX_P99_MS', 1, 600_000),
        minSamples: int('ROLLOUT_MIN_SAMPLES', 0, 1_000_000_000),
      },
    },
    redis: { url: redisUrl, prefix: read('REDIS_PREFIX', Config.String('REDIS_PREFIX').pipe(Config.withDefault('relay:')), 'relay:') },
    inspectUrl,
  }
  if (config.batch.rate.highAbove < config.batch.rate.mediumAbove) {
    errors.push('BATCH_RATE_HIGH: expected a rate at least BATCH_RATE_MEDIUM')
  }
  if (!isLoopback(host) && !ingestToken) {
    errors.push(`INGEST_TOKEN: required when HOST (${host}) is not a loopback address, so producers on the network must authenticate`)
  }
  return errors.length ? { ok: false, errors } : { ok: true, config }
}

/** A numeric flag's default, as FLAGS (and so README) states it: one source for both. */
function flagDefault(name: string): number {
  const value = Number(FLAGS.find((f) => f.name === name)?.default)
  if (!Number.isFinite(value)) throw new Error(`flag ${name} has no numeric default`)
  return value
}

export function isLoopback(host: string): boolean {
  if (host === 'localhost' || host === '::1' || host === '[::1]') return true
  return isIP(host) === 4 && host.startsWith('127.')
}

function nonEmpty(secret: Redacted.Redacted<string> | undefined): Redacted.Redacted<string> | undefined {
  return secret && Redacted.value(secret).length > 0 ? secret : undefined
}

function describeFailure(exit: Exit.Exit<unknown, unknown>, raw: string | undefined): string {
  const text = Exit.isFailure(exit) ? String(extractMessage(exit.cause)) : 'invalid'
  const message = text.split('\n')[0]!.replace(/^Expected /, 'expected ')
  return raw === undefined ? message : `${message}, got ${JSON.stringify(raw)}`
}

function extractMessage(cause: unknown): string {
  const reasons = (cause as { reasons?: Array<{ error?: { cause?: { message?: string }; message?: string } }> }).reasons ?? []
  for (const r of reasons) {
    const m = r.error?.cause?.message ?? r.error?.message
    if (m) return m
  }
  return 'invalid value'
}
