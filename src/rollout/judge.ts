import type { RollbackConfig } from '../config/types.ts'
import { errorRatio, quantile, type WindowFigures } from '../metrics/windows.ts'

export interface Verdict {
  /** healthy: within the thresholds; failing: past one; undecided: too few requests to say. */
  verdict: 'healthy' | 'failing' | 'undecided'
  /** The figures in words, for logs, the audit trail and the state's reason. */
  summary: string
}

/** A color's window against the rollback thresholds. Pure: the same figures always give the same verdict. */
export function judge(figures: WindowFigures, config: RollbackConfig): Verdict {
  const ratio = errorRatio(figures)
  const p99 = quantile(figures, 0.99)
  const percent = (value: number) => `${(value * 100).toFixed(1)}%`
  const p99Text = Number.isFinite(p99) ? `${Math.round(p99)} ms` : 'over 60 s'
  const summary =
    `error ratio ${percent(ratio)} (${figures.errors}/${figures.requests}), p99 ${p99Text}` +
    ` (limits ${percent(config.maxErrorRatio)}, ${config.maxP99 > 0 ? `${config.maxP99} ms` : 'no p99 limit'})`
  if (figures.requests < config.minRequests) {
    return {
      verdict: 'undecided',
      summary: `${figures.requests} requests, fewer than ${config.minRequests} to judge`,
    }
  }
  const failing = ratio > config.maxErrorRatio || (config.maxP99 > 0 && p99 > config.maxP99)
  return { verdict: failing ? 'failing' : 'healthy', summary }
}
