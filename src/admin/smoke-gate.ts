import type { ChangeAction } from '../audit/audit.ts'
import { COLORS, type Color, type Weights } from '../colors.ts'
import { BlueGreenError } from '../errors.ts'
import type { Metrics } from '../metrics/registry.ts'
import { runSmoke, type SmokeOptions, type SmokeReport } from '../proxy/smoke.ts'
import type { RoutingSnapshot } from '../routing/snapshot.ts'

export interface SmokeGateOptions {
  smoke: SmokeOptions
  metrics: Metrics
  snapshot: () => RoutingSnapshot | undefined
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

  async run(color: Color): Promise<SmokeReport> {
    const snapshot = this.#options.snapshot()
    if (!snapshot)
      throw new BlueGreenError('BG_STATE_UNAVAILABLE', 'the routing state has not been loaded yet')
    const report = await runSmoke(snapshot, color, this.#options.smoke)
    for (const check of report.checks) {
      this.#options.metrics.smokeChecks.inc({ color, result: check.passed ? 'pass' : 'fail' })
    }
    return report
  }

  /**
   * Runs the checks on every color the change gives more traffic than it has, when the config asks for them on
   * this action. Refuses (412) when one fails, unless forced; forced, it answers the gates gone past (["smoke"]),
   * so the audit trail can say so.
   */
  async require(action: ChangeAction, weights: Weights, from: Weights, force: boolean): Promise<string[]> {
    const { config } = this.#options.smoke
    if (config.checks.length === 0 || !this.#appliesTo(action)) return []
    for (const color of COLORS) {
      // Traffic moving away from a color puts nothing new at risk on it.
      if (weights[color] <= from[color]) continue
      const report = await this.run(color)
      if (report.passed) continue
      if (force) return ['smoke']
      const failing = report.checks.filter((check) => !check.passed)
      const list = failing.map((check) => `${check.name}: ${check.problem}`).join('; ')
      throw new BlueGreenError(
        'BG_SMOKE_FAILED',
        `${failing.length} of ${report.checks.length} smoke check(s) failed on ${color} (${list}); pass "force": true to send it traffic anyway`,
        report,
      )
    }
    return []
  }

  #appliesTo(action: ChangeAction): boolean {
    const { on } = this.#options.smoke.config
    if (action === 'switch') return on.switch
    if (action === 'weights') return on.weights
    if (action === 'rollout') return on.rollout
    // A rollback goes back to what ran before: refusing it would keep the broken release in front.
    return false
  }
}
