import type { ChangeAction } from '../audit/audit.ts'
import { activeFor, allTo, type Color, isColor, type Weights, weightsProblem } from '../colors.ts'
import { parseDuration } from '../config/validate.ts'
import { BlueGreenError } from '../errors.ts'
import { type Gating, onRequest, type Transition, undoesRollout } from '../rollout/machine.ts'
import { type RolloutGate, type State, stepsProblem } from '../state/state.ts'
import { onlyFields, optionalBoolean, optionalGeneration, optionalString } from './http.ts'

// What each change endpoint's body asks for: its fields checked, then the change it means. Rollout transitions
// are decided by the rollout's state machine (src/rollout/machine.ts); this file only reads the body.

/** What a change request asks for, once its body has been checked. */
export interface ChangeRequest {
  /** What to commit; without a rollout for a plain change, which ends any rollout. */
  change: Transition
  expectedGeneration: number | undefined
  /** Past the health probe, and the smoke checks unless `forceSmoke` says otherwise. */
  force: boolean
  /** Past the smoke checks, when that differs from `force` (a promote probes nothing, but runs them). */
  forceSmoke?: boolean
  wait: boolean
}

/** The options every change body may carry; `given` is the reason it gave, if any. */
interface Options {
  expectedGeneration: number | undefined
  force: boolean
  wait: boolean
  given: string | undefined
}

/**
 * The change `body` asks for through `action`, against the state in force; a BlueGreenError (400, 409) when the
 * body is invalid or the state refuses it. `previous` reads the state a rollback returns to, only when it needs one.
 */
export function changeRequest(
  action: ChangeAction,
  body: Record<string, unknown>,
  from: State,
  previous: () => Promise<State | undefined>,
  mirrorPercent = 10,
): ChangeRequest | Promise<ChangeRequest> {
  switch (action) {
    case 'mirror':
      return mirrorRequest(body, from, mirrorPercent)
    case 'switch':
      return switchRequest(body)
    case 'weights':
      return weightsRequest(body, from)
    case 'rollout':
      return rolloutRequest(body, from)
    case 'rollout-abort':
      return abortRequest(body, from)
    case 'rollout-pause':
    case 'rollout-resume':
    case 'rollout-promote':
      return gateRequest(action, body, from)
    case 'rollback':
      return rollbackRequest(body, from, previous)
  }
}

/** The reason a refused body gave, when it is a plain string: why someone tried is worth keeping even then. */
export function givenReason(body: Record<string, unknown> | Error): { reason: string } | undefined {
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
function switchRequest(body: Record<string, unknown>): ChangeRequest {
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
function weightsRequest(body: Record<string, unknown>, from: State): ChangeRequest {
  onlyFields(body, ['blue', 'green', ...COMMON_FIELDS])
  const weights = { blue: body.blue, green: body.green }
  const problem = weightsProblem(weights)
  if (problem) throw new BlueGreenError('BG_INVALID_WEIGHTS', problem)
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
function rolloutRequest(body: Record<string, unknown>, from: State): ChangeRequest {
  onlyFields(body, [
    'to',
    'steps',
    'stepSeconds',
    'autoPromoteAfter',
    'abortIfNotApprovedWithin',
    ...COMMON_FIELDS,
  ])
  const to = colorIn(body)
  const { steps, gating } = stepsAndGates(body)
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
    )
  }
  const { given, ...rest } = optionsIn(body)
  const change = onRequest(from, { type: 'start', to, steps, stepSeconds, gating, reason: given }, Date.now())
  return { change, ...rest }
}

/**
 * A rollout's steps, each a weight or `{"weight": 50, "gate": "manual"}` / `{"weight": 50, "pause": "30s"}`, and the
 * manual gates' timeouts (`autoPromoteAfter` or `abortIfNotApprovedWithin`, durations, not both).
 */
function stepsAndGates(body: Record<string, unknown>): { steps: number[]; gating: Gating | undefined } {
  if (!Array.isArray(body.steps)) throw new BlueGreenError('BG_BAD_REQUEST', stepsProblem(body.steps)!)
  const given = body.steps.map((step: unknown, index: number) => stepIn(step, index))
  const weights = given.map((step) => step.weight)
  const problem = stepsProblem(weights)
  if (problem) throw new BlueGreenError('BG_BAD_REQUEST', problem)
  const steps = weights as number[]
  const gates = given.map((step) => step.gate)
  if (gates.at(-1) !== null)
    throw new BlueGreenError('BG_BAD_REQUEST', 'the last step (100%) completes the rollout: it takes no gate')
  const promote = secondsIn(body, 'autoPromoteAfter')
  const abort = secondsIn(body, 'abortIfNotApprovedWithin')
  if (promote !== undefined && abort !== undefined) {
    throw new BlueGreenError(
      'BG_BAD_REQUEST',
      'autoPromoteAfter and abortIfNotApprovedWithin exclude each other: a manual gate times out one way',
    )
  }
  const manual = gates.some((gate) => gate?.type === 'manual')
  if ((promote !== undefined || abort !== undefined) && !manual) {
    throw new BlueGreenError(
      'BG_BAD_REQUEST',
      'autoPromoteAfter and abortIfNotApprovedWithin apply to manual gates, and no step has one',
    )
  }
  if (!gates.some((gate) => gate !== null)) return { steps, gating: undefined }
  return {
    steps,
    gating: {
      gates,
      ...(promote === undefined ? {} : { autoPromoteAfterSeconds: promote }),
      ...(abort === undefined ? {} : { abortIfNotApprovedWithinSeconds: abort }),
    },
  }
}

function stepIn(step: unknown, index: number): { weight: unknown; gate: RolloutGate | null } {
  if (typeof step !== 'object' || step === null) return { weight: step, gate: null }
  const fields = step as Record<string, unknown>
  const where = `steps[${index}]`
  const unknown = Object.keys(fields).filter((key) => !['weight', 'gate', 'pause'].includes(key))
  if (unknown.length > 0 || (fields.gate !== undefined) === (fields.pause !== undefined)) {
    throw new BlueGreenError(
      'BG_BAD_REQUEST',
      `${where} must be a weight, {"weight": N, "gate": "manual"} or {"weight": N, "pause": "30s"}`,
    )
  }
  if (fields.pause !== undefined)
    return {
      weight: fields.weight,
      gate: { type: 'pause', seconds: secondsOf(fields.pause, `${where}.pause`) },
    }
  if (fields.gate !== 'manual')
    throw new BlueGreenError(
      'BG_BAD_REQUEST',
      `${where}.gate must be "manual", got ${JSON.stringify(fields.gate)}`,
    )
  return { weight: fields.weight, gate: { type: 'manual' } }
}

function secondsIn(body: Record<string, unknown>, field: string): number | undefined {
  return body[field] === undefined ? undefined : secondsOf(body[field], field)
}

/** A duration an operator gives ("30s", "10m", "1h"), in whole seconds from 1 s to a day. */
function secondsOf(value: unknown, where: string): number {
  const ms = typeof value === 'string' ? parseDuration(value) : undefined
  if (ms === undefined || ms % 1000 !== 0 || ms < 1000 || ms > 86_400_000) {
    throw new BlueGreenError(
      'BG_BAD_REQUEST',
      `${where} must be a whole number of seconds from 1 s to 24 h, such as "30s", "10m" or "1h"; got ${JSON.stringify(value)}`,
    )
  }
  return ms / 1000
}

/** POST /rollout/abort: back to where the running rollout started. */
function abortRequest(body: Record<string, unknown>, from: State): ChangeRequest {
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

/**
 * POST /rollout/pause, /rollout/resume, /rollout/promote (`full`: straight to 100%). Each belongs to the generation
 * read here, as an abort does: a step taken in between makes it stale (409) rather than pausing or promoting a
 * different step. Promoting sends more traffic only to the color the rollout already sends some to: nothing to probe (its smoke
 * checks run, though, unless `force`).
 */
function gateRequest(
  action: 'rollout-pause' | 'rollout-resume' | 'rollout-promote',
  body: Record<string, unknown>,
  from: State,
): ChangeRequest {
  const promoting = action === 'rollout-promote'
  onlyFields(body, ['reason', 'wait', 'expectedGeneration', ...(promoting ? ['full', 'force'] : [])])
  const { given, expectedGeneration, wait } = optionsIn(body)
  const now = Date.now()
  const change = promoting
    ? onRequest(from, { type: 'promote', full: optionalBoolean(body, 'full') ?? false, reason: given }, now)
    : onRequest(from, { type: action === 'rollout-pause' ? 'pause' : 'resume', reason: given }, now)
  return {
    change,
    force: true,
    // A promote sends the rollout's color more traffic: its smoke checks run (smoke.on.promote) unless forced.
    ...(promoting ? { forceSmoke: optionalBoolean(body, 'force') ?? false } : {}),
    wait,
    expectedGeneration: expectedGeneration ?? from.generation,
  }
}

/**
 * POST /mirror: `{"percent": 10}` turns mirroring on at that share, `{"enabled": false}` off (the share is kept),
 * `{"enabled": true}` on at the share it had, else `defaultPercent` (mirror.percent). The routing stays as it is
 * and belongs to the generation read here, as for an abort: a change in between makes it stale (409).
 */
function mirrorRequest(body: Record<string, unknown>, from: State, defaultPercent: number): ChangeRequest {
  onlyFields(body, ['enabled', 'percent', 'reason', 'wait', 'expectedGeneration'])
  const enabled = optionalBoolean(body, 'enabled')
  const { percent } = body
  if (
    percent !== undefined &&
    (typeof percent !== 'number' || !Number.isInteger(percent) || percent < 1 || percent > 100)
  ) {
    throw new BlueGreenError(
      'BG_BAD_REQUEST',
      `"percent" must be a whole number from 1 to 100, got ${JSON.stringify(percent)}`,
    )
  }
  if (enabled === undefined && percent === undefined) {
    throw new BlueGreenError(
      'BG_BAD_REQUEST',
      '/mirror takes "percent" (on, at that share) and/or "enabled" (true or false)',
    )
  }
  const on = enabled ?? true
  const share = (percent as number | undefined) ?? from.mirror?.percent ?? defaultPercent
  const { given, expectedGeneration, wait } = optionsIn(body)
  const change: Transition = {
    active: from.active,
    weights: from.weights,
    ...(from.rollout ? { rollout: from.rollout } : {}),
    mirror: { enabled: on, percent: share },
    reason: given ?? (on ? `mirror ${share}% of requests to the idle color` : 'mirror off'),
    trigger: 'admin',
  }
  // Nothing is sent more traffic: nothing to probe.
  return { change, force: true, wait, expectedGeneration: expectedGeneration ?? from.generation }
}

function colorIn(body: Record<string, unknown>): Color {
  if (!isColor(body.to)) {
    throw new BlueGreenError(
      'BG_UNKNOWN_COLOR',
      `"to" must be "blue" or "green", got ${JSON.stringify(body.to)}`,
    )
  }
  return body.to
}

/** POST /rollback: during or right after a rollout, the whole rollout is undone, not just its last step. */
async function rollbackRequest(
  body: Record<string, unknown>,
  from: State,
  previous: () => Promise<State | undefined>,
): Promise<ChangeRequest> {
  onlyFields(body, COMMON_FIELDS)
  const { given, expectedGeneration, ...rest } = optionsIn(body)
  // Otherwise it returns to the state before the one in force, which only the store knows.
  const before = undoesRollout(from) ? undefined : await previous()
  return {
    change: onRequest(from, { type: 'rollback', reason: given, previous: before }, Date.now()),
    // What it returns to belongs to the generation read here: a change in between makes the rollback stale.
    expectedGeneration: expectedGeneration ?? from.generation,
    ...rest,
  }
}
