import type { AuditEvent, AuditTrail } from '../audit/audit.ts'
import type { RollbackConfig } from '../config/types.ts'
import { BlueGreenError } from '../errors.ts'
import type { Logger } from '../log.ts'
import type { SlidingWindows } from '../metrics/windows.ts'
import { activeFor, COLORS, type Color, type Rollout, type State, type StateChange } from '../state/state.ts'
import type { StateStore } from '../state/store.ts'
import type { WindowExchange } from './exchange.ts'
import { judge } from './judge.ts'

export interface ReleaseGuardOptions {
  config: RollbackConfig
  store: StateStore
  windows: SlidingWindows
  exchange: WindowExchange
  audit: AuditTrail
  logger: Logger
  replicaId: string
  /** The state this replica serves right now. */
  current: () => State | undefined
}

/** The color a change sent more traffic to, watched for `rollback.watch` from the moment it was applied. */
interface Watch {
  color: Color
  generation: number
  since: number
  until: number
}

/**
 * Decides inside the proxy, from the traffic itself, within seconds, whether a release is healthy:
 * - after any change that sends a color more traffic (except a rollback), that color is watched; if its error
 *   ratio or p99 passes the thresholds over at least `minRequests`, the change is rolled back;
 * - a running progressive rollout moves to its next step when the step's time is up and the thresholds hold,
 *   and is rolled back to where it started when they do not.
 * Every replica evaluates the figures pooled across replicas and acts through the store's compare-and-set on the
 * generation it judged, so a decision is made once per generation however many replicas reach it.
 */
export class ReleaseGuard {
  readonly #options: ReleaseGuardOptions
  readonly #timer: NodeJS.Timeout
  #watch: Watch | undefined
  #busy = false

  constructor(options: ReleaseGuardOptions) {
    this.#options = options
    this.#timer = setInterval(() => void this.#tick(), options.config.evaluateEvery)
    this.#timer.unref()
  }

  /** The app calls this with every state it applies. */
  stateApplied(previous: State | undefined, next: State): void {
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

  close(): void {
    clearInterval(this.#timer)
  }

  async #tick(): Promise<void> {
    if (this.#busy) return
    this.#busy = true
    try {
      const state = this.#options.current()
      if (!state) return
      if (state.rollout?.status === 'running') await this.#driveRollout(state, state.rollout)
      else if (this.#options.config.enabled) await this.#guardWatch(state)
    } catch (error) {
      this.#options.logger.warn({ err: error }, 'release guard could not evaluate')
    } finally {
      this.#busy = false
    }
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
    const figures = await this.#pooled(state.generation, watch.color, watch.since)
    const { verdict, summary } = judge(figures, this.#options.config)
    if (verdict !== 'failing') return
    const reason = `automatic rollback: ${watch.color} ${summary} over the last ${this.#options.config.window / 1000} s`
    const target = state.rollout ? state.rollout.from : await this.#previous()
    if (!target) return
    const rollout = state.rollout
      ? { ...state.rollout, status: 'rolled-back' as const, outcome: reason }
      : undefined
    await this.#change(state, { ...target, trigger: 'rollback', reason, rollout }, 'rollback')
  }

  async #driveRollout(state: State, rollout: Rollout): Promise<void> {
    const stepStart = Date.parse(rollout.stepStartedAt)
    const figures = await this.#pooled(state.generation, rollout.to, stepStart)
    const { verdict, summary } = judge(figures, this.#options.config)
    if (verdict === 'failing') {
      const reason = `rollout to ${rollout.to} rolled back at ${rollout.steps[rollout.step]}%: ${summary}`
      await this.#change(
        state,
        {
          ...rollout.from,
          trigger: 'rollback',
          reason,
          rollout: { ...rollout, status: 'rolled-back', outcome: reason },
        },
        'rollback',
      )
      return
    }
    if (Date.now() < stepStart + rollout.stepSeconds * 1000) return
    const step = rollout.step + 1
    const weight = rollout.steps[step]!
    const weights =
      rollout.to === 'blue' ? { blue: weight, green: 100 - weight } : { blue: 100 - weight, green: weight }
    const done = weight === 100
    const judged = verdict === 'undecided' ? `not enough traffic to judge (${summary})` : summary
    const reason = `rollout to ${rollout.to}: step ${step + 1}/${rollout.steps.length} (${weight}%) after ${judged}`
    const next: Rollout = {
      ...rollout,
      step,
      stepStartedAt: new Date().toISOString(),
      status: done ? 'completed' : 'running',
      ...(done ? { outcome: `completed: all traffic on ${rollout.to}` } : {}),
    }
    await this.#change(
      state,
      { active: activeFor(weights, state.active), weights, trigger: 'rollout', reason, rollout: next },
      'rollout',
    )
  }

  async #pooled(generation: number, color: Color, since: number) {
    const local = this.#options.windows.figures(color, since)
    return this.#options.exchange.pool(generation, color, local)
  }

  async #previous(): Promise<Pick<State, 'active' | 'weights'> | undefined> {
    const previous = await this.#options.store.previous()
    return previous ? { active: previous.active, weights: previous.weights } : undefined
  }

  /** One compare-and-set on the judged generation: of all replicas that reach the same decision, one makes it. */
  async #change(
    state: State,
    change: Omit<StateChange, 'updatedBy'>,
    action: AuditEvent['action'],
  ): Promise<void> {
    const updatedBy = `${change.trigger}@${this.#options.replicaId}`
    const { logger } = this.#options
    try {
      const next = await this.#options.store.change({ ...change, updatedBy }, state.generation)
      logger.warn(
        { generation: next.generation, active: next.active, weights: next.weights, reason: change.reason },
        `${action} made`,
      )
      this.#record(state, change, action, { result: 'accepted', generation: next.generation })
    } catch (error) {
      if (error instanceof BlueGreenError && error.code === 'BG_GENERATION_CONFLICT') {
        // Another replica decided first, or an operator changed the state: either way, nothing left to do here.
        logger.debug({ generation: state.generation }, `${action} already made elsewhere`)
        return
      }
      this.#record(state, change, action, {
        result: 'refused',
        code: error instanceof BlueGreenError ? error.code : 'BG_STATE_UNAVAILABLE',
        message: (error as Error).message,
      })
      throw error
    }
  }

  #record(
    from: State,
    change: Omit<StateChange, 'updatedBy'>,
    action: AuditEvent['action'],
    outcome: Pick<AuditEvent, 'result' | 'generation' | 'code' | 'message'>,
  ): void {
    const event: AuditEvent = {
      at: new Date().toISOString(),
      actor: 'bluegreen',
      address: this.#options.replicaId,
      action,
      from: { active: from.active, weights: from.weights, generation: from.generation },
      to: { active: change.active, weights: change.weights },
      reason: change.reason,
      ...outcome,
    }
    this.#options.audit.record(event).catch((error: unknown) => {
      this.#options.logger.error({ err: error, audit: event }, 'could not store an audit event')
    })
  }
}
