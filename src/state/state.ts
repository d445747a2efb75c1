import { isDeepStrictEqual } from 'node:util'
import { allTo, type Color, isColor, isValidWeight, type Weights, weightsProblem } from '../colors.ts'
import { BlueGreenError } from '../errors.ts'
import { type Standby, standbyProblem } from './standby.ts'

// The routing state as every store keeps it and the admin API returns it (see CONTRACT.md).

/** What made a change: an operator's switch or weights, a rollback (by hand or automatic), a progressive rollout. */
export const TRIGGERS = ['admin', 'rollback', 'rollout'] as const
export type Trigger = (typeof TRIGGERS)[number]

export const ROLLOUT_STATUSES = ['running', 'paused', 'completed', 'rolled-back', 'aborted'] as const
export type RolloutStatus = (typeof ROLLOUT_STATUSES)[number]

/**
 * What a step waits for once its time is up and its figures pass, before the next step: `manual` a promote
 * (POST /rollout/promote), `pause` a further `seconds`.
 */
export type RolloutGate = { type: 'manual' } | { type: 'pause'; seconds: number }

/** What a running rollout waits for at a gate, since when, and until when if its gate ends by itself (doing `onTimeout`). */
export interface RolloutWaiting {
  for: 'promote' | 'pause'
  since: string
  until?: string
  onTimeout?: 'promote' | 'abort'
}

/** A progressive shift, kept in the state itself so that it survives restarts and every replica sees it. */
export interface Rollout {
  to: Color
  /** The weights `to` goes through, strictly increasing, ending at 100. */
  steps: number[]
  stepSeconds: number
  /** Index in `steps` of the weight in force. */
  step: number
  status: RolloutStatus
  /** What a rollback of the rollout returns to. */
  from: { active: Color; weights: Weights }
  startedAt: string
  stepStartedAt: string
  /** While paused (POST /rollout/pause), since when; absent in rollouts stored before pauses existed. */
  pausedAt?: string
  /** A gate (or null) for each step, when any step has one; never on the last step. */
  gates?: (RolloutGate | null)[]
  /** A manual gate promotes itself after this long (Argo's autoPromotionSeconds). */
  autoPromoteAfterSeconds?: number
  /** A manual gate not promoted within this long aborts the rollout (CodeDeploy's actionOnTimeout: STOP). */
  abortIfNotApprovedWithinSeconds?: number
  /** What the running step waits for at its gate, once there. */
  waiting?: RolloutWaiting
  /** Why it ended, once it has. */
  outcome?: string
}

export interface State {
  active: Color
  weights: Weights
  /** Grows by one with every accepted change, across all replicas. */
  generation: number
  updatedAt: string
  updatedBy: string
  reason: string
  /** Absent in states written before triggers were recorded; read as "admin". */
  trigger?: Trigger
  /** The progressive rollout this state belongs to, if any. */
  rollout?: Rollout
  /**
   * The color the last change took all traffic from, kept for `standby.keepFor` (see standby.ts). Set by the store
   * under its compare-and-set, never by a caller.
   */
  standby?: Standby
  /** Whether live requests are copied to the idle color, and what share (POST /mirror); absent: off. */
  mirror?: MirrorSetting
}

/** Mirroring as every replica applies it (README "Mirroring"). */
export interface MirrorSetting {
  enabled: boolean
  /** Whole percent of the requests that match the mirror's filters, 1..100. */
  percent: number
}

/** What a caller asks a store to change; the store fills in generation and updatedAt. */
export interface StateChange {
  active: Color
  weights: Weights
  updatedBy: string
  reason: string
  trigger?: Trigger
  rollout?: Rollout
  /** A new mirror setting; absent: the stored state's is kept, whatever else changes. */
  mirror?: MirrorSetting
}

export function initialState(color: Color, now = new Date()): State {
  return {
    active: color,
    weights: allTo(color),
    generation: 0,
    updatedAt: now.toISOString(),
    updatedBy: 'bluegreen',
    reason: 'initial state',
  }
}

/**
 * Checks a state read from a store (a file, Redis): anything another process or a person wrote is untrusted.
 * Returns the problem, or undefined when the value is a valid State.
 */
export function stateProblem(value: unknown): string | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    return 'state must be a JSON object'
  const state = value as Record<string, unknown>
  if (!isColor(state.active)) return `active must be "blue" or "green", got ${JSON.stringify(state.active)}`
  const weights = weightsProblem(state.weights)
  if (weights) return weights
  if (
    typeof state.generation !== 'number' ||
    !Number.isSafeInteger(state.generation) ||
    state.generation < 0
  ) {
    return 'generation must be a non-negative integer'
  }
  if (typeof state.updatedAt !== 'string') return 'updatedAt must be a string'
  if (typeof state.updatedBy !== 'string') return 'updatedBy must be a string'
  if (typeof state.reason !== 'string') return 'reason must be a string'
  if (state.trigger !== undefined && !TRIGGERS.includes(state.trigger as Trigger)) {
    return `trigger must be one of ${TRIGGERS.join(', ')}`
  }
  if (state.standby !== undefined && state.standby !== null) {
    const standby = standbyProblem(state.standby)
    if (standby) return standby
  }
  if (state.mirror !== undefined) {
    const mirror = mirrorProblem(state.mirror)
    if (mirror) return mirror
  }
  if (state.rollout !== undefined) return rolloutProblem(state.rollout)
  return undefined
}

export function mirrorProblem(value: unknown): string | undefined {
  const mirror = value as Record<string, unknown> | null
  if (
    typeof mirror !== 'object' ||
    mirror === null ||
    typeof mirror.enabled !== 'boolean' ||
    !Number.isInteger(mirror.percent) ||
    (mirror.percent as number) < 1 ||
    (mirror.percent as number) > 100
  ) {
    return 'mirror must be {enabled: true or false, percent: a whole number from 1 to 100}'
  }
  return undefined
}

function sameMirror(a: MirrorSetting | undefined, b: MirrorSetting): boolean {
  return a !== undefined && a.enabled === b.enabled && a.percent === b.percent
}

/**
 * Whether `next` differs from `previous` only in its mirror setting (POST /mirror): no switch to count, no watch or
 * rollout step to restart.
 */
export function onlyMirrorChanged(previous: State, next: State): boolean {
  return (
    sameRouting(previous, next) &&
    isDeepStrictEqual(previous.rollout, next.rollout) &&
    !isDeepStrictEqual(previous.mirror, next.mirror)
  )
}

/**
 * A change as stored: one that names no mirror setting keeps the stored state's, so a switch or a rollout's step
 * never undoes a mirror change made meanwhile. The Redis store does the same in Lua (CHANGE in redis-scripts.ts).
 */
export function keepingMirror<T extends { mirror?: MirrorSetting }>(requested: T, stored: State): T {
  if (requested.mirror !== undefined || stored.mirror === undefined) return requested
  return { ...requested, mirror: stored.mirror }
}

/**
 * A state is shared by every listener and every snapshot built from it, so none of them may change what the others
 * see: every level is frozen (weights, the rollout, its steps and where it came from), whichever store it came from.
 */
export function freezeState(state: State): State {
  return deepFreeze(state)
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null) {
    Object.freeze(value)
    for (const field of Object.values(value)) deepFreeze(field)
  }
  return value
}

/**
 * Whether `next` should replace `current`: a newer generation, or the same generation with other content. Two
 * different states can share a generation only when a change raced a Redis restart (a replica that was behind
 * restored its older state, and a change through it reused the generation the others had applied); the store's
 * copy is then the truth, and following it is how every replica comes to agree again.
 */
export function supersedes(next: State, current: State | undefined): boolean {
  if (current === undefined || next.generation > current.generation) return true
  return next.generation === current.generation && !isDeepStrictEqual(asStored(next), asStored(current))
}

/** A state as a store holds it: what JSON keeps (a key set to undefined in code is no key at all). */
function asStored(state: State): unknown {
  return JSON.parse(JSON.stringify(state))
}

/** Whether two states send traffic the same way: the same active color and weights. */
export function sameRouting(
  a: Pick<State, 'active' | 'weights'>,
  b: Pick<State, 'active' | 'weights'>,
): boolean {
  return a.active === b.active && a.weights.blue === b.weights.blue && a.weights.green === b.weights.green
}

/**
 * Whether a change would leave the stored state as it is in every way that matters: the same routing, and no
 * rollout in progress (running or paused) on either side (a plain change ends one, and starting one hands the weights to the
 * release guard, whatever the weights). Who asked and why do not count, and neither does the record of a rollout
 * that has ended; a change naming a mirror setting must name the stored one. Such a change is not stored: a new generation that routes as the last one would become the
 * "previous" state a rollback returns to, and the rollback would change nothing.
 * The Redis store decides the same in Lua (CHANGE in redis-scripts.ts): keep the two in step.
 */
export function changesNothing(
  stored: State,
  requested: Pick<State, 'active' | 'weights' | 'rollout' | 'mirror'>,
): boolean {
  return (
    sameRouting(stored, requested) &&
    !inProgress(stored.rollout) &&
    !inProgress(requested.rollout) &&
    (requested.mirror === undefined || sameMirror(stored.mirror, requested.mirror))
  )
}

/** Whether a rollout still moves traffic, or may once resumed: running, or paused on its way. */
export function inProgress(rollout: Pick<Rollout, 'status'> | undefined): boolean {
  return rollout?.status === 'running' || rollout?.status === 'paused'
}

/**
 * What a store keeps as the state a new one replaced: the state it replaces, unless both route traffic the same
 * way (a change that ends a rollout at its current weights), when the one before is kept, so that a rollback
 * always goes back to routing that differs from the routing in force.
 */
export function replacedState<T extends Pick<State, 'active' | 'weights'>>(
  next: Pick<State, 'active' | 'weights'>,
  stored: T,
  storedPrevious: T | null | undefined,
): T | undefined {
  return sameRouting(next, stored) ? (storedPrevious ?? undefined) : stored
}

/**
 * The state a rollback returns to: the one stored as replaced, unless it routes traffic as the state in force does.
 * Versions before unchanged changes were refused stored every change, so a repeated switch could leave its twin
 * as the replaced state; what came before that twin is lost, so there is nothing to offer.
 */
export function rollbackTarget(state: State, previous: State | null | undefined): State | undefined {
  return previous && !sameRouting(previous, state) ? previous : undefined
}

/** Validates a change a caller asks for; a store refuses an invalid one with 400 before touching anything. */
export function checkedChange(change: StateChange): Omit<State, 'generation' | 'updatedAt'> {
  if (!isColor(change?.active)) {
    throw new BlueGreenError(
      'BG_UNKNOWN_COLOR',
      `active must be "blue" or "green", got ${JSON.stringify(change?.active)}`,
    )
  }
  const weights = weightsProblem(change.weights)
  if (weights) throw new BlueGreenError('BG_INVALID_WEIGHTS', weights)
  if (typeof change.updatedBy !== 'string' || typeof change.reason !== 'string') {
    throw new BlueGreenError('BG_BAD_REQUEST', 'updatedBy and reason must be strings')
  }
  if (change.trigger !== undefined && !TRIGGERS.includes(change.trigger)) {
    throw new BlueGreenError('BG_BAD_REQUEST', `trigger must be one of ${TRIGGERS.join(', ')}`)
  }
  const rollout = change.rollout === undefined ? undefined : rolloutProblem(change.rollout)
  if (rollout) throw new BlueGreenError('BG_BAD_REQUEST', rollout)
  const mirror = change.mirror === undefined ? undefined : mirrorProblem(change.mirror)
  if (mirror) throw new BlueGreenError('BG_BAD_REQUEST', mirror)
  return {
    active: change.active,
    weights: { blue: change.weights.blue, green: change.weights.green },
    updatedBy: change.updatedBy,
    reason: change.reason,
    trigger: change.trigger ?? 'admin',
    // A copy, as for the weights: the stored state is frozen, and the caller's objects stay the caller's.
    ...(change.rollout === undefined ? {} : { rollout: structuredClone(change.rollout) }),
    ...(change.mirror === undefined
      ? {}
      : { mirror: { enabled: change.mirror.enabled, percent: change.mirror.percent } }),
  }
}

/**
 * Checks the generation a compare-and-set is to expect, as a caller gives it (the admin API's body, a store's
 * argument): undefined for none, else a non-negative integer, or a 400 before anything is touched.
 */
export function checkedGeneration(expected: unknown): number | undefined {
  if (expected === undefined) return undefined
  if (typeof expected !== 'number' || !Number.isSafeInteger(expected) || expected < 0) {
    throw new BlueGreenError('BG_BAD_REQUEST', 'expectedGeneration must be a non-negative integer')
  }
  return expected
}

/** Checks rollout steps as a caller gives them: whole numbers 1..100, strictly increasing, ending at 100. */
export function stepsProblem(steps: unknown): string | undefined {
  if (!Array.isArray(steps) || steps.length === 0 || steps.length > 100)
    return 'steps must be a list of 1 to 100 weights'
  let last = 0
  for (const step of steps) {
    if (!isValidWeight(step) || step <= last)
      return 'steps must be whole numbers from 1 to 100, strictly increasing'
    last = step
  }
  if (last !== 100) return 'the last step must be 100'
  return undefined
}

export function rolloutProblem(value: unknown): string | undefined {
  if (typeof value !== 'object' || value === null) return 'rollout must be an object'
  const rollout = value as Record<string, unknown>
  if (!isColor(rollout.to)) return 'rollout.to must be "blue" or "green"'
  const steps = stepsProblem(rollout.steps)
  if (steps) return `rollout.${steps}`
  if (typeof rollout.stepSeconds !== 'number' || !(rollout.stepSeconds >= 1))
    return 'rollout.stepSeconds must be at least 1'
  const count = (rollout.steps as number[]).length
  if (!Number.isInteger(rollout.step) || (rollout.step as number) < 0 || (rollout.step as number) >= count) {
    return 'rollout.step must index rollout.steps'
  }
  if (!ROLLOUT_STATUSES.includes(rollout.status as RolloutStatus))
    return `rollout.status must be one of ${ROLLOUT_STATUSES.join(', ')}`
  const from = rollout.from as Record<string, unknown> | null
  if (typeof from !== 'object' || from === null || !isColor(from.active) || weightsProblem(from.weights)) {
    return 'rollout.from must be {active, weights}'
  }
  if (typeof rollout.startedAt !== 'string' || typeof rollout.stepStartedAt !== 'string') {
    return 'rollout.startedAt and rollout.stepStartedAt must be times'
  }
  if ((rollout.status === 'paused') !== (typeof rollout.pausedAt === 'string')) {
    return 'rollout.pausedAt must be a time while the rollout is paused, and only then'
  }
  return gatingProblem(rollout, count)
}

const positiveSeconds = (value: unknown) => typeof value === 'number' && Number.isFinite(value) && value > 0

/** The gates, their timeouts and what the rollout waits for: all absent in rollouts stored before gates existed. */
function gatingProblem(rollout: Record<string, unknown>, count: number): string | undefined {
  const { gates, autoPromoteAfterSeconds: promote, abortIfNotApprovedWithinSeconds: abort, waiting } = rollout
  if (gates !== undefined) {
    if (!Array.isArray(gates) || gates.length !== count || gates[count - 1] !== null)
      return 'rollout.gates must hold a gate or null for each step, null for the last'
    if (!gates.every((gate) => gate === null || gateProblem(gate) === undefined))
      return 'rollout.gates must each be null, {type: "manual"} or {type: "pause", seconds}'
  }
  if (promote !== undefined && !positiveSeconds(promote))
    return 'rollout.autoPromoteAfterSeconds must be a positive number'
  if (abort !== undefined && !positiveSeconds(abort))
    return 'rollout.abortIfNotApprovedWithinSeconds must be a positive number'
  if (promote !== undefined && abort !== undefined)
    return 'rollout.autoPromoteAfterSeconds and rollout.abortIfNotApprovedWithinSeconds exclude each other'
  if (waiting === undefined) return undefined
  const wait = waiting as Record<string, unknown> | null
  if (
    typeof wait !== 'object' ||
    wait === null ||
    (wait.for !== 'promote' && wait.for !== 'pause') ||
    typeof wait.since !== 'string' ||
    (wait.until !== undefined && typeof wait.until !== 'string') ||
    (wait.onTimeout !== undefined && wait.onTimeout !== 'promote' && wait.onTimeout !== 'abort')
  ) {
    return 'rollout.waiting must be {for: "promote" | "pause", since, until?, onTimeout?}'
  }
  if (rollout.status !== 'running' && rollout.status !== 'paused')
    return 'rollout.waiting is only for a running or paused rollout'
  return undefined
}

/** What is wrong with one step's gate, if anything. */
export function gateProblem(value: unknown): string | undefined {
  const gate = value as Record<string, unknown> | null
  if (typeof gate !== 'object' || gate === null) return 'a gate must be an object'
  if (gate.type === 'manual' && Object.keys(gate).length === 1) return undefined
  if (gate.type === 'pause' && positiveSeconds(gate.seconds) && Object.keys(gate).length === 2)
    return undefined
  return 'a gate must be {type: "manual"} or {type: "pause", seconds}'
}
