import type { ChangeAction } from '../audit/audit.ts'
import { COLORS, type Color, type Weights } from '../colors.ts'
import { BlueGreenError } from '../errors.ts'
import type { Metrics } from '../metrics/registry.ts'
import { runSmoke, type SmokeOptions, type SmokeReport } from '../proxy/smoke.ts'
import type { RoutingSnapshot } from '../routing/snapshot.ts'
import { type Standby, standbyOver } from '../state/standby.ts'

export interface SmokeGateOptions {
  smoke: SmokeOptions
  metrics: Metrics
  snapshot: () => RoutingSnapshot | undefined
  /** Publishes each run as a `smoke` live event. */
  publish?: (kind: 'smoke', data: SmokeEvent) => void
}

/**
 * What ran the checks: `demand` (POST /smoke), the change they gate (`switch`, `weights`, `rollout`,
 * `rollout-promote`, `rollback`), or `rollout-step` (the release guard, before a rollout's next step).
 */
export type SmokeTrigger = ChangeAction | 'demand' | 'rollout-step'

/** The `smoke` live event's data: a run's report and what ran it. */
export interface SmokeEvent extends SmokeReport {
  trigger: SmokeTrigger
  /** Set when the checks ran because the color's standby is over (it may have been scaled down). */
  retired?: true
}

/**
 * The smoke checks as a gate before a change (412 BG_SMOKE_FAILED unless forced) and on demand (POST /smoke).
 * Every check run is counted, whichever way it went.
 */
export class SmokeGate {
  readonly #options: SmokeGateOptions

  constructor(options: SmokeGateOptions) {
    this.#options = options
  }

  async run(color: Color, trigger: SmokeTrigger = 'demand', retired = false): Promise<SmokeReport> {
    const snapshot = this.#options.snapshot()
    if (!snapshot)
      throw new BlueGreenError('BG_STATE_UNAVAILABLE', 'the routing state has not been loaded yet')
    const report = await runSmoke(snapshot, color, this.#options.smoke)
    for (const check of report.checks) {
      this.#options.metrics.smokeChecks.inc({ color, result: check.passed ? 'pass' : 'fail' })
    }
    this.#options.publish?.('smoke', { ...report, trigger, ...(retired ? { retired: true } : {}) })
    return report
  }

  /**
   * Runs the checks on every color the change gives more traffic than it has, when the config asks for them on
   * this action, and always on a color whose standby is over (retired: it may have been scaled down, so it is no
   * longer the instant way back; a rollback to it included). Refuses (412) when one fails, unless forced; forced,
   * it answers the gates gone past (["smoke"]), so the audit trail can say so.
   */
  async require(
    action: ChangeAction,
    weights: Weights,
    from: { weights: Weights; standby?: Standby },
    force: boolean,
  ): Promise<string[]> {
    const { config } = this.#options.smoke
    if (config.checks.length === 0) return []
    for (const color of COLORS) {
      // Traffic moving away from a color puts nothing new at risk on it.
      if (weights[color] <= from.weights[color]) continue
      const retired = from.standby?.color === color && standbyOver(from.standby, Date.now())
      if (!retired && !this.#appliesTo(action)) continue
      const report = await this.run(color, action, retired)
      if (report.passed) continue
      if (force) return ['smoke']
      throw smokeFailed(report, retired)
    }
    return []
  }

  #appliesTo(action: ChangeAction): boolean {
    const { on } = this.#options.smoke.config
    if (action === 'switch') return on.switch
    if (action === 'weights') return on.weights
    if (action === 'rollout') return on.rollout
    if (action === 'rollout-promote') return on.promote
    // A rollback goes back to what ran before: refusing it would keep the broken release in front.
    return false
  }
}

/** 412 BG_SMOKE_FAILED naming the failing checks, with the whole report as its details. */
export function smokeFailed(report: SmokeReport, retired = false): BlueGreenError {
  const failing = report.checks.filter((check) => !check.passed)
  const list = failing.map((check) => `${check.name}: ${check.problem}`).join('; ')
  const why = retired
    ? ` (its standby is over: it must pass its smoke checks again before it gets traffic)`
    : ''
  return new BlueGreenError(
    'BG_SMOKE_FAILED',
    `${failing.length} of ${report.checks.length} smoke check(s) failed on ${report.color}${why} (${list}); pass "force": true to send it traffic anyway`,
    report,
  )
}
