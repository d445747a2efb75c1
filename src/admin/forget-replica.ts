import type { IncomingMessage } from 'node:http'
import { type AuditTrail, type Outcome, recordAttempt, refusal } from '../audit/audit.ts'
import { BlueGreenError } from '../errors.ts'
import type { Logger } from '../log.ts'
import type { RoutingSnapshot } from '../routing/snapshot.ts'
import type { ForgetResult, ReplicaInfo, ReplicaRegistry } from '../state/store.ts'
import { onlyFields, optionalString } from './http.ts'

export interface ForgetOptions {
  replicas: ReplicaRegistry
  audit: AuditTrail
  snapshot: () => RoutingSnapshot | undefined
  logger: Logger
}

/**
 * DELETE /replicas/ID: an operator says a missing replica is gone (a node drained, a VM deleted), so changes stop
 * waiting for it. Only a missing replica can go: a live one would list itself again with its next heartbeat. Like
 * a change, every attempt is audited, whatever its outcome.
 */
export class ReplicaForgetting {
  readonly #options: ForgetOptions

  constructor(options: ForgetOptions) {
    this.#options = options
  }

  async run(
    id: string,
    tokenName: string | undefined,
    req: IncomingMessage,
    body: Record<string, unknown> | Error,
  ): Promise<ReplicaInfo> {
    const address = req.socket.remoteAddress ?? 'unknown'
    const actor = tokenName === undefined ? address : `token:${tokenName}`
    let reason = ''
    let forgotten: ReplicaInfo
    try {
      if (id === '' || id.includes('/')) {
        throw new BlueGreenError(
          'BG_BAD_REQUEST',
          'DELETE /replicas/ID takes one replica id, URL-encoded (GET /replicas lists them)',
        )
      }
      if (body instanceof Error) throw body
      onlyFields(body, ['reason'])
      reason = optionalString(body, 'reason') ?? `forget replica ${id}`
      forgotten = forgottenOrThrow(id, await this.#forget(id))
    } catch (error) {
      this.#record(actor, req, id, reason, refusal(error))
      throw error
    }
    this.#record(actor, req, id, reason, { result: 'accepted' })
    return forgotten
  }

  /** Records a call refused before it reached the registry (authentication, Host or Origin). */
  refused(id: string, req: IncomingMessage, error: BlueGreenError): void {
    const actor = req.socket.remoteAddress ?? 'unknown'
    this.#record(actor, req, id, '', refusal(error))
  }

  async #forget(id: string): Promise<ForgetResult> {
    try {
      return await this.#options.replicas.forget(id)
    } catch (error) {
      throw new BlueGreenError(
        'BG_STATE_UNAVAILABLE',
        `cannot reach the replica registry: ${(error as Error).message}`,
      )
    }
  }

  #record(actor: string, req: IncomingMessage, id: string, reason: string, outcome: Outcome): void {
    recordAttempt(this.#options.audit, this.#options.logger, {
      actor,
      address: req.socket.remoteAddress ?? 'unknown',
      action: 'forget-replica',
      from: this.#options.snapshot()?.state,
      to: undefined,
      reason,
      replica: id,
      outcome,
    })
  }
}

function forgottenOrThrow(id: string, outcome: ForgetResult): ReplicaInfo {
  if (outcome.result === 'forgotten') return outcome.replica
  if (outcome.result === 'live') {
    throw new BlueGreenError(
      'BG_REPLICA_LIVE',
      `replica ${id} is live (last heartbeat ${outcome.replica.lastSeen}): only a missing replica can be forgotten`,
    )
  }
  throw new BlueGreenError('BG_UNKNOWN_REPLICA', `no replica ${id} in the registry; GET /replicas lists them`)
}
