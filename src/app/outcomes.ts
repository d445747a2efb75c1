import type { Config } from '../config/types.ts'
import type { UpstreamHealth } from '../health/health.ts'
import type { Logger } from '../log.ts'
import type { Metrics } from '../metrics/registry.ts'
import type { TrafficSeries } from '../metrics/series.ts'
import type { SlidingWindows } from '../metrics/windows.ts'
import type { RequestOutcome } from '../proxy/http-forward.ts'
import type { ProxyListenerOptions } from '../proxy/server.ts'

export interface OutcomeParts {
  config: Config
  logger: Logger
  windows: SlidingWindows
  /** The console's charts. */
  series: TrafficSeries
  health: UpstreamHealth
  metrics: Metrics
}

/**
 * The one place a finished request and a failed upstream attempt are reported: the rollback windows, the console's
 * charts, health
 * (outlier detection), metrics, then the access log. Kept flat: they run per request.
 */
export function outcomeReporting(
  parts: OutcomeParts,
): Pick<ProxyListenerOptions, 'onOutcome' | 'onUpstreamFailure'> {
  const { config, windows, series, health, metrics } = parts
  const accessLog = config.log.access ? parts.logger.child({ part: 'access' }) : undefined
  const countRequests = config.metrics.enabled
  const onOutcome = (outcome: RequestOutcome): void => {
    windows.record(outcome.color, outcome.status, outcome.durationMs)
    series.record(outcome.color, outcome.status, outcome.durationMs)
    health.recordOutcome(outcome)
    if (countRequests) metrics.observe(outcome.color, outcome.status, outcome.durationMs / 1000)
    if (accessLog) {
      accessLog.info({
        method: outcome.method,
        path: outcome.path,
        status: outcome.status,
        color: outcome.color,
        upstream: outcome.upstream,
        ms: Math.round(outcome.durationMs * 100) / 100,
        failure: outcome.failure,
      })
    }
  }
  const onUpstreamFailure: ProxyListenerOptions['onUpstreamFailure'] = (upstream, reason, _error, retry) => {
    health.recordFailure(upstream, reason)
    if (!countRequests) return
    metrics.upstreamErrors.labels(upstream.color, reason).inc()
    if (retry === 'retried') metrics.upstreamRetries.labels(upstream.color, reason).inc()
    else if (retry === 'denied') metrics.upstreamRetriesDenied.labels(upstream.color, reason).inc()
  }
  return { onOutcome, onUpstreamFailure }
}
