import type { Color, Weights } from '../colors.ts'
import { codeOf } from '../errors.ts'
import type { Logger } from '../log.ts'
import type { Rollout } from '../state/state.ts'

/**
 * What an attempt tried to do: a change through the admin API or the release guard (an automatic rollback is a
 * `rollback`, a rollout's step a `rollout`), forgetting a missing replica, or delivering a notification.
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
  | 'reload'
  | 'notify'

/** The actions that change the routing state. */
export type ChangeAction = Exclude<Action, 'forget-replica' | 'reload' | 'notify'>

/** The figures the release guard judged a color on, when they made it roll back. */
export interface JudgedFigures {
  requests: number
  errors: number
  errorRatio: number
  /** Milliseconds; null when the window held requests slower than its histogram (over 60 s). */
  p99: number | null
  maxErrorRatio: number
  /** Milliseconds; 0 is no p99 limit. */
  maxP99: number
  minRequests: number
}

/** Where a rollout stands after an accepted change that belongs to one. */
export interface RolloutSummary {
  to: Color
  /** 1-based. */
  step: number
  steps: number
  weight: number
  status: string
  /** What it waits for at its gate ("promote", "pause"), if it does. */
  waiting?: string
}

/** One outcome of delivering a notification to a webhook target (action `notify`). */
export interface NotificationOutcome {
  target: string
  event: string
  /** The notification's id (x-bluegreen-delivery): one per event across the fleet. */
  id: string
  /** delivered; retried (this attempt failed, another follows); failed (no more attempts); dropped (queue full). */
  result: 'delivered' | 'retried' | 'failed' | 'dropped'
  attempt: number
  /** The receiver's status, when it answered. */
  status?: number
}

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
  /** The config keys a reload changed (or would have: refused), for reload. */
  keys?: string[]
  /** The gates a forced change went past though they failed ("smoke"). */
  forcedPast?: string[]
  /** The BG_* code, when refused. */
  code?: string
  message?: string
  /** A rollback the release guard made on the traffic's figures: those figures and the thresholds. */
  figures?: JudgedFigures
  /** Where the rollout stands after an accepted rollout change. */
  rollout?: RolloutSummary
  /** For action `notify`: the delivery's outcome. */
  notification?: NotificationOutcome
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
  /** The routing the attempt asked for, once known, and the rollout it leaves, if any. */
  to: { active: Color; weights: Weights; rollout?: Rollout } | undefined
  reason: string
  replica?: string
  keys?: string[]
  figures?: JudgedFigures
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
  const { from, to, replica, keys, figures, outcome } = attempt
  const rollout = to?.rollout && outcome.result === 'accepted' ? rolloutSummary(to.rollout) : undefined
  const event: AuditEvent = {
    at: new Date().toISOString(),
    actor: attempt.actor,
    address: attempt.address,
    action: attempt.action,
    from: from ? { active: from.active, weights: from.weights, generation: from.generation } : null,
    to: to ? { active: to.active, weights: to.weights } : null,
    reason: attempt.reason,
    ...(replica === undefined ? {} : { replica }),
    ...(keys === undefined ? {} : { keys }),
    ...outcome,
    ...(figures ? { figures } : {}),
    ...(rollout ? { rollout } : {}),
  }
  if (logged && event.result === 'refused') logger.warn({ audit: event }, `${event.action} refused`)
  else if (logged) logger.info({ audit: event }, `${event.action} ${event.result}`)
  // The trail is a record, not a gate: a store that cannot take it must not turn a made change into an error.
  trail.record(event).catch((error: unknown) => {
    logger.error({ err: error, audit: event }, 'could not store an audit event')
  })
}

function rolloutSummary(rollout: Rollout): RolloutSummary {
  return {
    to: rollout.to,
    step: rollout.step + 1,
    steps: rollout.steps.length,
    weight: rollout.steps[rollout.step] ?? 0,
    status: rollout.status,
    ...(rollout.waiting ? { waiting: rollout.waiting.for } : {}),
  }
}

/** The outcome of an attempt that failed with `error`: its BG_* code, or BG_INTERNAL for anything else (a bug). */
export function refusal(error: unknown): Outcome {
  return {
    result: 'refused',
    code: codeOf(error),
    message: (error as Error).message,
  }
}
