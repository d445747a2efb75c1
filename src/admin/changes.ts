import type { IncomingMessage } from 'node:http'
import type { AuditEvent, AuditTrail } from '../audit/audit.ts'
import {
  activeFor,
  allTo,
  COLORS,
  type Color,
  isColor,
  type Weights,
  weightsProblem,
  weightsWith,
} from '../colors.ts'
import type { PoolConfig } from '../config/types.ts'
import { BlueGreenError } from '../errors.ts'
import { probeAll } from '../health/probe.ts'
import type { Logger } from '../log.ts'
import type { RoutingSnapshot } from '../routing/snapshot.ts'
import { type Rollout, type State, stepsProblem, type Trigger } from '../state/state.ts'
import type { Commit, ReplicaRegistry, StateStore, WaitResult } from '../state/store.ts'
import { onlyFields, optionalBoolean, optionalGeneration, optionalString } from './http.ts'

export type Action = 'switch' | 'weights' | 'rollback' | 'rollout' | 'rollout-abort'

export interface ChangeOptions {
  store: StateStore
  replicas: ReplicaRegistry
  audit: AuditTrail
  pools: Readonly<Record<Color, PoolConfig>>
  snapshot: () => RoutingSnapshot | undefined
  waitTimeout: number
  logger: Logger
}

/** What a change request asks for, once its body has been checked. */
interface Request {
  target: { active: Color; weights: Weights }
  reason: string
  trigger: Trigger
  expectedGeneration: number | undefined
  force: boolean
  wait: boolean
  /** The rollout the new state belongs to; absent for a plain change, which ends any rollout. */
  rollout?: Rollout
}

export interface ChangeResult {
  state: State
  /** False when the change asked for the state already in force: nothing was stored, `state` is that state. */
  changed: boolean
  wait?: WaitResult
}

/**
 * Every change through the admin API takes one path: check the body, make sure the pools that would get traffic
 * can serve it (412 unless forced), commit it through the store's compare-and-set, record the attempt in the
 * audit trail whatever its outcome, and with `wait` answer only once every live replica has applied it. A change
 * to the state already in force is decided by the store against what it holds: answered with that state,
 * `changed: false`, and nothing stored, applied or watched.
 */
export class Changes {
  readonly #options: ChangeOptions

  constructor(options: ChangeOptions) {
    this.#options = options
  }

  async run(
    action: Action,
    tokenName: string | undefined,
    req: IncomingMessage,
    body: Record<string, unknown> | Error,
  ): Promise<ChangeResult> {
    const address = req.socket.remoteAddress ?? 'unknown'
    // The audit trail names the token; the state says who and from where, as it always has.
    const actor = tokenName === undefined ? address : `token:${tokenName}`
    const updatedBy = `${tokenName ?? 'admin'}@${address}`
    const from = this.#options.snapshot()?.state
    let request: Request | undefined
    let committed: Commit
    try {
      if (body instanceof Error) throw body
      if (!from)
        throw new BlueGreenError('BG_STATE_UNAVAILABLE', 'the routing state has not been loaded yet', 503)
      request = await this.#parse(action, body, from)
      if (!request.force) await this.#requireHealthy(request.target.weights, from)
      committed = await this.#options.store.commit(
        {
          ...request.target,
          reason: request.reason,
          trigger: request.trigger,
          updatedBy,
          ...(request.rollout ? { rollout: request.rollout } : {}),
        },
        request.expectedGeneration,
      )
    } catch (error) {
      const code = error instanceof BlueGreenError ? error.code : 'BG_STATE_UNAVAILABLE'
      this.#record(action, actor, req, from, request ?? givenReason(body), {
        result: 'refused',
        code,
        message: (error as Error).message,
      })
      throw error
    }
    const { state, changed } = committed
    this.#record(action, actor, req, from, request, {
      result: changed ? 'accepted' : 'unchanged',
      generation: state.generation,
    })
    if (!request.wait) return { state, changed }
    // Unchanged, the state asked for is the one in force: waiting for its generation says whether every replica
    // serves it.
    return { state, changed, wait: await this.#wait(state) }
  }

  /** Records a call refused before it reached the change logic (authentication, Host or Origin). */
  refused(action: Action, req: IncomingMessage, error: BlueGreenError): void {
    const actor = req.socket.remoteAddress ?? 'unknown'
    this.#record(action, actor, req, this.#options.snapshot()?.state, undefined, {
      result: 'refused',
      code: error.code,
      message: error.message,
    })
  }

  async #parse(action: Action, body: Record<string, unknown>, from: State): Promise<Request> {
    const common = ['expectedGeneration', 'force', 'wait', 'reason']
    const options = () => ({
      expectedGeneration: optionalGeneration(body),
      force: optionalBoolean(body, 'force') ?? false,
      wait: optionalBoolean(body, 'wait') ?? false,
      given: optionalString(body, 'reason'),
    })
    if (action === 'switch') {
      onlyFields(body, ['to', ...common])
      if (!isColor(body.to)) {
        throw new BlueGreenError(
          'BG_UNKNOWN_COLOR',
          `"to" must be "blue" or "green", got ${JSON.stringify(body.to)}`,
          400,
        )
      }
      const { given, ...rest } = options()
      return {
        target: { active: body.to, weights: allTo(body.to) },
        reason: given ?? `switch to ${body.to}`,
        trigger: 'admin',
        ...rest,
      }
    }
    if (action === 'weights') {
      onlyFields(body, ['blue', 'green', ...common])
      const weights = { blue: body.blue, green: body.green }
      const problem = weightsProblem(weights)
      if (problem) throw new BlueGreenError('BG_INVALID_WEIGHTS', problem, 400)
      const valid = weights as Weights
      const { given, ...rest } = options()
      return {
        target: { active: activeFor(valid, from.active), weights: valid },
        reason: given ?? `weights blue ${valid.blue} / green ${valid.green}`,
        trigger: 'admin',
        ...rest,
      }
    }
    if (action === 'rollout') return this.#rollout(body, from, options)
    if (action === 'rollout-abort') {
      onlyFields(body, ['reason', 'wait', 'expectedGeneration'])
      const rollout = from.rollout
      if (rollout?.status !== 'running') {
        throw new BlueGreenError('BG_NO_ROLLOUT', 'there is no rollout running to abort', 409)
      }
      const { given, expectedGeneration, wait } = options()
      const reason = given ?? `rollout to ${rollout.to} aborted at ${rollout.steps[rollout.step]}%`
      return {
        target: rollout.from,
        reason,
        trigger: 'rollout',
        // Back to where it started, which carried traffic a moment ago: nothing to probe.
        force: true,
        wait,
        expectedGeneration: expectedGeneration ?? from.generation,
        rollout: { ...rollout, status: 'aborted', outcome: reason },
      }
    }
    onlyFields(body, common)
    const { given, expectedGeneration, ...rest } = options()
    // During or right after a rollout, a rollback undoes the whole rollout, not just its last step.
    if (from.rollout && (from.rollout.status === 'running' || from.rollout.status === 'completed')) {
      const reason = given ?? `rollback of the rollout to ${from.rollout.to}`
      return {
        target: from.rollout.from,
        reason,
        trigger: 'rollback',
        expectedGeneration: expectedGeneration ?? from.generation,
        rollout: { ...from.rollout, status: 'rolled-back', outcome: reason },
        ...rest,
      }
    }
    let previous: State | undefined
    try {
      previous = await this.#options.store.previous()
    } catch (error) {
      throw new BlueGreenError(
        'BG_STATE_UNAVAILABLE',
        `cannot read the previous state: ${(error as Error).message}`,
        503,
      )
    }
    if (!previous) {
      const why =
        from.generation === 0
          ? 'there has been no change to roll back'
          : `there is no earlier routing to roll back to: the state before generation ${from.generation} is not known (an older version stored a repeated change in its place, or the store lost it); switch or set the weights instead`
      throw new BlueGreenError('BG_NO_PREVIOUS_STATE', why, 409)
    }
    return {
      target: { active: previous.active, weights: previous.weights },
      reason: given ?? `rollback to generation ${previous.generation}`,
      trigger: 'rollback',
      // The previous state belongs to the generation read here: a change in between makes the rollback stale.
      expectedGeneration: expectedGeneration ?? from.generation,
      ...rest,
    }
  }

  /** POST /rollout: the first step now; the release guard takes it from there (src/rollout/guard.ts). */
  #rollout(
    body: Record<string, unknown>,
    from: State,
    options: () => {
      expectedGeneration: number | undefined
      force: boolean
      wait: boolean
      given: string | undefined
    },
  ): Request {
    onlyFields(body, ['to', 'steps', 'stepSeconds', 'expectedGeneration', 'force', 'wait', 'reason'])
    if (!isColor(body.to)) {
      throw new BlueGreenError(
        'BG_UNKNOWN_COLOR',
        `"to" must be "blue" or "green", got ${JSON.stringify(body.to)}`,
        400,
      )
    }
    const to: Color = body.to
    const problem = stepsProblem(body.steps)
    if (problem) throw new BlueGreenError('BG_BAD_REQUEST', problem, 400)
    const steps = body.steps as number[]
    const { stepSeconds } = body
    if (
      typeof stepSeconds !== 'number' ||
      !Number.isInteger(stepSeconds) ||
      stepSeconds < 1 ||
      stepSeconds > 86_400
    ) {
      throw new BlueGreenError(
        'BG_BAD_REQUEST',
        'stepSeconds must be a whole number of seconds from 1 to 86400',
        400,
      )
    }
    if (from.rollout?.status === 'running') {
      throw new BlueGreenError(
        'BG_ROLLOUT_RUNNING',
        `a rollout to ${from.rollout.to} is running (step ${from.rollout.step + 1}/${from.rollout.steps.length}); abort it first`,
        409,
      )
    }
    if (steps[0]! <= from.weights[to]) {
      throw new BlueGreenError(
        'BG_BAD_REQUEST',
        `the first step must be above ${to}'s weight now (${from.weights[to]})`,
        400,
      )
    }
    const { given, ...rest } = options()
    const first = steps[0]!
    const weights = weightsWith(to, first)
    const now = new Date().toISOString()
    const done = first === 100
    return {
      target: { active: activeFor(weights, from.active), weights },
      reason: given ?? `rollout to ${to}: step 1/${steps.length} (${first}%)`,
      trigger: 'rollout',
      ...rest,
      rollout: {
        to,
        steps,
        stepSeconds,
        step: 0,
        status: done ? 'completed' : 'running',
        from: { active: from.active, weights: from.weights },
        startedAt: now,
        stepStartedAt: now,
        ...(done ? { outcome: `completed: all traffic on ${to}` } : {}),
      },
    }
  }

  /** Refuses (412) to send traffic to a pool none of whose upstreams answers a probe, unless forced. */
  async #requireHealthy(weights: Weights, from: State): Promise<void> {
    const snapshot = this.#options.snapshot()
    for (const color of COLORS) {
      if (weights[color] === 0) continue
      // A pool that already carries traffic is not what a change puts at risk.
      if (from.weights[color] > 0) continue
      // The snapshot holds the upstreams that may get traffic: failing active health checks or ejected, they are left out.
      const upstreams = snapshot?.pools[color].upstreams ?? []
      if (upstreams.length === 0) {
        const configured = this.#options.pools[color].upstreams.length
        const why =
          configured === 0
            ? `the ${color} pool has no upstream`
            : `none of the ${configured} upstream(s) of the ${color} pool is available (failing its health checks, or ejected)`
        throw new BlueGreenError(
          'BG_TARGET_UNHEALTHY',
          `${why}; pass "force": true to send it traffic anyway`,
          412,
        )
      }
      const results = await probeAll(upstreams, this.#options.pools[color].healthCheck)
      if (!results.some((result) => result.up)) {
        const details = results.map((result) => `${result.upstream} ${result.detail}`).join(', ')
        throw new BlueGreenError(
          'BG_TARGET_UNHEALTHY',
          `no upstream of the ${color} pool answered its health probe (${details}); pass "force": true to send it traffic anyway`,
          412,
          { probes: results },
        )
      }
    }
  }

  async #wait(state: State): Promise<WaitResult> {
    try {
      return await this.#options.replicas.waitFor(state.generation, this.#options.waitTimeout)
    } catch (error) {
      throw new BlueGreenError(
        'BG_STATE_UNAVAILABLE',
        `the change was made (generation ${state.generation}) but the replicas could not be checked: ${(error as Error).message}`,
        503,
      )
    }
  }

  #record(
    action: Action,
    actor: string,
    req: IncomingMessage,
    from: State | undefined,
    /** The checked request, or for a body refused as invalid just the reason it gave, if any. */
    request: Request | { reason: string } | undefined,
    outcome: Pick<AuditEvent, 'result' | 'generation' | 'code' | 'message'>,
  ): void {
    const event: AuditEvent = {
      at: new Date().toISOString(),
      actor,
      address: req.socket.remoteAddress ?? 'unknown',
      action,
      from: from ? { active: from.active, weights: from.weights, generation: from.generation } : null,
      to: request && 'target' in request ? request.target : null,
      reason: request?.reason ?? '',
      ...outcome,
    }
    if (event.result === 'refused') this.#options.logger.warn({ audit: event }, `${action} refused`)
    else this.#options.logger.info({ audit: event }, `${action} ${event.result}`)
    // The trail is a record, not a gate: a store that cannot take it must not turn a made change into an error.
    this.#options.audit.record(event).catch((error: unknown) => {
      this.#options.logger.error({ err: error, audit: event }, 'could not store an audit event')
    })
  }
}

/** The reason a refused body gave, when it is a plain string: why someone tried is worth keeping even then. */
function givenReason(body: Record<string, unknown> | Error): { reason: string } | undefined {
  if (body instanceof Error) return undefined
  const reason = body.reason
  return typeof reason === 'string' ? { reason: reason.slice(0, 500) } : undefined
}
