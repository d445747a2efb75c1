// The latest differences between the colors' answers, for GET /mirror/diffs, the console and the gate's refusal.
// Bounded: a ring of the last N, bodies cut short, and secrets in headers never kept.

export interface MirrorDiff {
  at: string
  method: string
  path: string
  colors: { live: string; mirror: string }
  status: { live: number; mirror: number }
  /** The differing fields (compare.ts names them), noise left out. */
  fields: string[]
  /** The request's headers as the mirror sent them, secrets redacted. */
  requestHeaders: Record<string, string>
  headers: { live: Record<string, string>; mirror: Record<string, string> }
  /** The bodies' beginnings, as text. */
  bodies: { live: string; mirror: string; truncated: boolean }
}

/** How much of each body a diff keeps. */
export const BODY_PREVIEW_BYTES = 2048

/** Headers that carry credentials or sessions, by name; and any whose name says it holds a secret. */
const SECRET_HEADERS = new Set([
  'authorization',
  'proxy-authorization',
  'cookie',
  'set-cookie',
  'x-api-key',
  'x-auth-token',
  'x-csrf-token',
  'x-xsrf-token',
  'x-amz-security-token',
])
const SECRET_NAME = /token|secret|password|passwd|api[-_]?key|session|credential|signature/i
/** Query parameters that carry credentials under short names (signed URLs, OAuth codes) besides SECRET_NAME's. */
const SECRET_PARAMS = new Set(['key', 'sig', 'code', 'auth', 'jwt', 'pass', 'pwd'])
export const REDACTED = '[redacted]'

export function isSecretHeader(name: string): boolean {
  const lower = name.toLowerCase()
  return SECRET_HEADERS.has(lower) || SECRET_NAME.test(lower)
}

/** Headers as a diff shows them: one string per name, secrets replaced. */
export function redactedHeaders(
  headers: Record<string, string | string[] | undefined>,
): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined) continue
    out[name] = isSecretHeader(name) ? REDACTED : Array.isArray(value) ? value.join(', ') : value
  }
  return out
}

/** Flat [name, value, ...] request headers, as the forwarder sends them, as a diff shows them. */
export function redactedPairs(pairs: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {}
  for (let i = 0; i + 1 < pairs.length; i += 2) {
    const name = pairs[i]!.toLowerCase()
    const value = isSecretHeader(name) ? REDACTED : pairs[i + 1]!
    out[name] = out[name] === undefined ? value : `${out[name]}, ${value}`
  }
  return out
}

/**
 * A request target as a diff (or an error) shows it: the value of every query parameter whose name says it holds
 * a secret (`?access_token=`, `?api_key=`, `?sig=`) replaced, the rest as sent.
 */
export function redactedTarget(target: string): string {
  const at = target.indexOf('?')
  if (at === -1) return target
  const query = target
    .slice(at + 1)
    .split('&')
    .map((pair) => {
      const equals = pair.indexOf('=')
      if (equals === -1) return pair
      const name = paramName(pair.slice(0, equals))
      return SECRET_NAME.test(name) || SECRET_PARAMS.has(name) ? `${pair.slice(0, equals)}=${REDACTED}` : pair
    })
  return `${target.slice(0, at)}?${query.join('&')}`
}

/** A query parameter's name, decoded and lower-cased; as sent when it does not decode. */
function paramName(raw: string): string {
  try {
    return decodeURIComponent(raw.replaceAll('+', ' ')).toLowerCase()
  } catch {
    return raw.toLowerCase()
  }
}

/** A JSON member whose name says it holds a secret, its string value to the end (or to where the preview stops). */
const SECRET_MEMBER =
  /("(?:[^"\\]|\\.)*(?:token|secret|password|passwd|api[-_]?key|session|credential|signature)(?:[^"\\]|\\.)*"\s*:\s*)"(?:[^"\\]|\\.)*(?:"|$)/gi
/** A form field (`a=1&access_token=...`) so named, its value to the next `&`. */
const SECRET_FIELD =
  /(^|[&?\s])([^=&\s]*(?:token|secret|password|passwd|api[-_]?key|session|credential|signature)[^=&\s]*=)[^&\s]*/gi

/**
 * A body's beginning as a diff shows it, as text: the string values of JSON members and form fields whose names say
 * they hold a secret (`"access_token": "..."`, `password=...`) replaced, as headers and query parameters are.
 */
export function bodyPreview(body: Buffer): string {
  return body
    .subarray(0, BODY_PREVIEW_BYTES)
    .toString('utf8')
    .replace(SECRET_MEMBER, `$1"${REDACTED}"`)
    .replace(SECRET_FIELD, `$1$2${REDACTED}`)
}

export class DiffLog {
  #size: number
  #diffs: MirrorDiff[] = []

  constructor(size: number) {
    this.#size = size
  }

  /** Keeps the latest `size` from now on (a reload); the oldest beyond it are let go at once. */
  resize(size: number): void {
    this.#size = size
    if (this.#diffs.length > size) this.#diffs = this.#diffs.slice(-size)
  }

  add(diff: MirrorDiff): void {
    this.#diffs.push(diff)
    if (this.#diffs.length > this.#size) this.#diffs.shift()
  }

  /** Newest first. */
  latest(limit = this.#size): MirrorDiff[] {
    return this.#diffs.slice(-limit).reverse()
  }

  /** The most frequent differences among those kept, for a refusal: which route, which field, how often. */
  top(limit: number, sinceMs = 0): { method: string; path: string; field: string; count: number }[] {
    const counts = new Map<string, { method: string; path: string; field: string; count: number }>()
    for (const diff of this.#diffs) {
      if (Date.parse(diff.at) < sinceMs) continue
      const path = diff.path.split('?')[0]!
      for (const field of diff.fields) {
        const key = `${diff.method} ${path} ${field}`
        const seen = counts.get(key)
        if (seen) seen.count++
        else counts.set(key, { method: diff.method, path, field, count: 1 })
      }
    }
    return [...counts.values()].sort((a, b) => b.count - a.count).slice(0, limit)
  }

  clear(): void {
    this.#diffs = []
  }
}
