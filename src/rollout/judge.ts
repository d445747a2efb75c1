import type { RollbackConfig, RolloutConfig } from '../config/types.ts'
import { errorRatio, quantile, type WindowFigures } from '../metrics/windows.ts'

// The release guard's verdicts, pure: the same inputs always give the same answer (src/rollout/release-guard.ts
// acts on them).

export interface Verdict {
  /** healthy: within the thresholds; failing: past one; undecided: too few requests to say. */
  verdict: 'healthy' | 'failing' | 'undecided'
  /** The figures in words, for logs, the audit trail and the state's reason ("12 of 50 requests" when undecided). */
  summary: string
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
  return { verdict: failing ? 'failing' : 'healthy', summary }
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

/**
 * What a running rollout's step does at an evaluation:
 * - roll-back: its figures fail the thresholds (at any time: a failing step does not wait out its time);
 * - wait: its time is not up yet;
 * - hold: its time is up but it has too few requests to judge, and `rollout.onLowTraffic` is hold;
 * - advance: its time is up and it passed, or it could not be judged and `onLowTraffic` is proceed.
 */
export type StepAction = 'roll-back' | 'wait' | 'hold' | 'advance'

export function stepAction(
  verdict: Verdict['verdict'],
  timeUp: boolean,
  onLowTraffic: RolloutConfig['onLowTraffic'],
): StepAction {
  if (verdict === 'failing') return 'roll-back'
  if (!timeUp) return 'wait'
  if (verdict === 'undecided' && onLowTraffic === 'hold') return 'hold'
  return 'advance'
}
