import type { JudgedFigures } from '../audit/audit.ts'
import type { RollbackConfig } from '../config/types.ts'
import { errorRatio, quantile, type WindowFigures } from '../metrics/windows.ts'

// The release guard's verdicts, pure: the same inputs always give the same answer (src/rollout/release-guard.ts
// acts on them).

export interface Verdict {
  /** healthy: within the thresholds; failing: past one; undecided: too few requests to say. */
  verdict: 'healthy' | 'failing' | 'undecided'
  /** The figures in words, for logs, the audit trail and the state's reason ("12 of 50 requests" when undecided). */
  summary: string
  /** The same figures as numbers, once there are enough requests to judge. */
  figures?: JudgedFigures
}

/** A color's window against the rollback thresholds. */
export function judge(figures: WindowFigures, config: RollbackConfig): Verdict {
  if (figures.requests < config.minRequests) {
    return { verdict: 'undecided', summary: `${figures.requests} of ${config.minRequests} requests` }
  }
  const ratio = errorRatio(figures)
  const p99 = quantile(figures, 0.99)
  const percent = (value: number) => `${(value * 100).toFixed(1)}%`
  const p99Text = Number.isFinite(p99) ? `${Math.round(p99)} ms` : 'over 60 s'
  const summary =
    `error ratio ${percent(ratio)} (${figures.errors}/${figures.requests}), p99 ${p99Text}` +
    ` (limits ${percent(config.maxErrorRatio)}, ${config.maxP99 > 0 ? `${config.maxP99} ms` : 'no p99 limit'})`
  const failing = ratio > config.maxErrorRatio || (config.maxP99 > 0 && p99 > config.maxP99)
  const judged: JudgedFigures = {
    requests: figures.requests,
    errors: figures.errors,
    errorRatio: ratio,
    p99: Number.isFinite(p99) ? Math.round(p99) : null,
    maxErrorRatio: config.maxErrorRatio,
    maxP99: config.maxP99,
    minRequests: config.minRequests,
  }
  return { verdict: failing ? 'failing' : 'healthy', summary, figures: judged }
}

/**
 * Whether a color has had no available upstream for `limit` ms (rollback.unavailableFor; 0 = never) of the time
 * it has been watched. Every request to such a color gets 503, so no traffic is needed to know it is broken.
 */
export function outageOver(
  unavailableSince: number | undefined,
  watchedSince: number,
  now: number,
  limit: number,
): boolean {
  if (limit === 0 || unavailableSince === undefined) return false
  return now - Math.max(unavailableSince, watchedSince) >= limit
}
