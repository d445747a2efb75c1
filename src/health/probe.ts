import type { Dispatcher } from 'undici'
import type { HealthCheckConfig } from '../config/types.ts'
import { isTlsFailure } from '../proxy/upstream-errors.ts'
import type { Upstream } from '../routing/upstream.ts'

export interface ProbeResult {
  upstream: string
  up: boolean
  /** The status it answered, or why it did not. */
  detail: string
}

export interface ProbeOptions {
  /** Where to send it; the upstream's own keep-alive connections (its dispatcher) by default. */
  dispatcher?: Dispatcher
  /** Aborts the probe early (shutdown); the result is then a failure. */
  signal?: AbortSignal
}

/**
 * One health probe of an upstream: a GET of the health-check path that answers below 500 within the timeout
 * counts as up (a 404 or a 401 still proves a live server; README documents the rule). Gates a change sending a
 * pool traffic, and is the request every active health check makes.
 */
export async function probe(
  upstream: Upstream,
  check: HealthCheckConfig,
  options: ProbeOptions = {},
): Promise<ProbeResult> {
  const timeout = AbortSignal.timeout(check.timeout)
  try {
    const response = await (options.dispatcher ?? upstream.dispatcher).request({
      path: check.path,
      method: 'GET',
      headers: { 'user-agent': 'bluegreen-proxy/probe' },
      headersTimeout: check.timeout,
      bodyTimeout: check.timeout,
      signal: options.signal ? AbortSignal.any([timeout, options.signal]) : timeout,
    })
    await response.body.dump()
    return { upstream: upstream.url, up: response.statusCode < 500, detail: `HTTP ${response.statusCode}` }
  } catch (error) {
    return { upstream: upstream.url, up: false, detail: describeFailure(error, check.timeout) }
  }
}

export function probeAll(upstreams: readonly Upstream[], check: HealthCheckConfig): Promise<ProbeResult[]> {
  return Promise.all(upstreams.map((upstream) => probe(upstream, check)))
}

function describeFailure(error: unknown, timeout: number): string {
  const { name, code, message } = error as { name?: unknown; code?: unknown; message?: unknown }
  // AbortSignal.timeout's reason is a DOMException whose code is the number 23: name it instead.
  if (name === 'TimeoutError') return `no answer within ${timeout} ms`
  // A TLS failure says what the handshake found ("tls: UNABLE_TO_VERIFY_LEAF_SIGNATURE unable to verify ...").
  if (typeof code === 'string' && isTlsFailure(code)) return `tls: ${code} ${String(message)}`
  if (typeof code === 'string') return code
  return typeof message === 'string' ? message : String(error)
}
