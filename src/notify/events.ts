import { randomUUID } from 'node:crypto'
import type { LiveEvent } from '../admin/event-stream.ts'
import type { AuditEvent } from '../audit/audit.ts'
import type { NotifyEvent } from '../config/types.ts'

// Which live events are notifications, pure: the notifier reads this replica's live events (GET /events/stream)
// and asks here what each one means to a webhook. An accepted change's audit event is published only on the
// replica whose compare-and-set made it, so it is sent once as it is; what every replica observes for itself (a
// replica missing or lagging, the standby over) is `claimed`: only the replica that claims its id sends it.

/** One thing that happened, as every target that asked for its event is told of it. */
export interface Notification {
  /** The same on every replica that sees the event: the claim's key, and x-bluegreen-delivery for receivers. */
  id: string
  event: NotifyEvent
  /** Observed by every replica: sent only by the one that claims `id` first. */
  claimed: boolean
  /** ISO time it happened. */
  at: string
  /** One line for people (Slack's text). */
  text: string
  /** What happened, as the audit trail or the live event says it. */
  data: unknown
}

type FromLiveEvent = (data: unknown) => Notification[]

/** Live event kinds that can mean a notification, and what each one means. A kind not listed here means none. */
export const NOTIFYING_KINDS: Readonly<Record<string, FromLiveEvent>> = {
  audit: (data) => fromAudit(data as AuditEvent),
  replica: (data) => fromReplica(data as ReplicaEvent),
  standby: (data) => fromStandby(data as StandbyEvent),
}

export function notificationsOf(event: LiveEvent): Notification[] {
  const from = Object.hasOwn(NOTIFYING_KINDS, event.kind) ? NOTIFYING_KINDS[event.kind] : undefined
  if (!from || typeof event.data !== 'object' || event.data === null) return []
  return from(event.data)
}

/** A `replica` live event (src/admin/replica-watch.ts). */
export interface ReplicaEvent {
  phase: 'missing' | 'lagging' | 'back'
  id: string
  host?: string
  pid?: number
  generation?: number
  /** The generation the fleet is at, for lagging. */
  current?: number
  /** The registry's last heartbeat from it (ISO time). */
  lastSeen?: string
  at?: string
}

/** A `standby` live event: the color a switch left, kept ready for a rollback (README "Standby"). */
export interface StandbyEvent {
  phase: 'started' | 'drained' | 'over'
  color: string
  since: string
  keepUntil?: string
  safeToScaleDown?: boolean
}

function fromAudit(audit: AuditEvent): Notification[] {
  if (audit.result === 'refused') {
    if (audit.code !== 'BG_SMOKE_FAILED') return []
    const text = `smoke checks refused a ${audit.action}: ${audit.message ?? 'failed'}`
    return [notification(`smoke-failed-${randomUUID()}`, 'smoke-failed', audit.at, text, audit)]
  }
  if (audit.result !== 'accepted' || audit.generation === undefined) return []
  const event = changeEvent(audit)
  const found: Notification[] = []
  if (event) found.push(changeNotification(event, audit))
  if (audit.forcedPast?.includes('smoke')) {
    const text = `${audit.action} forced past failing smoke checks by ${audit.actor} (generation ${audit.generation})`
    found.push(notification(`smoke-failed-g${audit.generation}`, 'smoke-failed', audit.at, text, audit))
  }
  return found
}

/** The event an accepted change is; undefined for one that is not a change (forget-replica, notify). */
function changeEvent(audit: AuditEvent): NotifyEvent | undefined {
  switch (audit.action) {
    case 'switch':
    case 'weights':
      return 'switch'
    case 'rollback':
      return 'rollback'
    case 'rollout-abort':
      return 'rollout-abort'
    case 'rollout-pause':
      return 'rollout-paused'
    case 'rollout':
    case 'rollout-resume':
    case 'rollout-promote':
      if (audit.rollout?.status === 'completed') return 'rollout-complete'
      // Waiting at a manual gate is what Argo calls paused: someone has to promote it.
      if (audit.rollout?.waiting === 'promote') return 'rollout-paused'
      return 'rollout-step'
    case 'forget-replica':
    case 'notify':
      return undefined
  }
}

function changeNotification(event: NotifyEvent, audit: AuditEvent): Notification {
  const generation = `generation ${audit.generation}`
  const to = audit.to
  const routing = !to
    ? ''
    : to.weights[to.active] === 100
      ? `all traffic to ${to.active}`
      : `blue ${to.weights.blue}% / green ${to.weights.green}%`
  const texts: Record<NotifyEvent, string> = {
    switch: `switch: ${routing} (${generation}) by ${audit.actor}: ${audit.reason}`,
    rollback: `rollback: ${routing} (${generation}) by ${audit.actor}: ${audit.reason}`,
    'rollout-step': `rollout step: ${audit.reason} (${routing}, ${generation})`,
    'rollout-complete': `rollout complete: ${routing} (${generation})`,
    'rollout-abort': `rollout aborted: ${audit.reason} (${routing}, ${generation}) by ${audit.actor}`,
    'rollout-paused': `rollout paused: ${audit.reason} (${routing}, ${generation})`,
    'smoke-failed': audit.reason,
    'replica-missing': audit.reason,
    'replica-lagging': audit.reason,
    'standby-over': audit.reason,
  }
  return notification(`${event}-g${audit.generation}`, event, audit.at, texts[event], audit)
}

function fromReplica(replica: ReplicaEvent): Notification[] {
  const at = replica.at ?? new Date().toISOString()
  const who = `replica ${replica.id}${replica.host ? ` (${replica.host}, pid ${replica.pid})` : ''}`
  if (replica.phase === 'missing') {
    const text = `${who} is missing: no heartbeat since ${replica.lastSeen}, last at generation ${replica.generation}`
    // Its last heartbeat names this silence: the same on every replica, and another silence gets another id.
    const id = `replica-missing-${replica.id}-${replica.lastSeen}`
    return [notification(id, 'replica-missing', at, text, replica, true)]
  }
  if (replica.phase === 'lagging') {
    const text = `${who} is lagging: at generation ${replica.generation} while the state is at ${replica.current}`
    const id = `replica-lagging-${replica.id}-g${replica.generation}`
    return [notification(id, 'replica-lagging', at, text, replica, true)]
  }
  return []
}

/**
 * `standby-over` says the color is safe to scale down, once: at `over` when it has drained on every replica by then,
 * else at the `drained` that follows (every replica publishes both, so either id is claimed once for the fleet).
 * An `over` before the drain is told too, as not yet safe, under an id of its own: keepFor is over, and the
 * operator learns what it still waits for rather than nothing.
 */
function fromStandby(standby: StandbyEvent): Notification[] {
  const at = new Date().toISOString()
  const id = `standby-over-${standby.color}-${standby.since}`
  const kept = `standby over: ${standby.color} has been on standby since ${standby.since}`
  if (standby.safeToScaleDown === true && (standby.phase === 'over' || standby.phase === 'drained')) {
    return [notification(id, 'standby-over', at, `${kept}; safe to scale it down`, standby, true)]
  }
  if (standby.phase !== 'over') return []
  const text = `${kept}; not drained on every replica yet: another notification says when it is safe to scale it down`
  return [notification(`${id}-draining`, 'standby-over', at, text, standby, true)]
}

function notification(
  id: string,
  event: NotifyEvent,
  at: string,
  text: string,
  data: unknown,
  claimed = false,
): Notification {
  return { id, event, claimed, at, text, data }
}
