import type { HealthCheckConfig } from '../config/types.ts'
import type { Upstream } from '../routing/upstream.ts'

export interface ProbeResult {
  upstream: string
  up: boolean
  /** The status it answered, or why it did not. */
  detail: string
}

/**
 * One health probe of an upstream, through its own keep-alive pool: a GET of the health-check path that answers
 * below 500 within the timeout counts as up. Used to gate a switch to a pool before active health checks exist.
 */
export async function probe(upstream: Upstream, check: HealthCheckConfig): Promise<ProbeResult> {
  try {
    const response = await upstream.pool.request({
      path: check.path,
      method: 'GET',
      headers: { 'user-agent': 'bluegreen-proxy/probe' },
      headersTimeout: check.timeout,
      bodyTimeout: check.timeout,
      signal: AbortSignal.timeout(check.timeout),
    })
    await response.body.dump()
    return { upstream: upstream.url, up: response.statusCode < 500, detail: `HTTP ${response.statusCode}` }
  } catch (error) {
    const code = (error as { code?: string }).code
    return { upstream: upstream.url, up: false, detail: code ?? (error as Error).message }
  }
}

export function probeAll(upstreams: readonly Upstream[], check: HealthCheckConfig): Promise<ProbeResult[]> {
  return Promise.all(upstreams.map((upstream) => probe(upstream, check)))
}
