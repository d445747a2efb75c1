import type { Config } from './types.ts'

// What a reload would change, computed before anything is applied, so a reload is planned whole and then either
// applied whole or refused whole (Caddy's changeConfig). Pure: it knows keys, not the parts that apply them.

/**
 * The key paths whose values differ between two configs, as README's "Configuration" names them
 * ("pools.blue.upstreams", "proxy.timeouts.header", "admin.tokens"). Objects are compared key by key; arrays are
 * one value each (a pool's upstream list changes as a whole). A key set to undefined counts as absent, so a
 * config that came through a JSON channel (a cluster worker) compares equal to the one it was made from.
 */
export function changedKeys(running: Config, next: Config): string[] {
  const changed: string[] = []
  compare(running, next, '', changed)
  return changed.sort()
}

/** Keys the file writes as one value ("listen: 0.0.0.0:8080") that the Config holds as an object. */
const WRITTEN_AS_ONE = new Set(['listen', 'admin.listen', 'tls.redirectFrom'])

function compare(before: unknown, after: unknown, path: string, changed: string[]): void {
  if (isRecord(before) && isRecord(after) && !WRITTEN_AS_ONE.has(path)) {
    const keys = new Set([...Object.keys(before), ...Object.keys(after)])
    for (const key of keys) compare(before[key], after[key], path === '' ? key : `${path}.${key}`, changed)
    return
  }
  if (!sameValue(before, after)) changed.push(path)
}

/** Deep equality of plain data (what a Config holds: objects, arrays, strings, numbers, booleans, null). */
export function sameValue(a: unknown, b: unknown): boolean {
  if (Object.is(a, b)) return true
  if (Array.isArray(a) && Array.isArray(b)) {
    return a.length === b.length && a.every((item, index) => sameValue(item, b[index]))
  }
  if (isRecord(a) && isRecord(b)) {
    const keys = new Set([...Object.keys(a), ...Object.keys(b)])
    return [...keys].every((key) => sameValue(a[key], b[key]))
  }
  return false
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/**
 * Whether a key path falls under a pattern: the pattern itself or a key below it, "*" standing for any one key
 * ("pools.*.healthCheck" covers "pools.green.healthCheck.interval").
 */
export function keyMatches(pattern: string, key: string): boolean {
  const want = pattern.split('.')
  const have = key.split('.')
  if (have.length < want.length) return false
  return want.every((part, index) => part === '*' || part === have[index])
}

/** A reload's plan: what changed, and of that, what this process cannot apply without a restart. */
export interface ReloadPlan {
  /** Every key path that differs, sorted. */
  changed: string[]
  /** The changed keys no applier covers: they need a restart, and refuse the whole reload. */
  needsRestart: string[]
}

/**
 * Splits the changes between the keys that can be applied (covered by one of `reloadable`'s patterns) and the rest.
 * A key no pattern covers needs a restart: an unknown key is never ignored silently.
 */
export function planReload(running: Config, next: Config, reloadable: readonly string[]): ReloadPlan {
  const changed = changedKeys(running, next)
  const needsRestart = changed.filter((key) => !reloadable.some((pattern) => keyMatches(pattern, key)))
  return { changed, needsRestart }
}

/** How a reload ended: bluegreen_config_reloads_total's `result`. */
export type ReloadResult = 'applied' | 'unchanged' | 'invalid' | 'refused'

/** A reload's outcome, as POST /reload answers it, the log says it and the audit trail records it. */
export interface ReloadOutcome {
  result: ReloadResult
  /** The config file re-read; null when there is none (`bluegreen demo`). */
  file: string | null
  /** The keys that changed (applied), or would have (refused). */
  changed: string[]
  /** refused: the changed keys that need a restart. */
  needsRestart?: string[]
  /** invalid: every problem with its key path (an unreadable file is one problem at the root). */
  problems?: { path: string; message: string }[]
  /** invalid or refused (or a worker failed): the BG_* code the answer carries. */
  code?: 'BG_CONFIG_INVALID' | 'BG_CONFIG_UNREADABLE' | 'BG_RELOAD_REFUSED' | 'BG_RELOAD_FAILED'
  /** One line for a person. */
  message: string
  /** With --workers: the workers that applied it, and those that failed to (with why). */
  workers?: { applied: number[]; failed: { worker: number; error: string }[] }
}
