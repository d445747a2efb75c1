import type { ChangeAction } from '../audit/audit.ts'
import { activeFor, type Color, weightsWith } from '../colors.ts'
import type { RolloutConfig } from '../config/types.ts'
import { BlueGreenError } from '../errors.ts'
import {
  inProgress,
  type Rollout,
  type RolloutGate,
  type RolloutStatus,
  type RolloutWaiting,
  type State,
  type StateChange,
  type Trigger,
} from '../state/state.ts'
import type { Verdict } from './judge.ts'

// The rollout's state machine, and every rollback, pure: a state, an event and the time in, the change to commit
// (or what the release guard is to do) out. The admin API and the release guard read what an event needs (a
// request's body, the pooled figures, the previous state), ask here, and commit the answer through the store's
// compare-and-set. A rollout lives in the state itself (State.rollout), so every replica drives the same one.
//
//   start --> running --(step's time up, figures pass)--> running ... --(the step at 100%)--> completed
//   running --(figures fail, or its color has no upstream)--> rolled-back         (the release guard)
//   running --abort--> aborted                                                    (an operator)
//   running --pause--> paused --resume--> running (the step's time starts again)  (an operator)
//   running | paused --promote--> running at the next step, or completed at 100%  (an operator; full: to 100%)
//   paused --(figures fail, or its color has no upstream)--> rolled-back          (the release guard)
//   paused --abort--> aborted
//   running --(step's time up, figures pass, the step has a gate)--> running, waiting at the gate:
//     manual: waits for promote; autoPromoteAfterSeconds promotes it, abortIfNotApprovedWithinSeconds aborts it
//     pause:  moves on once its seconds are over
//   (waiting, figures that fail still roll it back; a pause stops its clocks from acting until resumed)
//   running | paused | completed --rollback--> rolled-back   (an operator; the guard, watching a completed one)
// A first step of 100% completes at once. Any other rollback, and one after an aborted or rolled-back rollout,
// returns to the previous state, the last routing that differs.
//
// A step whose time is up but whose figures are too few to judge holds (rollout.onLowTraffic: hold): it stays
// running, and the hold is not stored; a wait at a gate is stored (Rollout.waiting), so that its timeout is acted on
// once across the fleet and a restart keeps it. A new state is one more status in ROLLOUT_STATUSES (as 'paused'),
// one more case in `onRequest` or `onEvaluation`, and one more line above.

/** A change to commit: the store fills in the generation and time, the caller who made it (`updatedBy`). */
export interface Transition extends Omit<StateChange, 'updatedBy' | 'trigger'> {
  trigger: Trigger
}

/** The gates a rollout is started with, as the rollout keeps them. */
export type Gating = Pick<Rollout, 'gates' | 'autoPromoteAfterSeconds' | 'abortIfNotApprovedWithinSeconds'>

/** What an operator asks for through the admin API, its body already checked for shape. */
export type RolloutRequest =
  | { type: 'start'; to: Color; steps: number[]; stepSeconds: number; gating?: Gating; reason?: string }
  | { type: 'abort'; reason?: string }
  | { type: 'pause'; reason?: string }
  | { type: 'resume'; reason?: string }
  /** The next step now; `full`: straight to 100%. */
  | { type: 'promote'; full: boolean; reason?: string }
  /** `previous` is the state a rollback returns to outside a rollout (StateStore.previous, read when needed). */
  | { type: 'rollback'; reason?: string; previous?: State }

/** What the release guard found at an evaluation. */
export type Evaluation =
  /** A running rollout's step, judged on its figures since the step began. */
  | { type: 'step-judged'; verdict: Verdict; onLowTraffic: RolloutConfig['onLowTraffic'] }
  /**
   * The watched color failed (its figures, or no available upstream for too long), or the rolled-out color had
   * no available upstream. `why` says which; `previous` as in RolloutRequest.
   */
  | { type: 'failing'; why: string; previous?: Pick<State, 'active' | 'weights'> }

/** What the release guard does after an evaluation. */
export type Decision =
  /** Commit `change`, audited as `action`. */
  | { kind: 'change'; action: ChangeAction; change: Transition }
  /** The step's time is up but too few requests came to judge it: it stays at its weight (rollout.onLowTraffic). */
  | { kind: 'hold' }
  /** Nothing to do now: the step's time is not up, or there is nothing to roll back to. */
  | { kind: 'none' }

/** An operator's request: the change to commit, or a BlueGreenError saying why the request is refused. */
export function onRequest(state: State, event: RolloutRequest, now: number): Transition {
  switch (event.type) {
    case 'start':
      return start(state, event, now)
    case 'abort':
      return abort(state, event.reason)
    case 'pause':
      return pause(state, event.reason, now)
    case 'resume':
      return resume(state, event.reason, now)
    case 'promote':
      return promote(state, event.full, event.reason, now)
    case 'rollback':
      return rollBackByHand(state, event.reason, event.previous)
  }
}

/** What the release guard is to do about what it found. */
export function onEvaluation(state: State, event: Evaluation, now: number): Decision {
  switch (event.type) {
    case 'step-judged':
      return judgedStep(state, event, now)
    case 'failing':
      return failing(state, event.why, event.previous)
  }
}

/**
 * Whether a rollback from `state`, by an operator or the release guard, returns to where its rollout started:
 * a running or completed rollout is one release, undone as a whole. Otherwise (no rollout, or one aborted or
 * rolled back) it returns to the previous state, the last routing that differs, which the caller reads from the
 * store first.
 */
export function undoesRollout(state: State): boolean {
  return inProgress(state.rollout) || state.rollout?.status === 'completed'
}

/** When the running step's time is up (ms since the epoch). */
export function stepEndsAt(rollout: Rollout): number {
  return Date.parse(rollout.stepStartedAt) + rollout.stepSeconds * 1000
}

/**
 * What a running rollout's step does at an evaluation:
 * - roll-back: its figures fail the thresholds (at any time: a failing step does not wait out its time);
 * - wait: its time is not up yet;
 * - hold: its time is up but it has too few requests to judge, and `rollout.onLowTraffic` is hold;
 * - advance: its time is up and it passed, or it could not be judged and `onLowTraffic` is proceed.
 */
export type StepAction = 'roll-back' | 'wait' | 'hold' | 'advance'

export function stepAction(
  verdict: Verdict['verdict'],
  timeUp: boolean,
  onLowTraffic: RolloutConfig['onLowTraffic'],
): StepAction {
  if (verdict === 'failing') return 'roll-back'
  if (!timeUp) return 'wait'
  if (verdict === 'undecided' && onLowTraffic === 'hold') return 'hold'
  return 'advance'
}

/** POST /rollout: the first step now; the release guard takes it from there. */
function start(state: State, event: Extract<RolloutRequest, { type: 'start' }>, now: number): Transition {
  const { to, steps, stepSeconds } = event
  if (state.rollout && inProgress(state.rollout)) {
    throw new BlueGreenError(
      'BG_ROLLOUT_RUNNING',
      `a rollout to ${state.rollout.to} is ${state.rollout.status} (step ${state.rollout.step + 1}/${state.rollout.steps.length}); abort it first`,
    )
  }
  if (steps[0]! <= state.weights[to]) {
    throw new BlueGreenError(
      'BG_BAD_REQUEST',
      `the first step must be above ${to}'s weight now (${state.weights[to]})`,
    )
  }
  const at = new Date(now).toISOString()
  const rollout: Rollout = {
    to,
    steps,
    stepSeconds,
    step: 0,
    status: 'running',
    from: { active: state.active, weights: state.weights },
    startedAt: at,
    stepStartedAt: at,
    ...event.gating,
  }
  return atStep(state, rollout, 0, at, event.reason ?? describeStep(rollout, 0))
}

function judgedStep(
  state: State,
  event: Extract<Evaluation, { type: 'step-judged' }>,
  now: number,
): Decision {
  const rollout = rolloutInProgress(state)
  const { verdict, summary } = event.verdict
  const action = stepAction(verdict, now >= stepEndsAt(rollout), event.onLowTraffic)
  if (action === 'roll-back') return rollBackRollout(rollout, summary)
  // Paused, it is still rolled back on failing figures, but moves on only when resumed or promoted.
  if (rollout.status === 'paused') return { kind: 'none' }
  // At its gate, the step's figures have passed already: only its gate's clock moves it on.
  if (rollout.waiting) return atGate(state, rollout, rollout.waiting, now)
  if (action === 'wait') return { kind: 'none' }
  if (action === 'hold') return { kind: 'hold' }
  const judged = verdict === 'undecided' ? `too little traffic to judge (${summary})` : summary
  const gate = rollout.gates?.[rollout.step]
  if (gate) return { kind: 'change', action: 'rollout', change: waitAt(state, rollout, gate, judged, now) }
  return nextStep(state, rollout, `after ${judged}`, now)
}

function nextStep(state: State, rollout: Rollout, why: string, now: number): Decision {
  const step = rollout.step + 1
  const reason = `${describeStep(rollout, step)} ${why}`
  return {
    kind: 'change',
    action: 'rollout',
    change: atStep(state, rollout, step, new Date(now).toISOString(), reason),
  }
}

/** The step's figures passed and it has a gate: it stays at its weight, waiting, and says so in the state. */
function waitAt(state: State, rollout: Rollout, gate: RolloutGate, judged: string, now: number): Transition {
  const since = new Date(now).toISOString()
  const at = (seconds: number) => new Date(now + seconds * 1000).toISOString()
  const waiting: RolloutWaiting =
    gate.type === 'pause'
      ? { for: 'pause', since, until: at(gate.seconds) }
      : rollout.autoPromoteAfterSeconds !== undefined
        ? { for: 'promote', since, until: at(rollout.autoPromoteAfterSeconds), onTimeout: 'promote' }
        : rollout.abortIfNotApprovedWithinSeconds !== undefined
          ? { for: 'promote', since, until: at(rollout.abortIfNotApprovedWithinSeconds), onTimeout: 'abort' }
          : { for: 'promote', since }
  const what = gate.type === 'pause' ? `a pause of ${gate.seconds} s` : 'promote'
  return {
    active: state.active,
    weights: state.weights,
    trigger: 'rollout',
    reason: `${describeStep(rollout, rollout.step)} waits for ${what} after ${judged}`,
    rollout: { ...rollout, waiting },
  }
}

/** A step waiting at its gate: moves on (or is aborted) once the gate's time is over, if it has one. */
function atGate(state: State, rollout: Rollout, waiting: RolloutWaiting, now: number): Decision {
  if (waiting.until === undefined || now < Date.parse(waiting.until)) return { kind: 'none' }
  const waited = `${(Date.parse(waiting.until) - Date.parse(waiting.since)) / 1000} s`
  if (waiting.for === 'pause') return nextStep(state, rollout, `after a pause of ${waited}`, now)
  if (waiting.onTimeout === 'promote')
    return nextStep(state, rollout, `promoted automatically after ${waited}`, now)
  const reason = `rollout to ${rollout.to} aborted at ${rollout.steps[rollout.step]}%: not promoted within ${waited}`
  return { kind: 'change', action: 'rollout-abort', change: ended(rollout, 'aborted', 'rollout', reason) }
}

/** The rollout at `step`, which it began `at`: completed once that step is 100%. */
function atStep(state: State, rollout: Rollout, step: number, at: string, reason: string): Transition {
  const weight = rollout.steps[step]!
  const weights = weightsWith(rollout.to, weight)
  const done = weight === 100
  const moving = withoutPause(rollout)
  return {
    active: activeFor(weights, state.active),
    weights,
    trigger: 'rollout',
    reason,
    rollout: {
      ...moving,
      step,
      stepStartedAt: at,
      status: done ? 'completed' : 'running',
      ...(done ? { outcome: `completed: all traffic on ${rollout.to}` } : {}),
    },
  }
}

/** "rollout to green: step 2/4 (25%)" */
function describeStep(rollout: Rollout, step: number): string {
  return `rollout to ${rollout.to}: step ${step + 1}/${rollout.steps.length} (${rollout.steps[step]}%)`
}

/** POST /rollout/abort: back to where the rollout started. */
function abort(state: State, given: string | undefined): Transition {
  const rollout = state.rollout
  if (!rollout || !inProgress(rollout)) {
    throw new BlueGreenError('BG_NO_ROLLOUT', 'there is no rollout running or paused to abort')
  }
  const reason = given ?? `rollout to ${rollout.to} aborted at ${rollout.steps[rollout.step]}%`
  return ended(rollout, 'aborted', 'rollout', reason)
}

/** POST /rollout/pause: the weights stay; the release guard still rolls it back on failing figures or an outage. */
function pause(state: State, given: string | undefined, now: number): Transition {
  const rollout = state.rollout
  if (rollout?.status !== 'running') {
    throw new BlueGreenError('BG_NO_ROLLOUT', `there is no rollout running to pause${stateOf(rollout)}`)
  }
  const at = new Date(now).toISOString()
  return {
    active: state.active,
    weights: state.weights,
    trigger: 'rollout',
    reason: given ?? `${describeStep(rollout, rollout.step)} paused`,
    rollout: { ...rollout, status: 'paused', pausedAt: at },
  }
}

/** POST /rollout/resume: the step in force starts its time again, so it is judged on figures since the resume. */
function resume(state: State, given: string | undefined, now: number): Transition {
  const rollout = state.rollout
  if (rollout?.status !== 'paused') {
    throw new BlueGreenError('BG_NO_ROLLOUT', `there is no paused rollout to resume${stateOf(rollout)}`)
  }
  const reason = given ?? `${describeStep(rollout, rollout.step)} resumed`
  return atStep(state, rollout, rollout.step, new Date(now).toISOString(), reason)
}

/** POST /rollout/promote: the next step now, without waiting for its time or figures; `full`: 100% now. */
function promote(state: State, full: boolean, given: string | undefined, now: number): Transition {
  const rollout = state.rollout
  if (!rollout || !inProgress(rollout)) {
    throw new BlueGreenError(
      'BG_NO_ROLLOUT',
      `there is no rollout running or paused to promote${stateOf(rollout)}`,
    )
  }
  const step = full ? rollout.steps.length - 1 : rollout.step + 1
  const reason = given ?? `${describeStep(rollout, step)} promoted by hand`
  return atStep(state, rollout, step, new Date(now).toISOString(), reason)
}

/** " (the last one completed)": what a refusal says about the rollout there is, if any. */
function stateOf(rollout: Rollout | undefined): string {
  return rollout ? ` (the last one, to ${rollout.to}, is ${rollout.status})` : ''
}

/** POST /rollback: undoes the whole rollout during or right after one, else returns to the previous state. */
function rollBackByHand(state: State, given: string | undefined, previous: State | undefined): Transition {
  if (state.rollout && undoesRollout(state)) {
    const reason = given ?? `rollback of the rollout to ${state.rollout.to}`
    return ended(state.rollout, 'rolled-back', 'rollback', reason)
  }
  if (!previous) {
    const why =
      state.generation === 0
        ? 'there has been no change to roll back'
        : `there is no earlier routing to roll back to: the state before generation ${state.generation} is not known (an older version stored a repeated change in its place, or the store lost it); switch or set the weights instead`
    throw new BlueGreenError('BG_NO_PREVIOUS_STATE', why)
  }
  return {
    active: previous.active,
    weights: previous.weights,
    trigger: 'rollback',
    reason: given ?? `rollback to generation ${previous.generation}`,
  }
}

/** The release guard's rollback: of the running rollout, or of the watched change. */
function failing(
  state: State,
  why: string,
  previous: Pick<State, 'active' | 'weights'> | undefined,
): Decision {
  if (state.rollout && inProgress(state.rollout)) return rollBackRollout(state.rollout, why)
  const reason = `automatic rollback: ${why}`
  if (state.rollout && undoesRollout(state)) {
    return {
      kind: 'change',
      action: 'rollback',
      change: ended(state.rollout, 'rolled-back', 'rollback', reason),
    }
  }
  if (!previous) return { kind: 'none' }
  return {
    kind: 'change',
    action: 'rollback',
    change: { active: previous.active, weights: previous.weights, trigger: 'rollback', reason },
  }
}

function rollBackRollout(rollout: Rollout, why: string): Decision {
  const reason = `rollout to ${rollout.to} rolled back at ${rollout.steps[rollout.step]}%: ${why}`
  return { kind: 'change', action: 'rollback', change: ended(rollout, 'rolled-back', 'rollback', reason) }
}

/** The rollout ended (`reason` is its outcome), and the routing back where it started. */
function ended(
  rollout: Rollout,
  status: Exclude<RolloutStatus, 'running' | 'completed'>,
  trigger: Trigger,
  reason: string,
): Transition {
  return {
    active: rollout.from.active,
    weights: rollout.from.weights,
    trigger,
    reason,
    rollout: { ...withoutPause(rollout), status, outcome: reason },
  }
}

function rolloutInProgress(state: State): Rollout {
  if (!state.rollout || !inProgress(state.rollout)) {
    // A caller's mistake, not a user's: the guard judges a step only while a rollout runs or is paused.
    throw new Error(`no running rollout to judge in generation ${state.generation}`)
  }
  return state.rollout
}

/** The rollout neither paused nor waiting at a gate: at a new step, resumed, or ended. */
function withoutPause(rollout: Rollout): Rollout {
  const { pausedAt: _paused, waiting: _waiting, ...rest } = rollout
  return rest
}
