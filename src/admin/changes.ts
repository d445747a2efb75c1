import type { IncomingMessage } from 'node:http'
import { type AuditTrail, type ChangeAction, type Outcome, recordAttempt, refusal } from '../audit/audit.ts'
import type { PoolConfig } from '../config/types.ts'
import { BlueGreenError } from '../errors.ts'
import { probeAll } from '../health/probe.ts'
import type { Logger } from '../log.ts'
import { onRequest, type Transition, undoesRollout } from '../rollout/machine.ts'
import type { RoutingSnapshot } from '../routing/snapshot.ts'
import {
  activeFor,
  allTo,
  COLORS,
  type Color,
  isColor,
  type State,
  stepsProblem,
  type Weights,
  weightsProblem,
} from '../state/state.ts'
import type { Commit, ReplicaRegistry, StateStore, WaitResult } from '../state/store.ts'
import { onlyFields, optionalBoolean, optionalGeneration, optionalString } from './http.ts'

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
  /** What to commit; without a rollout for a plain change, which ends any rollout. */
  change: Transition
  expectedGeneration: number | undefined
  force: boolean
  wait: boolean
}

/** The options every change body may carry; `given` is the reason it gave, if any. */
interface Options {
  expectedGeneration: number | undefined
  force: boolean
  wait: boolean
  given: string | undefined
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
    action: ChangeAction,
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
      if (!request.force) await this.#requireHealthy(request.change.weights, from)
      committed = await this.#options.store.commit(
        { ...request.change, updatedBy },
        request.expectedGeneration,
      )
    } catch (error) {
      this.#record(action, actor, req, from, request?.change ?? givenReason(body), refusal(error))
      throw error
    }
    const { state, changed } = committed
    this.#record(action, actor, req, from, request.change, {
      result: changed ? 'accepted' : 'unchanged',
      generation: state.generation,
    })
    if (!request.wait) return { state, changed }
    // Unchanged, the state asked for is the one in force: waiting for its generation says whether every replica
    // serves it.
    return { state, changed, wait: await this.#wait(state) }
  }

  /** Records a call refused before it reached the change logic (authentication, Host or Origin). */
  refused(action: ChangeAction, req: IncomingMessage, error: BlueGreenError): void {
    const actor = req.socket.remoteAddress ?? 'unknown'
    this.#record(action, actor, req, this.#options.snapshot()?.state, undefined, refusal(error))
  }

  async #parse(action: ChangeAction, body: Record<string, unknown>, from: State): Promise<Request> {
    switch (action) {
      case 'switch':
        return switchRequest(body)
      case 'weights':
        return weightsRequest(body, from)
      case 'rollout':
        return rolloutRequest(body, from)
      case 'rollout-abort':
        return abortRequest(body, from)
      case 'rollback':
        return this.#rollbackRequest(body, from)
    }
  }

  /** POST /rollback: during or right after a rollout, the whole rollout is undone, not just its last step. */
  async #rollbackRequest(body: Record<string, unknown>, from: State): Promise<Request> {
    onlyFields(body, COMMON_FIELDS)
    const { given, expectedGeneration, ...rest } = optionsIn(body)
    // Otherwise it returns to the state before the one in force, which only the store knows.
    const previous = undoesRollout(from, 'operator') ? undefined : await this.#previous()
    return {
      change: onRequest(from, { type: 'rollback', reason: given, previous }, Date.now()),
      // What it returns to belongs to the generation read here: a change in between makes the rollback stale.
      expectedGeneration: expectedGeneration ?? from.generation,
      ...rest,
    }
  }

  async #previous(): Promise<State | undefined> {
    try {
      return await this.#options.store.previous()
    } catch (error) {
      throw new BlueGreenError(
        'BG_STATE_UNAVAILABLE',
        `cannot read the previous state: ${(error as Error).message}`,
        503,
      )
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
    action: ChangeAction,
    actor: string,
    req: IncomingMessage,
    from: State | undefined,
    /** The change asked for, or for a body refused as invalid just the reason it gave, if any. */
    asked: Transition | { reason: string } | undefined,
    outcome: Outcome,
  ): void {
    const address = req.socket.remoteAddress ?? 'unknown'
    const to = asked && 'active' in asked ? asked : undefined
    const reason = asked?.reason ?? ''
    recordAttempt(this.#options.audit, this.#options.logger, {
      actor,
      address,
      action,
      from,
      to,
      reason,
      outcome,
    })
  }
}

/** The reason a refused body gave, when it is a plain string: why someone tried is worth keeping even then. */
function givenReason(body: Record<string, unknown> | Error): { reason: string } | undefined {
  if (body instanceof Error) return undefined
  const reason = body.reason
  return typeof reason === 'string' ? { reason: reason.slice(0, 500) } : undefined
}

const COMMON_FIELDS = ['expectedGeneration', 'force', 'wait', 'reason']

function optionsIn(body: Record<string, unknown>): Options {
  return {
    expectedGeneration: optionalGeneration(body),
    force: optionalBoolean(body, 'force') ?? false,
    wait: optionalBoolean(body, 'wait') ?? false,
    given: optionalString(body, 'reason'),
  }
}

/** POST /switch: all traffic to one color. */
function switchRequest(body: Record<string, unknown>): Request {
  onlyFields(body, ['to', ...COMMON_FIELDS])
  const to = colorIn(body)
  const { given, ...rest } = optionsIn(body)
  const change: Transition = {
    active: to,
    weights: allTo(to),
    reason: given ?? `switch to ${to}`,
    trigger: 'admin',
  }
  return { change, ...rest }
}

/** POST /weights: a weighted split; the color with the larger share is reported active. */
function weightsRequest(body: Record<string, unknown>, from: State): Request {
  onlyFields(body, ['blue', 'green', ...COMMON_FIELDS])
  const weights = { blue: body.blue, green: body.green }
  const problem = weightsProblem(weights)
  if (problem) throw new BlueGreenError('BG_INVALID_WEIGHTS', problem, 400)
  const valid = weights as Weights
  const { given, ...rest } = optionsIn(body)
  const change: Transition = {
    active: activeFor(valid, from.active),
    weights: valid,
    reason: given ?? `weights blue ${valid.blue} / green ${valid.green}`,
    trigger: 'admin',
  }
  return { change, ...rest }
}

/** POST /rollout: the first step now; the release guard takes it from there (src/rollout/release-guard.ts). */
function rolloutRequest(body: Record<string, unknown>, from: State): Request {
  onlyFields(body, ['to', 'steps', 'stepSeconds', ...COMMON_FIELDS])
  const to = colorIn(body)
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
  const { given, ...rest } = optionsIn(body)
  const change = onRequest(from, { type: 'start', to, steps, stepSeconds, reason: given }, Date.now())
  return { change, ...rest }
}

/** POST /rollout/abort: back to where the running rollout started. */
function abortRequest(body: Record<string, unknown>, from: State): Request {
  onlyFields(body, ['reason', 'wait', 'expectedGeneration'])
  const { given, expectedGeneration, wait } = optionsIn(body)
  return {
    change: onRequest(from, { type: 'abort', reason: given }, Date.now()),
    // Back to where it started, which carried traffic a moment ago: nothing to probe.
    force: true,
    wait,
    expectedGeneration: expectedGeneration ?? from.generation,
  }
}

function colorIn(body: Record<string, unknown>): Color {
  if (!isColor(body.to)) {
    throw new BlueGreenError(
      'BG_UNKNOWN_COLOR',
      `"to" must be "blue" or "green", got ${JSON.stringify(body.to)}`,
      400,
    )
  }
  return body.to
}
