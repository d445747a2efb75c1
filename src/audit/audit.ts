import type { Color, Weights } from '../colors.ts'
import { codeOf } from '../errors.ts'
import type { Logger } from '../log.ts'

/**
 * What an attempt tried to do: a change through the admin API or the release guard (an automatic rollback is a
 * `rollback`, a rollout's step a `rollout`), or forgetting a missing replica.
 */
export type Action =
  | 'switch'
  | 'weights'
  | 'rollback'
  | 'rollout'
  | 'rollout-abort'
  | 'rollout-pause'
  | 'rollout-resume'
  | 'rollout-promote'
  | 'mirror'
  | 'forget-replica'

/** The actions that change the routing state. */
export type ChangeAction = Exclude<Action, 'forget-replica'>

/**
 * One attempt to change the routing (or to forget a missing replica), accepted, unchanged (it asked for the state
 * already in force, so nothing was stored) or refused: who, what, from what, why, and how it ended.
 */
export interface AuditEvent {
  /** ISO time the attempt ended. */
  at: string
  /** A token's name ("token:ci"), or the client address when no token is configured. */
  actor: string
  /** The client address the call came from. */
  address: string
  action: Action
  from: { active: Color; weights: Weights; generation: number } | null
  to: { active: Color; weights: Weights } | null
  reason: string
  result: 'accepted' | 'unchanged' | 'refused'
  /** The new generation when accepted; the generation already in force when unchanged. */
  generation?: number
  /** The replica's id, for forget-replica. */
  replica?: string
  /** The gates a forced change went past though they failed ("smoke"). */
  forcedPast?: string[]
  /** The BG_* code, when refused. */
  code?: string
  message?: string
}

/** Where the audit trail is kept: a capped Redis stream, or the last N lines of a file beside the state file. */
export interface AuditTrail {
  record(event: AuditEvent): Promise<void>
  /** The most recent events, newest first. */
  recent(limit: number): Promise<AuditEvent[]>
  close(): Promise<void>
}

export const AUDIT_KEEP = 1000

/** How an attempt ended, as its event says it. */
export type Outcome = Pick<AuditEvent, 'result' | 'generation' | 'code' | 'message' | 'forcedPast'>

/** What the caller knows of an attempt; `from` and `to` take whole states, of which the event keeps the routing. */
export interface Attempt {
  actor: string
  address: string
  action: Action
  /** The state in force when the attempt was made; undefined before one is loaded. */
  from: { active: Color; weights: Weights; generation: number } | undefined
  /** The routing the attempt asked for, once known. */
  to: { active: Color; weights: Weights } | undefined
  reason: string
  replica?: string
  outcome: Outcome
}

/**
 * Builds an attempt's event and stores it in the trail. Logged as `<action> <result>` with the event (a refusal as
 * a warning), unless `logged` is false: the release guard logs what it made in its own words.
 */
export function recordAttempt(
  trail: AuditTrail,
  logger: Logger,
  attempt: Attempt,
  { logged = true }: { logged?: boolean } = {},
): void {
  const { from, to, replica, outcome } = attempt
  const event: AuditEvent = {
    at: new Date().toISOString(),
    actor: attempt.actor,
    address: attempt.address,
    action: attempt.action,
    from: from ? { active: from.active, weights: from.weights, generation: from.generation } : null,
    to: to ? { active: to.active, weights: to.weights } : null,
    reason: attempt.reason,
    ...(replica === undefined ? {} : { replica }),
    ...outcome,
  }
  if (logged && event.result === 'refused') logger.warn({ audit: event }, `${event.action} refused`)
  else if (logged) logger.info({ audit: event }, `${event.action} ${event.result}`)
  // The trail is a record, not a gate: a store that cannot take it must not turn a made change into an error.
  trail.record(event).catch((error: unknown) => {
    logger.error({ err: error, audit: event }, 'could not store an audit event')
  })
}

/** The outcome of an attempt that failed with `error`: its BG_* code, or BG_INTERNAL for anything else (a bug). */
export function refusal(error: unknown): Outcome {
  return {
    result: 'refused',
    code: codeOf(error),
    message: (error as Error).message,
  }
}
