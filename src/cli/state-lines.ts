// GET /state and a change's answer as an operator reads them: the routing, the rollout, the standby, what this
// replica sees, and whether every replica applied a change.
import { COLORS, type Color } from '../colors.ts'
import { type CommandResult, type CommandValues, EXIT_OK, EXIT_WAIT_INCOMPLETE } from './command.ts'
import { json } from './output.ts'

export interface StateLine {
  rollout?: {
    to: string
    steps: number[]
    step: number
    status: string
    outcome?: string
    pausedAt?: string
    waiting?: { for: string; since: string; until?: string; onTimeout?: string }
  }
  active: string
  weights: { blue: number; green: number }
  generation: number
  updatedAt: string
  updatedBy: string
  reason: string
  /** In a change's answer: false when it asked for the state already in force (absent from older proxies). */
  changed?: boolean
  replica?: {
    id: string
    appliedGeneration: number | null
    store?: { reachable: boolean; staleSeconds: number | null; restoredFrom?: string }
    rolloutStep?: {
      endsAt: string
      figures: string
      waitingFor: string | null
      heldBy?: 'traffic' | 'smoke'
    } | null
    health?: Record<Color, UpstreamLine[]>
    drain?: Record<Color, { requests: number; websockets: number }> & {
      draining: { color: string; since: string; closesAt: string | null; drainedAt: string | null } | null
    }
    watching?: { color: string; generation: number; until: string } | null
  }
  /** The color on standby, fleet-wide (absent from older proxies). */
  standby?: {
    color: string
    since: string
    keepUntil: string
    drained: boolean
    drainedAt?: string
    replicas: { id: string; drained: boolean }[]
    safeToScaleDown: boolean
  } | null
  wait?: {
    complete: boolean
    pending: { id: string; generation: number }[]
    replicas: number
    /** The ids of the replicas that applied it (absent from older proxies). */
    applied?: string[]
    /** The replicas that stopped heartbeating (absent from older proxies). */
    missing?: { id: string; lastSeen: string }[]
  }
}

export interface UpstreamLine {
  url: string
  available: boolean
  condition: string
  ejectedUntil: string | null
  lastCheck: { up: boolean; detail: string } | null
}

export function show(value: unknown, values: CommandValues): CommandResult {
  const state = value as StateLine
  const exitCode = state.wait && !state.wait.complete ? EXIT_WAIT_INCOMPLETE : EXIT_OK
  if (values.json) return { output: json(value), exitCode }
  if (state.changed === false) {
    // The whole state would read like a change just made; what the operator needs is that none was.
    const line = `already: ${routing(state.weights)} (generation ${state.generation}); nothing changed`
    return { output: `${[line, ...waitLines(state.wait)].join('\n')}\n`, exitCode }
  }
  const lines = [
    `active      ${state.active}`,
    `weights     blue ${state.weights.blue} / green ${state.weights.green}`,
    `generation  ${state.generation}`,
    `updated     ${state.updatedAt} by ${state.updatedBy}`,
    `reason      ${state.reason}`,
  ]
  if (state.rollout) lines.push(rolloutLine(state))
  if (state.standby) lines.push(standbyLine(state.standby))
  if (state.replica) lines.push(...replicaLines(state.replica, state.standby?.color))
  lines.push(...waitLines(state.wait))
  return { output: `${lines.join('\n')}\n`, exitCode }
}

export function rolloutLine(state: StateLine): string {
  const { rollout } = state
  const step = `step ${rollout!.step + 1}/${rollout!.steps.length} (${rollout!.steps[rollout!.step]}% to ${rollout!.to})`
  const judged = state.replica?.rolloutStep
  const progress = rollout!.waiting
    ? `, ${waitingWords(rollout!.waiting)}`
    : rollout!.status !== 'running' || !judged
      ? ''
      : judged.heldBy === 'smoke'
        ? `, held: waiting for ${judged.waitingFor}`
        : judged.waitingFor
          ? `, held: too little traffic to judge (${judged.waitingFor})`
          : `, until ${judged.endsAt}: ${judged.figures}`
  const status = rollout!.pausedAt ? `paused since ${rollout!.pausedAt}` : rollout!.status
  return `rollout     ${status}, ${step}${progress}${rollout!.outcome ? `: ${rollout!.outcome}` : ''}`
}

/** "standby     blue since S, kept until K (over), drained on 3 of 3 replicas at D, safeToScaleDown yes" */
export function standbyLine(standby: NonNullable<StateLine['standby']>): string {
  const over = Date.now() >= Date.parse(standby.keepUntil) ? ' (over)' : ''
  const drained = standby.replicas.filter((replica) => replica.drained).length
  const at = standby.drainedAt ? ` at ${standby.drainedAt}` : ''
  const safe = standby.safeToScaleDown ? 'yes' : 'no'
  return `standby     ${standby.color} since ${standby.since}, kept until ${standby.keepUntil}${over}, drained on ${drained} of ${standby.replicas.length} replica(s)${at}, safeToScaleDown ${safe}`
}

/** "waiting for promote since T (promoted automatically at U)" */
export function waitingWords(waiting: NonNullable<NonNullable<StateLine['rollout']>['waiting']>): string {
  const what = waiting.for === 'promote' ? 'promote' : 'a pause to end'
  const end =
    waiting.until === undefined
      ? ''
      : waiting.for === 'pause'
        ? ` (until ${waiting.until})`
        : waiting.onTimeout === 'abort'
          ? ` (aborted at ${waiting.until} if not promoted)`
          : ` (promoted automatically at ${waiting.until})`
  return `waiting for ${what} since ${waiting.since}${end}`
}

/**
 * What this replica sees: its upstreams, what is open on each color, the drain, the watch, its store. `standby` is
 * the color on standby: its drain here is one replica's part, and the standby line says when it is safe to scale
 * down (drained everywhere and keepFor over), so the drain line must not promise it sooner.
 */
export function replicaLines(replica: NonNullable<StateLine['replica']>, standby?: string): string[] {
  const lines: string[] = []
  if (replica.health) {
    COLORS.forEach((color, index) => {
      lines.push(`${index === 0 ? 'upstreams' : ''}`.padEnd(12) + upstreamsLine(color, replica))
    })
  }
  const draining = replica.drain?.draining
  if (draining) {
    const end = draining.drainedAt
      ? draining.color === standby
        ? `drained at ${draining.drainedAt} on this replica (safe to scale down when the standby says so)`
        : `drained at ${draining.drainedAt} (safe to scale down once nothing is watched)`
      : draining.closesAt
        ? `what is open is closed at ${draining.closesAt}`
        : 'what is open is left to finish'
    lines.push(`drain       ${draining.color} since ${draining.since}, ${end}`)
  }
  if (replica.watching !== undefined) {
    const { watching } = replica
    lines.push(
      watching
        ? `watching    ${watching.color} (generation ${watching.generation}) for a rollback until ${watching.until}`
        : 'watching    nothing',
    )
  }
  const store = replica.store
  const copyNote = store?.restoredFrom ? ` (serving its local copy ${store.restoredFrom})` : ''
  const storeNote =
    store && !store.reachable
      ? `, state store UNREACHABLE for ${Math.round(store.staleSeconds ?? 0)} s${copyNote}`
      : ''
  lines.push(`replica     ${replica.id} applied ${replica.appliedGeneration}${storeNote}`)
  return lines
}

/** "blue  2/2 available, 3 requests 1 websocket open", naming each upstream that is not available and why. */
export function upstreamsLine(color: Color, replica: NonNullable<StateLine['replica']>): string {
  const upstreams = replica.health?.[color] ?? []
  const available = upstreams.filter((upstream) => upstream.available).length
  const open = replica.drain?.[color]
  const openNote = open ? `, open: ${open.requests} request(s), ${open.websockets} websocket(s)` : ''
  const down = upstreams
    .filter((upstream) => !upstream.available)
    .map((upstream) => {
      const why =
        upstream.condition === 'ejected'
          ? `ejected until ${upstream.ejectedUntil}`
          : `failing health checks${upstream.lastCheck ? ` (${upstream.lastCheck.detail})` : ''}`
      return `; ${upstream.url} ${why}`
    })
  return `${color.padEnd(6)}${available}/${upstreams.length} available${openNote}${down.join('')}`
}

export function waitLines(wait: StateLine['wait']): string[] {
  if (!wait) return []
  const { complete, pending, replicas, applied, missing = [] } = wait
  if (complete) {
    const names = applied && applied.length > 0 ? `: ${applied.join(', ')}` : ''
    return [`wait        all ${replicas} replica(s) applied it${names}`]
  }
  const problems: string[] = []
  if (pending.length > 0) {
    problems.push(
      `NOT applied in time by: ${pending.map((replica) => `${replica.id} (at ${replica.generation})`).join(', ')}`,
    )
  }
  if (missing.length > 0) {
    const names = missing.map((replica) => `${replica.id} (last seen ${replica.lastSeen})`).join(', ')
    problems.push(`missing (no heartbeat; may still serve an older state): ${names}`)
  }
  const lines = problems.map((problem, index) => `${index === 0 ? 'wait' : ''}`.padEnd(12) + problem)
  if (applied && applied.length > 0) lines.push(`            applied by: ${applied.join(', ')}`)
  return lines
}

/** "all traffic on green", or the split. */
export function routing(weights: { blue: number; green: number }): string {
  if (weights.blue === 100) return 'all traffic on blue'
  if (weights.green === 100) return 'all traffic on green'
  return `blue ${weights.blue} / green ${weights.green}`
}
