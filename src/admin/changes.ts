import type { IncomingMessage } from 'node:http'
import { type AuditTrail, type ChangeAction, type Outcome, recordAttempt, refusal } from '../audit/audit.ts'
import { COLORS, type Color, type Weights } from '../colors.ts'
import type { PoolConfig } from '../config/types.ts'
import { BlueGreenError } from '../errors.ts'
import { probeAll } from '../health/probe.ts'
import type { Logger } from '../log.ts'
import type { Metrics } from '../metrics/registry.ts'
import type { SmokeOptions } from '../proxy/smoke.ts'
import type { Transition } from '../rollout/machine.ts'
import type { RoutingSnapshot } from '../routing/snapshot.ts'
import type { State } from '../state/state.ts'
import type { Commit, ReplicaRegistry, StateStore, WaitResult } from '../state/store.ts'
import { type ChangeRequest, changeRequest, givenReason } from './change-requests.ts'
import type { MirrorGate } from './mirror-gate.ts'
import { SmokeGate, type SmokeGateOptions } from './smoke-gate.ts'

export interface ChangeOptions {
  store: StateStore
  replicas: ReplicaRegistry
  audit: AuditTrail
  pools: Readonly<Record<Color, PoolConfig>>
  snapshot: () => RoutingSnapshot | undefined
  waitTimeout: number
  logger: Logger
  metrics: Metrics
  smoke: SmokeOptions
  /** Publishes each smoke run as a `smoke` live event. */
  publish?: SmokeGateOptions['publish']
  /** The app's smoke gate, shared with the release guard; one is built from `smoke` when absent. */
  smokeGate?: SmokeGate
  /** The mirror's gate, when the app mirrors; its config's share is what POST /mirror turns on by default. */
  mirrorGate?: MirrorGate
}

export interface ChangeResult {
  state: State
  /** False when the change asked for the state already in force: nothing was stored, `state` is that state. */
  changed: boolean
  wait?: WaitResult
}

/**
 * Every change through the admin API takes one path: check the body, make sure the pools that would get traffic
 * can serve it and pass their smoke checks (412 unless forced), commit it through the store's compare-and-set, record the attempt in the
 * audit trail whatever its outcome, and with `wait` answer only once every live replica has applied it. A change
 * to the state already in force is decided by the store against what it holds: answered with that state,
 * `changed: false`, and nothing stored, applied or watched.
 */
export class Changes {
  readonly #options: ChangeOptions
  readonly smoke: SmokeGate

  constructor(options: ChangeOptions) {
    this.#options = options
    this.smoke = options.smokeGate ?? new SmokeGate(options)
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
    let request: ChangeRequest | undefined
    let committed: Commit
    let forcedPast: string[] = []
    try {
      if (body instanceof Error) throw body
      if (!from) throw new BlueGreenError('BG_STATE_UNAVAILABLE', 'the routing state has not been loaded yet')
      request = await changeRequest(
        action,
        body,
        from,
        () => this.#previous(),
        this.#options.mirrorGate?.percent,
      )
      if (!request.force) await this.#requireHealthy(request.change.weights, from)
      const forceSmoke = request.forceSmoke ?? request.force
      forcedPast = await this.smoke.require(action, request.change.weights, from, forceSmoke)
      const mirror = this.#options.mirrorGate
      if (mirror)
        forcedPast.push(
          ...(await mirror.require(action, request.change.weights, from.weights, request.force)),
        )
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
      ...(forcedPast.length > 0 ? { forcedPast } : {}),
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

  async #previous(): Promise<State | undefined> {
    try {
      return await this.#options.store.previous()
    } catch (error) {
      throw new BlueGreenError(
        'BG_STATE_UNAVAILABLE',
        `cannot read the previous state: ${(error as Error).message}`,
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
        )
      }
      const results = await probeAll(upstreams, this.#options.pools[color].healthCheck)
      if (!results.some((result) => result.up)) {
        const details = results.map((result) => `${result.upstream} ${result.detail}`).join(', ')
        throw new BlueGreenError(
          'BG_TARGET_UNHEALTHY',
          `no upstream of the ${color} pool answered its health probe (${details}); pass "force": true to send it traffic anyway`,
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
