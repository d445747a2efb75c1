import type { Color, Weights } from '../colors.ts'

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
  action: 'switch' | 'weights' | 'rollback' | 'rollout' | 'rollout-abort' | 'forget-replica'
  from: { active: Color; weights: Weights; generation: number } | null
  to: { active: Color; weights: Weights } | null
  reason: string
  result: 'accepted' | 'unchanged' | 'refused'
  /** The new generation when accepted; the generation already in force when unchanged. */
  generation?: number
  /** The replica's id, for forget-replica. */
  replica?: string
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
