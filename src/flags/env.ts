import type { FlagDefinition, FlagValue } from './definition.js'

/**
 * The seeds' env flags as flags of the service, with the defaults README documents. Their env
 * values (parsed and checked at start by src/config.ts) become the env tier.
 */
export const SEED_FLAGS: readonly FlagDefinition[] = [
  {
    key: 'MONITORING_USE_ADAPTER',
    description: 'false: WebSocket only (legacy). true: MONITORING_ADAPTER_TYPE decides.',
    type: 'boolean',
    defaultValue: false,
    enabled: true,
    rules: [],
  },
  {
    key: 'MONITORING_DUAL_MODE',
    description: 'true: every event goes over both paths (WebSocket and Realtime) for the validator.',
    type: 'boolean',
    defaultValue: false,
    enabled: true,
    rules: [],
  },
  {
    key: 'MONITORING_ADAPTER_TYPE',
    description: 'auto (realtime when SUPABASE_URL is set) | websocket | realtime | dual.',
    type: 'string',
    defaultValue: 'auto',
    enabled: true,
    rules: [],
  },
]

// The spellings effect's Config.Boolean accepts, so the env tier reads what src/config.ts reads.
const TRUE = new Set(['true', 'yes', 'on', '1', 'y'])
const FALSE = new Set(['false', 'no', 'off', '0', 'n'])

export type EnvTierResult = { definitions: FlagDefinition[]; problems: Array<{ key: string; value: string; expected: string }> }

/**
 * The env tier: for each built-in flag whose key is set in `env` (non-empty), a static flag
 * serving that value (rules and variants dropped: env sets a value, not targeting). boolean
 * accepts true/false/yes/no/on/off/1/0/y/n, number a finite number, string anything, variant a
 * JSON value. Values that do not parse are reported and skipped.
 */
export function envTier(defaults: readonly FlagDefinition[], env: Record<string, string | undefined>): EnvTierResult {
  const definitions: FlagDefinition[] = []
  const problems: EnvTierResult['problems'] = []
  for (const def of defaults) {
    const raw = env[def.key]
    if (raw === undefined || raw === '') continue
    const value = parseEnvValue(def.type, raw)
    if (value === undefined) {
      problems.push({ key: def.key, value: raw, expected: EXPECTED[def.type] })
      continue
    }
    const { variants: _dropped, ...rest } = def
    definitions.push({ ...rest, defaultValue: value, enabled: true, rules: [] })
  }
  return { definitions, problems }
}

const EXPECTED: Record<FlagDefinition['type'], string> = {
  boolean: 'true or false',
  number: 'a finite number',
  string: 'a string',
  variant: 'a JSON value',
}

function parseEnvValue(type: FlagDefinition['type'], raw: string): FlagValue | undefined {
  switch (type) {
    case 'boolean':
      return TRUE.has(raw) ? true : FALSE.has(raw) ? false : undefined
    case 'number': {
      const n = raw.trim() === '' ? Number.NaN : Number(raw)
      return Number.isFinite(n) ? n : undefined
    }
    case 'string':
      return raw
    case 'variant':
      try {
        return JSON.parse(raw) as FlagValue
      } catch {
        return undefined
      }
  }
}
