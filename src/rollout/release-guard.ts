import {
  type AuditTrail,
  type ChangeAction,
  type JudgedFigures,
  type Outcome,
  recordAttempt,
  refusal,
} from '../audit/audit.ts'
import { COLORS, type Color } from '../colors.ts'
import type { RollbackConfig, RolloutConfig } from '../config/types.ts'
import { BlueGreenError } from '../errors.ts'
import type { Logger } from '../log.ts'
import type { SlidingWindows } from '../metrics/windows.ts'
import { inProgress, onlyMirrorChanged, type Rollout, type State } from '../state/state.ts'
import type { StateStore } from '../state/store.ts'
import type { WindowExchange } from './exchange.ts'
import { judge, outageOver } from './judge.ts'
import { type Decision, onEvaluation, stepEndsAt, type Transition, undoesRollout } from './machine.ts'
import { SmokeHolds, type SmokeHoldsOptions, type StepHold } from './smoke-holds.ts'

export interface ReleaseGuardOptions {
  config: RollbackConfig
  rollout: RolloutConfig
  store: StateStore
  windows: SlidingWindows
  exchange: WindowExchange
  audit: AuditTrail
  logger: Logger
  replicaId: string
  /** The state this replica serves right now. */
  current: () => State | undefined
  /** Since when this replica has seen no available upstream for the color (UpstreamHealth.unavailableSince). */
  unavailableSince: (color: Color) => number | undefined
  /** The smoke checks before a step and before an automatic rollback to a retired color (smoke-holds.ts). */
  smoke?: SmokeHoldsOptions['smoke']
  retiredSmoke?: SmokeHoldsOptions['retiredSmoke']
  /** Claims what every replica's guard finds, so that one replica audits it (src/state/claims.ts). */
  claim?: SmokeHoldsOptions['claim']
}

/** The color a change sent more traffic to, watched for `rollback.watch` from the moment it was applied. */
interface Watch {
  color: Color
  generation: number
  since: number
  until: number
}

/** What this replica made of the running rollout's current step at its last evaluation, for GET /state. */
export interface RolloutStepStatus {
  generation: number
  /** When the step's time is up (ISO time). */
  endsAt: string
  /** The step's figures in words: "12 of 50 requests" while too few to judge. */
  figures: string
  /**
   * While the step is held past its time, what it waits for: traffic ("12 of 50 requests") or its smoke checks
   * ("smoke checks passing on green (...)"); else null.
   */
  waitingFor: string | null
  /** Why the step is held, while it is: too little traffic to judge, or failing smoke checks. */
  heldBy?: 'traffic' | 'smoke'
}

/**
 * Decides inside the proxy, from the traffic itself, within seconds, whether a release is healthy:
 * - after any change that sends a color more traffic (except a rollback), that color is watched; if its error
 *   ratio or p99 passes the thresholds over at least `minRequests`, the change is rolled back;
 * - a running progressive rollout moves to its next step when the step's time is up and the thresholds hold
 *   (a step too quiet to judge holds, unless `rollout.onLowTraffic` is proceed), and is rolled back to where it
 *   started when they do not; a paused one does not move on, but is still rolled back;
 * - either is rolled back at once, traffic or not, when the color it sends traffic to has had no available upstream
 *   for `rollback.unavailableFor`: every request to it would get the proxy's own 503.
 * Every replica evaluates the figures pooled across replicas and acts through the store's compare-and-set on the
 * generation it judged, so a decision is made once per generation however many replicas reach it. Upstream health
 * is each replica's own: one that sees the color with no upstream rolls back for all, since the rollback only
 * returns traffic to the state before, and its own share of users is getting 503 meanwhile.
 */
export class ReleaseGuard {
  #options: ReleaseGuardOptions
  #timer: NodeJS.Timeout
  #watch: Watch | undefined
  #step: RolloutStepStatus | undefined
  readonly #holds: SmokeHolds
  #busy = false
  /** The last evaluation failed (see #failedToEvaluate). */
  #failing = false

  constructor(options: ReleaseGuardOptions) {
    this.#options = options
    const { logger, smoke, retiredSmoke, claim } = options
    this.#holds = new SmokeHolds({ logger, smoke, retiredSmoke, claim })
    this.#timer = setInterval(() => void this.#tick(), options.config.evaluateEvery)
    this.#timer.unref()
  }

  /**
   * A reload's rollback and rollout settings, used from the next evaluation on; a change being watched goes on
   * being watched, judged by the new thresholds.
   */
  reconfigure(config: RollbackConfig, rollout: RolloutConfig): void {
    const every = this.#options.config.evaluateEvery
    this.#options = { ...this.#options, config, rollout }
    if (config.evaluateEvery === every) return
    clearInterval(this.#timer)
    this.#timer = setInterval(() => void this.#tick(), config.evaluateEvery)
    this.#timer.unref()
  }

  /** The app calls this with every state it applies. */
  stateApplied(previous: State | undefined, next: State): void {
    // Turning the mirror on or off moves no traffic: the watch of the last change goes on, on the new generation.
    if (previous && this.#watch && onlyMirrorChanged(previous, next)) {
      this.#watch = { ...this.#watch, generation: next.generation }
      return
    }
    this.#watch = undefined
    if (!previous || next.trigger === 'rollback') return
    const gained = COLORS.find((color) => next.weights[color] > previous.weights[color])
    if (!gained) return
    const since = Date.now()
    this.#watch = {
      color: gained,
      generation: next.generation,
      since,
      until: since + this.#options.config.watch,
    }
  }

  /** What is being watched, for GET /state. */
  status(): { color: Color; generation: number; until: string } | undefined {
    const watch = this.#watch
    if (!watch || Date.now() > watch.until) return undefined
    return { color: watch.color, generation: watch.generation, until: new Date(watch.until).toISOString() }
  }

  /** The running rollout's current step as this replica last judged it, for GET /state. */
  rolloutStep(): RolloutStepStatus | undefined {
    const step = this.#step
    const state = this.#options.current()
    if (!step || state?.generation !== step.generation || state.rollout?.status !== 'running')
      return undefined
    return step
  }

  close(): void {
    clearInterval(this.#timer)
  }

  async #tick(): Promise<void> {
    if (this.#busy) return
    this.#busy = true
    try {
      const state = this.#options.current()
      if (!state) return
      if (state.rollout && inProgress(state.rollout)) await this.#driveRollout(state, state.rollout)
      else if (this.#options.config.enabled) await this.#guardWatch(state)
      this.#evaluated()
    } catch (error) {
      this.#failedToEvaluate(error)
    } finally {
      this.#busy = false
    }
  }

  /**
   * A store outage fails every evaluation (each second or so): say so once, and once when evaluating works again;
   * the store says why in its own line.
   */
  #failedToEvaluate(error: unknown): void {
    const level = this.#failing ? 'debug' : 'warn'
    this.#failing = true
    this.#options.logger[level]({ err: error }, 'release guard could not evaluate')
  }

  #evaluated(): void {
    if (!this.#failing) return
    this.#failing = false
    this.#options.logger.info('release guard evaluating again')
  }

  async #guardWatch(state: State): Promise<void> {
    const watch = this.#watch
    if (!watch || watch.generation !== state.generation) return
    if (Date.now() > watch.until) {
      this.#options.logger.info(
        { color: watch.color, generation: watch.generation },
        'watch over: the change held',
      )
      this.#watch = undefined
      return
    }
    let why = this.#outage(watch.color, watch.since)
    let judged: JudgedFigures | undefined
    if (why === undefined) {
      const figures = await this.#combined(state.generation, watch.color, watch.since)
      const verdict = judge(figures, this.#options.config)
      if (verdict.verdict !== 'failing') return
      why = `${watch.color} ${verdict.summary} over the last ${this.#options.config.window / 1000} s`
      judged = verdict.figures
    }
    const previous = undoesRollout(state) ? undefined : await this.#previous()
    const decision = onEvaluation(state, { type: 'failing', why, previous }, Date.now())
    if (decision.kind === 'change') {
      const refuse = (error: BlueGreenError) =>
        this.#record(state, decision.change, decision.action, refusal(error))
      if (await this.#holds.refusesRollback(state, decision, refuse)) return
    }
    await this.#act(state, decision, judged)
  }

  async #driveRollout(state: State, rollout: Rollout): Promise<void> {
    // Counted from the rollout's start, not the step's: steps moving on must not reset the clock of an outage.
    const outage = this.#outage(rollout.to, Date.parse(rollout.startedAt))
    if (outage !== undefined) {
      await this.#act(state, onEvaluation(state, { type: 'failing', why: outage }, Date.now()))
      return
    }
    const figures = await this.#combined(state.generation, rollout.to, Date.parse(rollout.stepStartedAt))
    const verdict = judge(figures, this.#options.config)
    const { onLowTraffic } = this.#options.rollout
    const decision = onEvaluation(state, { type: 'step-judged', verdict, onLowTraffic }, Date.now())
    this.#noteStep(state.generation, stepEndsAt(rollout), verdict.summary, decision.kind === 'hold')
    if (decision.kind === 'change') {
      // Its smoke checks first, when the step gives the color more traffic: failing, the step holds at its weight,
      // shown in GET /state's rolloutStep; it can still be rolled back, aborted, or promoted by an operator.
      const refuse = (error: BlueGreenError) =>
        this.#record(state, decision.change, decision.action, refusal(error))
      const hold = await this.#holds.beforeStep(state, rollout, decision, refuse)
      if (hold) return this.#showHold(hold)
    }
    // The figures go with a rollback they caused, so its audit event and notification carry them.
    await this.#act(state, decision, verdict.verdict === 'failing' ? verdict.figures : undefined)
  }

  #showHold(hold: StepHold): void {
    if (this.#step?.generation === hold.generation)
      this.#step = { ...this.#step, waitingFor: hold.failing, heldBy: 'smoke' }
  }

  /** The reason to roll back when the color has had no available upstream for too long; undefined otherwise. */
  #outage(color: Color, watchedSince: number): string | undefined {
    const limit = this.#options.config.unavailableFor
    if (!outageOver(this.#options.unavailableSince(color), watchedSince, Date.now(), limit)) return undefined
    return `${color} had no available upstream for ${limit / 1000} s`
  }

  /** Keeps what /state shows of the step; says once in the log when a step starts holding. */
  #noteStep(generation: number, stepEnd: number, figures: string, holding: boolean): void {
    const before = this.#step
    const wasHolding = before?.generation === generation && before.waitingFor !== null
    this.#step = {
      generation,
      endsAt: new Date(stepEnd).toISOString(),
      figures,
      waitingFor: holding ? figures : null,
      ...(holding ? { heldBy: 'traffic' as const } : {}),
    }
    if (holding && !wasHolding) {
      this.#options.logger.info(
        { generation, figures },
        'rollout step held: too little traffic to judge (rollout.onLowTraffic: hold)',
      )
    }
  }

  async #combined(generation: number, color: Color, since: number) {
    const local = this.#options.windows.figures(color, since)
    return this.#options.exchange.combine(generation, color, local)
  }

  async #previous(): Promise<Pick<State, 'active' | 'weights'> | undefined> {
    const previous = await this.#options.store.previous()
    return previous ? { active: previous.active, weights: previous.weights } : undefined
  }

  /** One compare-and-set on the judged generation: of all replicas that reach the same decision, one makes it. */
  async #act(state: State, decision: Decision, figures?: JudgedFigures): Promise<void> {
    if (decision.kind !== 'change') return
    const { action, change } = decision
    const updatedBy = `${change.trigger}@${this.#options.replicaId}`
    const { logger } = this.#options
    try {
      const next = await this.#options.store.change({ ...change, updatedBy }, state.generation)
      logger.warn(
        { generation: next.generation, active: next.active, weights: next.weights, reason: change.reason },
        `${action} made`,
      )
      this.#record(state, change, action, { result: 'accepted', generation: next.generation }, figures)
    } catch (error) {
      if (error instanceof BlueGreenError && error.code === 'BG_GENERATION_CONFLICT') {
        // Another replica decided first, or an operator changed the state: either way, nothing left to do here.
        logger.debug({ generation: state.generation }, `${action} already made elsewhere`)
        return
      }
      this.#record(state, change, action, refusal(error), figures)
      throw error
    }
  }

  #record(
    from: State,
    change: Transition,
    action: ChangeAction,
    outcome: Outcome,
    figures?: JudgedFigures,
  ): void {
    const { audit, logger, replicaId } = this.#options
    const attempt = {
      actor: 'bluegreen',
      address: replicaId,
      action,
      from,
      to: change,
      reason: change.reason,
      ...(figures ? { figures } : {}),
    }
    // Logged above, as what it made.
    recordAttempt(audit, logger, { ...attempt, outcome }, { logged: false })
  }
}
