import type { Color } from '../colors.ts'
import { BlueGreenError } from '../errors.ts'
import type { Logger } from '../log.ts'
import type { SmokeReport } from '../proxy/smoke.ts'
import { standbyOver } from '../state/standby.ts'
import type { Rollout, State } from '../state/state.ts'
import type { Decision } from './machine.ts'

// The smoke checks as the release guard meets them: before a rollout's next step, and before an automatic rollback
// to a color whose standby is over. Every replica's guard runs them (each decides for itself whether to go on, and
// a change is made once, through compare-and-set), but what they hold or refuse is one event for the fleet: audited
// (and so notified, as `smoke-failed`) only by the replica that claims it (src/state/claims.ts).

/** How soon a step held, or a rollback refused, by failing smoke checks runs them again. */
export const SMOKE_RETRY_MS = 5_000

export interface SmokeHoldsOptions {
  logger: Logger
  /** Runs the smoke checks on a color before a rollout's next step (smoke.on.rolloutStep); none when undefined. */
  smoke?: (color: Color) => Promise<SmokeReport>
  /**
   * Runs the smoke checks on a color whose standby is over, before an automatic rollback gives it traffic again (it
   * may have been scaled down; an operator's rollback runs them too); none when undefined (no checks configured).
   */
  retiredSmoke?: (color: Color) => Promise<SmokeReport>
  /** Claims `id` for this replica: true when no other replica has. Undefined: always this one (a single process). */
  claim?: (id: string) => Promise<boolean>
}

/** A rollout step held because its color failed its smoke checks: what it waits for, as GET /state says it. */
export interface StepHold {
  generation: number
  failing: string
}

type Change = Extract<Decision, { kind: 'change' }>

/** Audits a refusal as the guard does its decisions (with the state it judged and the change refused). */
type Refuse = (error: BlueGreenError) => void

export class SmokeHolds {
  readonly #options: SmokeHoldsOptions
  /** The step run held (stepKey), and when to run the checks again. */
  #step: (StepHold & { key: string; retryAt: number }) | undefined
  #retired: { key: string; retryAt: number } | undefined

  constructor(options: SmokeHoldsOptions) {
    this.#options = options
  }

  /**
   * Before a step that gives the rollout's color more traffic (the time was up, a pause ended, an automatic
   * promote): the hold when its checks fail (the step stays at its weight; they run again every SMOKE_RETRY_MS),
   * undefined when it may move on. The hold is audited once per step run as a refused `rollout`.
   */
  async beforeStep(
    state: State,
    rollout: Rollout,
    decision: Change,
    refuse: Refuse,
  ): Promise<StepHold | undefined> {
    const { smoke, logger } = this.#options
    if (!smoke || decision.change.weights[rollout.to] <= state.weights[rollout.to]) return undefined
    const held = this.#step
    const key = stepKey(rollout)
    const sameStep = held?.key === key
    if (sameStep && Date.now() < held.retryAt) return { generation: state.generation, failing: held.failing }
    const report = await smoke(rollout.to)
    if (report.passed) {
      this.#step = undefined
      return undefined
    }
    const failed = failures(report)
    const failing = `smoke checks passing on ${rollout.to} (${failed.length} of ${report.checks.length} failing: ${failed.join('; ')})`
    this.#step = { key, generation: state.generation, retryAt: Date.now() + SMOKE_RETRY_MS, failing }
    if (!sameStep) {
      logger.warn({ generation: state.generation, color: rollout.to }, `rollout step held: ${failing}`)
      if (await this.#claimOnce(`rollout-smoke-hold-${key}`, state.generation)) {
        refuse(new BlueGreenError('BG_SMOKE_FAILED', `the rollout's next step waits for ${failing}`, report))
      }
    }
    return { generation: state.generation, failing }
  }

  /**
   * Before an automatic rollback to the color on standby once its standby is over (keepFor shorter than
   * rollback.watch): true when its checks fail and the rollback is not to be made now. Refused, it is audited once
   * for the fleet and tried again every SMOKE_RETRY_MS while the watch lasts.
   */
  async refusesRollback(state: State, decision: Change, refuse: Refuse): Promise<boolean> {
    const { retiredSmoke, logger } = this.#options
    const standby = state.standby
    if (!retiredSmoke || !standby || !standbyOver(standby, Date.now())) return false
    if (decision.change.weights[standby.color] <= state.weights[standby.color]) return false
    // The standby names the change being watched, whatever mirror changes came since.
    const key = `rollback-retired-${standby.color}-${standby.since}`
    const refused = this.#retired
    if (refused?.key === key && Date.now() < refused.retryAt) return true
    const report = await retiredSmoke(standby.color)
    if (report.passed) {
      this.#retired = undefined
      return false
    }
    this.#retired = { key, retryAt: Date.now() + SMOKE_RETRY_MS }
    if (refused?.key === key) return true
    const failed = failures(report)
    const message = `${failed.length} of ${report.checks.length} smoke check(s) failed on ${standby.color} (its standby is over: it must pass its smoke checks again before it gets traffic) (${failed.join('; ')}); the automatic rollback waits for them`
    logger.warn({ generation: state.generation, color: standby.color }, message)
    if (await this.#claimOnce(key, state.generation))
      refuse(new BlueGreenError('BG_SMOKE_FAILED', message, report))
    return true
  }

  /** Whether this replica is the one to audit what every replica's guard finds: `id` names it. */
  async #claimOnce(id: string, generation: number): Promise<boolean> {
    const { claim, logger } = this.#options
    if (!claim) return true
    try {
      const won = await claim(id)
      if (!won) logger.debug({ id, generation }, 'audited by another replica')
      return won
    } catch (error) {
      // Unclaimed, it is still worth a line in the trail: one per replica rather than none.
      logger.debug({ err: error, id, generation }, 'cannot claim it; auditing it here')
      return true
    }
  }
}

/**
 * One run of one step of one rollout, the same on every replica: the rollout's start, the step, and when the step
 * (re)started (a resume starts it again). A change that moves no traffic (a mirror setting) makes a new generation
 * but not a new step run, so a hold goes on without being audited again.
 */
function stepKey(rollout: Rollout): string {
  return `${rollout.startedAt}-s${rollout.step}-${rollout.stepStartedAt}`
}

function failures(report: SmokeReport): string[] {
  return report.checks.filter((check) => !check.passed).map((check) => `${check.name}: ${check.problem}`)
}
