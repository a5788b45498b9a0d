import type { SchemaIssue } from 'effect'
import { EXPECTED, FIELDS, isPlainObject, type Field } from './eventSchema.js'

/** The problems a request is refused for, and how they are worded. */

/**
 * One problem with a request. `index` is the event's 0-based position in the request, or -1
 * when the issue concerns the request as a whole. `path` is dotted (`data.items.3.name`), '' for
 * the event itself.
 */
export interface ValidationIssue {
  index: number
  path: string
  message: string
}

/** At most this many details are returned; the last one says how many were left out. */
const MAX_DETAILS = 100

/** Keeps the first MAX_DETAILS issues and counts the rest. */
export class IssueList {
  private readonly kept: ValidationIssue[] = []
  total = 0

  add(index: number, path: string, message: string): void {
    if (this.kept.length < MAX_DETAILS) this.kept.push({ index, path, message })
    this.total++
  }

  /** At most MAX_DETAILS entries; when some were left out, the last entry says how many. */
  details(): ValidationIssue[] {
    if (this.total <= MAX_DETAILS) return this.kept
    const shown = this.kept.slice(0, MAX_DETAILS - 1)
    const notShown = this.total - shown.length
    return [...shown, { index: -1, path: '', message: `…and ${notShown} more problems not shown (details are capped at ${MAX_DETAILS} entries)` }]
  }
}

/** Adds one issue per path (the first wins) and returns the paths reported. */
export function addSchemaIssues(issue: SchemaIssue.Issue, item: Record<string, unknown>, index: number, issues: IssueList): ReadonlySet<string> {
  const paths = new Set<string>()
  for (const leaf of flattenIssue(issue, [])) {
    const path = leaf.path.map(String).join('.')
    if (paths.has(path)) continue
    paths.add(path)
    issues.add(index, path, schemaMessage(leaf, item))
  }
  return paths
}

interface LeafIssue {
  path: readonly PropertyKey[]
  issue: SchemaIssue.Issue
}

function flattenIssue(issue: SchemaIssue.Issue, path: readonly PropertyKey[]): LeafIssue[] {
  switch (issue._tag) {
    case 'Pointer':
      return flattenIssue(issue.issue, [...path, ...issue.path])
    case 'Composite':
      return issue.issues.flatMap((child) => flattenIssue(child, path))
    case 'AnyOf':
      return issue.issues.length === 0 ? [{ path, issue }] : issue.issues.flatMap((child) => flattenIssue(child, path))
    default:
      // Filter, Encoding and the leaves: the field's own "expected" text says it best.
      return [{ path, issue }]
  }
}

function schemaMessage({ path, issue }: LeafIssue, item: Record<string, unknown>): string {
  const field = path.length === 1 && typeof path[0] === 'string' ? path[0] : undefined
  if (issue._tag === 'UnexpectedKey') {
    return field === 'seq' ? 'seq is assigned by the relay; do not send it' : `unknown field (expected only ${FIELDS.join(', ')})`
  }
  const expected = field !== undefined && (FIELDS as readonly string[]).includes(field) ? EXPECTED[field as Field] : 'a valid value'
  if (issue._tag === 'MissingKey') return `Missing required field: expected ${expected}`
  const value = field === undefined ? item : item[field]
  return `Expected ${expected}, got ${describe(value)}`
}

/** A short, safe rendering of a value for messages. */
export function describe(value: unknown): string {
  if (value === null) return 'null'
  switch (typeof value) {
    case 'string':
      return value.length > 64 ? `${JSON.stringify(value.slice(0, 64))}… (${value.length} characters)` : JSON.stringify(value)
    case 'number':
    case 'boolean':
      return String(value)
    case 'bigint':
      return `${value}n (a bigint)`
    case 'undefined':
      return 'undefined'
    case 'object': {
      if (Array.isArray(value)) return value.length === 1 ? 'an array of 1 item' : `an array of ${value.length} items`
      if (isPlainObject(value)) return 'an object'
      const name = (Object.getPrototypeOf(value) as { constructor?: { name?: unknown } } | null)?.constructor?.name
      return typeof name === 'string' && name !== '' ? `a ${name}` : 'a non-plain object'
    }
    default:
      return `a ${typeof value}`
  }
}

export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e)
}
