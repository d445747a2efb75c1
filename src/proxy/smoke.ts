import { isDeepStrictEqual } from 'node:util'
import type { Color } from '../colors.ts'
import type { SmokeCheckConfig, SmokeConfig } from '../config/types.ts'
import { chooseUpstream } from '../routing/pick.ts'
import type { RoutingSnapshot } from '../routing/snapshot.ts'
import { upstreamRequestHeaders } from './headers.ts'

/** How one smoke check went. */
export interface SmokeResult {
  name: string
  passed: boolean
  /** The upstream the check was sent to, as configured; null when the pool had none available. */
  upstream: string | null
  /** The status answered; null when no answer came. */
  status: number | null
  durationMs: number
  /** What failed, in words; absent when the check passed. */
  problem?: string
}

export interface SmokeReport {
  color: Color
  passed: boolean
  checks: SmokeResult[]
}

export interface SmokeOptions {
  config: SmokeConfig
  /** Whether the client's Host goes upstream, as for proxied requests (proxy.preserveHost). */
  preserveHost: boolean
}

const BODY_LIMIT = 1024 * 1024

/**
 * Runs every smoke check against `color`, one after the other, the way a proxied request would go: an upstream
 * chosen from the color's available pool in the snapshot (the same choice as routing), the headers rewritten as
 * for a client (hop-by-hop dropped, X-Forwarded-* set), sent through the upstream's own connection pool. It does
 * not go through the proxy listener, so it needs no preview header and adds nothing to the request path.
 */
export async function runSmoke(
  snapshot: RoutingSnapshot,
  color: Color,
  options: SmokeOptions,
): Promise<SmokeReport> {
  const checks: SmokeResult[] = []
  for (const check of options.config.checks) checks.push(await runCheck(snapshot, color, check, options))
  return { color, passed: checks.every((result) => result.passed), checks }
}

async function runCheck(
  snapshot: RoutingSnapshot,
  color: Color,
  check: SmokeCheckConfig,
  options: SmokeOptions,
): Promise<SmokeResult> {
  const upstream = chooseUpstream(snapshot.pools[color])
  if (!upstream) {
    return failed(check, null, null, 0, `the ${color} pool has no available upstream`)
  }
  const raw = Object.entries(check.headers).flat()
  const headers = upstreamRequestHeaders(raw, {
    peer: '127.0.0.1',
    trusted: false,
    proto: 'http',
    preserveHost: options.preserveHost,
  })
  const started = performance.now()
  const elapsed = () => Math.round(performance.now() - started)
  const signal = AbortSignal.timeout(options.config.timeout)
  let status: number
  let body: string
  try {
    const response = await upstream.dispatcher.request({
      method: check.method,
      path: check.path,
      headers,
      body: check.body,
      signal,
      // The pool's TLS name, whatever Host the check sends (see Upstream.servername); untyped in undici.
      ...({ servername: upstream.servername } as object),
    })
    status = response.statusCode
    body = await readLimited(response.body)
  } catch (error) {
    const why = signal.aborted
      ? `no answer within ${options.config.timeout} ms`
      : `the request failed: ${(error as Error).message}`
    return failed(check, upstream.url, null, elapsed(), why)
  }
  const durationMs = elapsed()
  const problem = problemWith(check, status, body, durationMs)
  if (problem) return failed(check, upstream.url, status, durationMs, problem)
  return { name: check.name, passed: true, upstream: upstream.url, status, durationMs }
}

/** What the answer fails of the check's expectations, the first one found; undefined when it meets them all. */
function problemWith(
  check: SmokeCheckConfig,
  status: number,
  body: string,
  durationMs: number,
): string | undefined {
  if (!check.status.some((range) => status >= range.min && status <= range.max)) {
    const expected = check.status.map((range) =>
      range.min === range.max ? range.min : `${range.min}-${range.max}`,
    )
    return `status ${status}, expected ${expected.join(' or ')}`
  }
  if (check.bodyContains !== undefined && !body.includes(check.bodyContains)) {
    return `the body does not contain ${JSON.stringify(check.bodyContains)}`
  }
  if (check.json !== undefined) {
    let parsed: unknown
    try {
      parsed = JSON.parse(body)
    } catch {
      return 'the body is not JSON'
    }
    for (const [path, expected] of Object.entries(check.json)) {
      const actual = valueAt(parsed, path)
      if (!isDeepStrictEqual(actual, expected)) {
        return `${path} is ${actual === undefined ? 'absent' : JSON.stringify(actual)}, expected ${JSON.stringify(expected)}`
      }
    }
  }
  if (check.maxLatency !== undefined && durationMs > check.maxLatency) {
    return `took ${durationMs} ms, more than ${check.maxLatency} ms`
  }
  return undefined
}

/** The value at a dotted path ("data.items.0.id"); undefined when the path leads nowhere. */
function valueAt(value: unknown, path: string): unknown {
  let current = value
  for (const key of path.split('.')) {
    if (typeof current !== 'object' || current === null || !Object.hasOwn(current, key)) return undefined
    current = (current as Record<string, unknown>)[key]
  }
  return current
}

/** A check's body is read up to a limit: a huge answer must not fill the admin process's memory. */
async function readLimited(body: AsyncIterable<Buffer>): Promise<string> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of body) {
    if (size >= BODY_LIMIT) continue
    chunks.push(chunk)
    size += chunk.length
  }
  return Buffer.concat(chunks).toString('utf8')
}

function failed(
  check: SmokeCheckConfig,
  upstream: string | null,
  status: number | null,
  durationMs: number,
  problem: string,
): SmokeResult {
  return { name: check.name, passed: false, upstream, status, durationMs, problem }
}
