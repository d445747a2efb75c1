import { isIP } from 'node:net'
import type { ConfigProblem } from '../errors.ts'
import type { ListenAddress } from './types.ts'

// Small, generic readers for the config file. Each one takes a Field (a value and its key path), returns a
// valid value or the fallback, and records a problem instead of throwing, so one pass reports every problem.

export interface Field {
  path: string
  value: unknown
}

/** Node's timers overflow above this (they then fire after 1 ms), so no timeout may be longer. */
export const MAX_TIMER_MS = 2 ** 31 - 1

export class Checker {
  readonly problems: ConfigProblem[] = []

  /** One problem per key path: a value that failed ${VAR} substitution is not reported again as the wrong type. */
  report(path: string, message: string): void {
    if (!this.hasProblem(path)) this.problems.push({ path, message })
  }

  hasProblem(path: string): boolean {
    return this.problems.some((problem) => problem.path === path)
  }

  /** A mapping that may hold only `keys`. Absent or null reads as empty, so its defaults apply. */
  /** With allowAnyKey, a map of names the caller checks itself (admin.tokens), not a fixed set of keys. */
  section(
    field: Field,
    keys: readonly string[],
    options: { required?: boolean; allowAnyKey?: boolean } = {},
  ): Section {
    const { path, value } = field
    if (value === undefined || value === null) {
      if (options.required) this.report(path, `required: a mapping with keys ${keys.join(', ')}`)
      return new Section(path, {}, false)
    }
    if (!isPlainObject(value)) {
      this.report(path, `expected a mapping with keys ${keys.join(', ')}, got ${describe(value)}`)
      return new Section(path, {}, false)
    }
    for (const key of Object.keys(value)) {
      if (options.allowAnyKey || keys.includes(key)) continue
      const hint = closest(key, keys)
      const suggestion = hint === undefined ? '' : `; did you mean "${hint}"?`
      this.report(keyPath(path, key), `unknown key; expected one of: ${keys.join(', ')}${suggestion}`)
    }
    return new Section(path, value, true)
  }

  /** The value parsed by `parse` (undefined means invalid), the fallback when absent, or a problem. */
  read<T>(field: Field, fallback: T, parse: (value: unknown) => T | undefined, expected: string): T {
    if (field.value === undefined) return fallback
    const parsed = parse(field.value)
    if (parsed !== undefined) return parsed
    this.report(field.path, `expected ${expected}, got ${describe(field.value)}`)
    return fallback
  }

  oneOf<T extends string>(field: Field, choices: readonly T[], fallback: T): T {
    const { path, value } = field
    if (value === undefined) return fallback
    if (choices.includes(value as T)) return value as T
    const hint = typeof value === 'string' ? closest(value, choices) : undefined
    const suggestion = hint === undefined ? '' : `; did you mean "${hint}"?`
    this.report(path, `expected one of: ${choices.join(', ')}, got ${describe(value)}${suggestion}`)
    return fallback
  }

  /** The field's items as fields of their own, or undefined (with a problem) when it is not a list. */
  list(field: Field, expected: string): Field[] | undefined {
    if (field.value === undefined) return undefined
    if (Array.isArray(field.value)) {
      return field.value.map((value, index) => ({ path: keyPath(field.path, index), value }))
    }
    this.report(field.path, `expected a list of ${expected}, got ${describe(field.value)}`)
    return undefined
  }

  required(field: Field, expected: string): boolean {
    if (field.value !== undefined) return true
    this.report(field.path, `required: ${expected}`)
    return false
  }
}

export class Section {
  readonly path: string
  /** False when the mapping was absent (or invalid), so a caller can tell "not configured" from "all defaults". */
  readonly present: boolean
  readonly values: Record<string, unknown>

  constructor(path: string, values: Record<string, unknown>, present: boolean) {
    this.path = path
    this.values = values
    this.present = present
  }

  field(key: string): Field {
    return {
      path: keyPath(this.path, key),
      value: Object.hasOwn(this.values, key) ? this.values[key] : undefined,
    }
  }
}

/** `pools.blue.upstreams[1]`; keys that are not plain identifiers are quoted: `pools["a.b"]`. */
export function keyPath(parent: string, key: string | number): string {
  if (typeof key === 'number') return `${parent}[${key}]`
  if (!/^[A-Za-z_$][\w$-]*$/.test(key)) return `${parent}[${JSON.stringify(key)}]`
  return parent === '' ? key : `${parent}.${key}`
}

export function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

export function describe(value: unknown): string {
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'a list'
  if (typeof value === 'object') return 'a mapping'
  if (typeof value === 'string') return JSON.stringify(value.length > 60 ? `${value.slice(0, 57)}...` : value)
  return String(value)
}

/** The candidate within edit distance 2 of `word` (ignoring case), nearest first. */
export function closest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined
  let bestDistance = 3
  for (const candidate of candidates) {
    const distance = editDistance(word.toLowerCase(), candidate.toLowerCase())
    if (distance < bestDistance) {
      best = candidate
      bestDistance = distance
    }
  }
  return best
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, index) => index)
  for (let i = 1; i <= a.length; i++) {
    const current = [i]
    for (let j = 1; j <= b.length; j++) {
      const substitution = previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1)
      current.push(Math.min(previous[j]! + 1, current[j - 1]! + 1, substitution))
    }
    previous = current
  }
  return previous[b.length]!
}

const DURATION = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }

/** Milliseconds from a non-negative integer (ms) or a string like "250ms", "1.5s", "2m", "1h", "7d". */
export function parseDuration(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isSafeInteger(value) && value >= 0 ? value : undefined
  if (typeof value !== 'string') return undefined
  if (/^\d+$/.test(value)) return parseDuration(Number(value))
  const match = DURATION.exec(value)
  if (!match) return undefined
  const ms = Math.round(Number(match[1]) * UNIT_MS[match[2]!]!)
  return Number.isSafeInteger(ms) ? ms : undefined
}

/** A parser for durations within [min, max], and the words saying so. */
export function durationIn(min: number, max: number): [(value: unknown) => number | undefined, string] {
  const parse = (value: unknown) => {
    const ms = parseDuration(value)
    return ms !== undefined && ms >= min && ms <= max ? ms : undefined
  }
  const floor = min === 0 ? 'a duration' : `a duration of at least ${min}ms`
  return [parse, `${floor} such as "250ms", "5s", "2m", "1h" or a number of milliseconds`]
}

const HOST_PORT = /^(?:\[([^\]]*)\]|([^:[\]]*)):(\d{1,5})$/
const HOSTNAME = /^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*$/

/** "host:port", "[v6]:port", ":port"; host is "" when left out. */
export function parseHostPort(value: string): ListenAddress | undefined {
  const match = HOST_PORT.exec(value)
  if (!match) return undefined
  const [, bracketed, plain, digits] = match
  if (bracketed !== undefined && isIP(bracketed) !== 6) return undefined
  if (plain !== undefined && plain !== '' && !HOSTNAME.test(plain)) return undefined
  const port = Number(digits)
  return port <= 65535 ? { host: bracketed ?? plain ?? '', port } : undefined
}

/** "host:port", ":port", "[::1]:port" or a bare port (number or digits); host defaults to 0.0.0.0. */
export function parseListen(value: unknown): ListenAddress | undefined {
  if (typeof value === 'string' && /^\d{1,5}$/.test(value)) return parseListen(Number(value))
  if (typeof value === 'number') {
    return Number.isInteger(value) && value >= 0 && value <= 65535
      ? { host: '0.0.0.0', port: value }
      : undefined
  }
  if (typeof value !== 'string') return undefined
  const address = parseHostPort(value)
  return address && { host: address.host || '0.0.0.0', port: address.port }
}

export const LISTEN_EXPECTED = 'an address such as "0.0.0.0:8080", ":8080", "[::1]:8080" or a port (0..65535)'

/** Integers and booleans may come from ${VAR} as strings, so their string forms are accepted too. */
export function integerIn(min: number, max: number): [(value: unknown) => number | undefined, string] {
  const parse = (value: unknown) => {
    const number = typeof value === 'string' && /^-?\d+$/.test(value) ? Number(value) : value
    return Number.isInteger(number) && (number as number) >= min && (number as number) <= max
      ? (number as number)
      : undefined
  }
  return [parse, `an integer from ${min} to ${max}`]
}

export function parseBoolean(value: unknown): boolean | undefined {
  if (typeof value === 'boolean') return value
  return value === 'true' ? true : value === 'false' ? false : undefined
}

/** An HTTP token (RFC 9110): what header names and cookie names are made of. */
export function isToken(value: unknown): value is string {
  return typeof value === 'string' && /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(value)
}

export function isIpOrCidr(value: string): boolean {
  const [address = '', prefix, ...rest] = value.split('/')
  const family = isIP(address)
  if (family === 0 || rest.length > 0) return false
  if (prefix === undefined) return true
  return /^\d{1,3}$/.test(prefix) && Number(prefix) <= (family === 4 ? 32 : 128)
}

const REFERENCE = /\$(\$?)\{([^}]*)(\}?)/g
const VARIABLE = /^([A-Za-z_][A-Za-z0-9_]*)(?::-([\s\S]*))?$/

/**
 * Replaces ${VAR} and ${VAR:-default} in every string value (never in keys) from `env`; "$${" stands for a
 * literal "${". As in the shell, the default also applies when the variable is set but empty.
 */
export function substituteEnv(value: unknown, env: NodeJS.ProcessEnv, path: string, check: Checker): unknown {
  if (typeof value === 'string') return substituteString(value, env, path, check)
  if (Array.isArray(value))
    return value.map((item, index) => substituteEnv(item, env, keyPath(path, index), check))
  if (!isPlainObject(value)) return value
  const entries = Object.entries(value).map(([key, item]) => [
    key,
    substituteEnv(item, env, keyPath(path, key), check),
  ])
  return Object.fromEntries(entries)
}

function substituteString(text: string, env: NodeJS.ProcessEnv, path: string, check: Checker): string {
  return text.replace(REFERENCE, (whole, escaped: string, body: string, closing: string) => {
    if (escaped) return whole.slice(1)
    const reference = VARIABLE.exec(body)
    if (!closing || !reference) {
      check.report(
        path,
        `malformed "${whole}": expected \${NAME} or \${NAME:-default} (write "$\${" for a literal)`,
      )
      return whole
    }
    const [, name = '', fallback] = reference
    const set = env[name]
    if (set !== undefined && (set !== '' || fallback === undefined)) return set
    if (fallback !== undefined) return fallback
    check.report(
      path,
      `environment variable ${name} is not set (write \${${name}:-default} to give a default)`,
    )
    return whole
  })
}

export function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value)
    for (const item of Object.values(value)) deepFreeze(item)
  }
  return value
}

/**
 * check.read for a value that may be a secret (a webhook URL often holds its token in its path, as Slack's do; a
 * Redis URL its password): a problem reaches the log, `bluegreen check`, POST /reload's answer and the audit trail,
 * so it names what kind of value it got, never the value.
 */
export function readSecret<T>(
  check: Checker,
  field: Field,
  parse: (value: unknown) => T | undefined,
  expected: string,
): T | undefined {
  if (field.value === undefined) return undefined
  const parsed = parse(field.value)
  if (parsed !== undefined) return parsed
  const credentials = typeof field.value === 'string' && URL.parse(field.value)?.password
  const kind =
    typeof field.value === 'string'
      ? credentials
        ? 'a URL with user:password@ in it'
        : 'a string that is not one'
      : kindOf(field.value)
  const advice = credentials
    ? ' without user:password@ (credentials in a URL would travel into every log line naming it)'
    : ''
  check.report(
    field.path,
    `expected ${expected}${advice}, got ${kind} (the value is not shown: it may hold a secret)`,
  )
  return undefined
}

function kindOf(value: unknown): string {
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'a list'
  return typeof value === 'object' ? 'a mapping' : `a ${typeof value}`
}
