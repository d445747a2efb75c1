import { describe, expect, it } from 'vitest'
import { BlueGreenError } from '../../src/errors.ts'
import type { Verdict } from '../../src/rollout/judge.ts'
import {
  type Decision,
  type Gating,
  onEvaluation,
  onRequest,
  stepAction,
  stepEndsAt,
  type Transition,
  undoesRollout,
} from '../../src/rollout/machine.ts'
import { initialState, type Rollout, type State } from '../../src/state/state.ts'

// The rollout's transitions are pure: a state, an event and the time in, a change or a decision out. The states
// here are plain records; the admin API and the release guard acting on them against real upstreams and stores
// are tested in test/integration/rollout.test.ts, rollback.test.ts, dead-color.test.ts and admin-changes.test.ts.

const T0 = Date.parse('2026-11-26T12:00:00Z')
const SECOND = 1000

const blue = (generation = 3): State => ({ ...initialState('blue', new Date(T0 - 60 * SECOND)), generation })

/** The state a store would hold once `change` is committed on `state` at `now`. */
function applied(state: State, change: Transition, now: number): State {
  const { rollout, ...rest } = change
  return {
    ...rest,
    generation: state.generation + 1,
    updatedAt: new Date(now).toISOString(),
    updatedBy: `${change.trigger}@test`,
    ...(rollout ? { rollout } : {}),
  }
}

function startOn(state: State, steps = [10, 25, 50, 100], now = T0): State {
  return applied(state, onRequest(state, { type: 'start', to: 'green', steps, stepSeconds: 30 }, now), now)
}

const healthy: Verdict = { verdict: 'healthy', summary: 'error ratio 0.0% (0/80)' }
const failing: Verdict = { verdict: 'failing', summary: 'error ratio 40.0% (32/80)' }
const quiet: Verdict = { verdict: 'undecided', summary: '12 of 50 requests' }

function judged(state: State, verdict: Verdict, now: number, onLowTraffic: 'hold' | 'proceed' = 'hold') {
  return onEvaluation(state, { type: 'step-judged', verdict, onLowTraffic }, now)
}

/** The change a decision asks for; fails the test when it asks for none. */
function changeOf(decision: Decision): Transition {
  if (decision.kind !== 'change') throw new Error(`expected a change, got ${decision.kind}`)
  return decision.change
}

function refusal(run: () => unknown): { code: string; status: number; message: string } {
  try {
    run()
  } catch (error) {
    if (error instanceof BlueGreenError)
      return { code: error.code, status: error.status, message: error.message }
    throw error
  }
  throw new Error('expected a refusal')
}

describe('starting a rollout', () => {
  it('moves to the first step now, remembering where it started', () => {
    const change = onRequest(
      blue(),
      { type: 'start', to: 'green', steps: [10, 50, 100], stepSeconds: 30 },
      T0,
    )
    expect(change).toEqual({
      active: 'blue',
      weights: { blue: 90, green: 10 },
      trigger: 'rollout',
      reason: 'rollout to green: step 1/3 (10%)',
      rollout: {
        to: 'green',
        steps: [10, 50, 100],
        stepSeconds: 30,
        step: 0,
        status: 'running',
        from: { active: 'blue', weights: { blue: 100, green: 0 } },
        startedAt: '2026-11-26T12:00:00.000Z',
        stepStartedAt: '2026-11-26T12:00:00.000Z',
      },
    })
  })

  it('keeps the reason an operator gave', () => {
    const change = onRequest(
      blue(),
      { type: 'start', to: 'green', steps: [10, 100], stepSeconds: 5, reason: 'release 42' },
      T0,
    )
    expect(change.reason).toBe('release 42')
  })

  it('completes at once when the first step is 100%', () => {
    const change = onRequest(blue(), { type: 'start', to: 'green', steps: [100], stepSeconds: 30 }, T0)
    expect(change.active).toBe('green')
    expect(change.weights).toEqual({ blue: 0, green: 100 })
    expect(change.rollout).toMatchObject({ status: 'completed', outcome: 'completed: all traffic on green' })
  })

  it('starts from a split, and the larger share decides the active color (a tie keeps it)', () => {
    const split: State = { ...blue(), weights: { blue: 70, green: 30 } }
    const tie = onRequest(split, { type: 'start', to: 'green', steps: [50, 100], stepSeconds: 30 }, T0)
    expect(tie).toMatchObject({ active: 'blue', weights: { blue: 50, green: 50 } })
    expect(tie.rollout?.from).toEqual({ active: 'blue', weights: { blue: 70, green: 30 } })
    const toBlue: State = { ...blue(), active: 'green', weights: { blue: 30, green: 70 } }
    const majority = onRequest(toBlue, { type: 'start', to: 'blue', steps: [60, 100], stepSeconds: 30 }, T0)
    expect(majority).toMatchObject({ active: 'blue', weights: { blue: 60, green: 40 } })
  })

  it('is refused while another runs, and when its first step is not above the color weight now', () => {
    const running = startOn(blue())
    expect(
      refusal(() => onRequest(running, { type: 'start', to: 'blue', steps: [100], stepSeconds: 30 }, T0)),
    ).toEqual({
      code: 'BG_ROLLOUT_RUNNING',
      status: 409,
      message: 'a rollout to green is running (step 1/4); abort it first',
    })
    const split: State = { ...blue(), weights: { blue: 75, green: 25 } }
    expect(
      refusal(() => onRequest(split, { type: 'start', to: 'green', steps: [25, 100], stepSeconds: 30 }, T0)),
    ).toEqual({
      code: 'BG_BAD_REQUEST',
      status: 400,
      message: "the first step must be above green's weight now (25)",
    })
  })

  it('may start again once the last one has ended', () => {
    const completed = startOn(blue(), [100])
    const again = onRequest(completed, { type: 'start', to: 'blue', steps: [50, 100], stepSeconds: 30 }, T0)
    expect(again.rollout).toMatchObject({ to: 'blue', status: 'running', step: 0 })
  })
})

describe('a running step, judged', () => {
  const running = startOn(blue())
  const ends = stepEndsAt(running.rollout as Rollout)

  it('ends stepSeconds after the step began', () => {
    expect(ends).toBe(T0 + 30 * SECOND)
  })

  it('waits out its time, passing or too quiet to judge', () => {
    for (const verdict of [healthy, quiet]) {
      expect(judged(running, verdict, ends - 1)).toEqual({ kind: 'none' })
      expect(judged(running, verdict, ends - 1, 'proceed')).toEqual({ kind: 'none' })
    }
  })

  it('moves to the next step once its time is up and it passed, the figures in the reason', () => {
    const decision = judged(running, healthy, ends)
    expect(decision).toMatchObject({ kind: 'change', action: 'rollout' })
    expect(changeOf(decision)).toEqual({
      active: 'blue',
      weights: { blue: 75, green: 25 },
      trigger: 'rollout',
      reason: 'rollout to green: step 2/4 (25%) after error ratio 0.0% (0/80)',
      rollout: { ...running.rollout, step: 1, stepStartedAt: new Date(ends).toISOString() },
    })
  })

  it('holds once its time is up with too little traffic, or moves on saying so with onLowTraffic: proceed', () => {
    expect(judged(running, quiet, ends + 60 * SECOND)).toEqual({ kind: 'hold' })
    const proceeded = changeOf(judged(running, quiet, ends, 'proceed'))
    expect(proceeded.reason).toBe(
      'rollout to green: step 2/4 (25%) after too little traffic to judge (12 of 50 requests)',
    )
    expect(proceeded.weights).toEqual({ blue: 75, green: 25 })
  })

  it('rolls everything back to where it started when its figures fail, without waiting out its time', () => {
    const second = applied(running, changeOf(judged(running, healthy, ends)), ends)
    const decision = judged(second, failing, ends + SECOND)
    expect(decision).toMatchObject({ kind: 'change', action: 'rollback' })
    const reason = 'rollout to green rolled back at 25%: error ratio 40.0% (32/80)'
    expect(changeOf(decision)).toEqual({
      active: 'blue',
      weights: { blue: 100, green: 0 },
      trigger: 'rollback',
      reason,
      rollout: { ...second.rollout, status: 'rolled-back', outcome: reason },
    })
  })

  it('goes through every step to completed, the active color following the majority', () => {
    let state = running
    let now = T0
    const seen: string[] = []
    while (state.rollout?.status === 'running') {
      now = stepEndsAt(state.rollout)
      state = applied(state, changeOf(judged(state, healthy, now)), now)
      seen.push(`${state.active} ${state.weights.green}`)
    }
    expect(seen).toEqual(['blue 25', 'blue 50', 'green 100'])
    expect(state.rollout).toMatchObject({
      status: 'completed',
      step: 3,
      outcome: 'completed: all traffic on green',
      startedAt: '2026-11-26T12:00:00.000Z',
      stepStartedAt: new Date(now).toISOString(),
    })
    expect(state.reason).toBe('rollout to green: step 4/4 (100%) after error ratio 0.0% (0/80)')
  })

  it('is a mistake of the caller without a running rollout', () => {
    expect(() => judged(blue(), healthy, T0)).toThrow('no running rollout to judge in generation 3')
  })
})

describe('the release guard finding a color failing', () => {
  it('rolls a running rollout back to where it started, saying why', () => {
    const running = startOn(blue())
    const why = 'green had no available upstream for 5 s'
    const change = changeOf(onEvaluation(running, { type: 'failing', why }, T0 + SECOND))
    expect(change).toMatchObject({
      active: 'blue',
      weights: { blue: 100, green: 0 },
      trigger: 'rollback',
      reason: `rollout to green rolled back at 10%: ${why}`,
      rollout: { status: 'rolled-back', outcome: `rollout to green rolled back at 10%: ${why}` },
    })
  })

  it('rolls a watched change back to the previous routing, or does nothing with none known', () => {
    const green: State = { ...blue(4), active: 'green', weights: { blue: 0, green: 100 } }
    const previous = { active: 'blue' as const, weights: { blue: 100, green: 0 } }
    const decision = onEvaluation(green, { type: 'failing', why: 'green error ratio 9.0%', previous }, T0)
    expect(decision).toEqual({
      kind: 'change',
      action: 'rollback',
      change: { ...previous, trigger: 'rollback', reason: 'automatic rollback: green error ratio 9.0%' },
    })
    expect(onEvaluation(green, { type: 'failing', why: 'green error ratio 9.0%' }, T0)).toEqual({
      kind: 'none',
    })
  })

  it('after a completed rollout, returns to where the rollout started, not to its last step', () => {
    let state = startOn(blue(), [50, 100])
    state = applied(state, changeOf(judged(state, healthy, stepEndsAt(state.rollout as Rollout))), T0)
    expect(state.rollout?.status).toBe('completed')
    const previous = { active: 'blue' as const, weights: { blue: 50, green: 50 } }
    const change = changeOf(onEvaluation(state, { type: 'failing', why: 'green p99 3000 ms', previous }, T0))
    expect(change).toMatchObject({
      weights: { blue: 100, green: 0 },
      reason: 'automatic rollback: green p99 3000 ms',
      rollout: { status: 'rolled-back', outcome: 'automatic rollback: green p99 3000 ms' },
    })
  })
  it('after an aborted rollout, returns to the routing before the abort, as an operator would', () => {
    // Where the rollout started is the routing in force after an abort: returning there would change nothing.
    const running = startOn(blue())
    const aborted = applied(running, onRequest(running, { type: 'abort' }, T0), T0)
    const why = 'blue error ratio 100.0% (20/20)'
    const decision = onEvaluation(aborted, { type: 'failing', why, previous: running }, T0)
    expect(decision).toEqual({
      kind: 'change',
      action: 'rollback',
      change: {
        active: 'blue',
        weights: { blue: 90, green: 10 },
        trigger: 'rollback',
        reason: `automatic rollback: ${why}`,
      },
    })
    expect(changeOf(decision)).toEqual({
      ...onRequest(aborted, { type: 'rollback', previous: running }, T0),
      reason: `automatic rollback: ${why}`,
    })
  })
})

describe('aborting a rollout', () => {
  it('returns to where it started, by the rollout trigger, and says where it stopped', () => {
    const running = startOn(blue())
    const second = applied(
      running,
      changeOf(judged(running, healthy, stepEndsAt(running.rollout as Rollout))),
      T0,
    )
    const reason = 'rollout to green aborted at 25%'
    expect(onRequest(second, { type: 'abort' }, T0)).toEqual({
      active: 'blue',
      weights: { blue: 100, green: 0 },
      trigger: 'rollout',
      reason,
      rollout: { ...second.rollout, status: 'aborted', outcome: reason },
    })
    expect(onRequest(second, { type: 'abort', reason: 'wrong build' }, T0).rollout?.outcome).toBe(
      'wrong build',
    )
  })

  it('is refused with no rollout running', () => {
    const expected = {
      code: 'BG_NO_ROLLOUT',
      status: 409,
      message: 'there is no rollout running or paused to abort',
    }
    expect(refusal(() => onRequest(blue(), { type: 'abort' }, T0))).toEqual(expected)
    const completed = startOn(blue(), [100])
    expect(refusal(() => onRequest(completed, { type: 'abort' }, T0))).toEqual(expected)
  })
})

describe('pausing, resuming and promoting a rollout', () => {
  const pausedOn = (state: State, now = T0 + 5 * SECOND) =>
    applied(state, onRequest(state, { type: 'pause' }, now), now)

  it('pauses at the weights in force, saying since when', () => {
    const running = startOn(blue())
    const pause = onRequest(running, { type: 'pause' }, T0 + 5 * SECOND)
    expect(pause).toEqual({
      active: 'blue',
      weights: { blue: 90, green: 10 },
      trigger: 'rollout',
      reason: 'rollout to green: step 1/4 (10%) paused',
      rollout: { ...running.rollout, status: 'paused', pausedAt: '2026-11-26T12:00:05.000Z' },
    })
  })

  it('does not move on while paused, however long, but is still rolled back on failing figures', () => {
    const paused = pausedOn(startOn(blue()))
    const late = T0 + 3600 * SECOND
    expect(judged(paused, healthy, late)).toEqual({ kind: 'none' })
    expect(judged(paused, quiet, late, 'proceed')).toEqual({ kind: 'none' })
    const rolledBack = changeOf(judged(paused, failing, late))
    expect(rolledBack.weights).toEqual({ blue: 100, green: 0 })
    expect(rolledBack.rollout).toMatchObject({ status: 'rolled-back' })
    expect(rolledBack.rollout).not.toHaveProperty('pausedAt')
    const outage = changeOf(onEvaluation(paused, { type: 'failing', why: 'green had no upstream' }, late))
    expect(outage.rollout?.status).toBe('rolled-back')
    expect(undoesRollout(paused)).toBe(true)
  })

  it('resumes at the same step, its time starting again', () => {
    const paused = pausedOn(startOn(blue()))
    const at = T0 + 60 * SECOND
    const resumed = onRequest(paused, { type: 'resume', reason: 'looks fine' }, at)
    expect(resumed.weights).toEqual({ blue: 90, green: 10 })
    expect(resumed.reason).toBe('looks fine')
    expect(resumed.rollout).toEqual({
      ...paused.rollout,
      status: 'running',
      pausedAt: undefined,
      stepStartedAt: new Date(at).toISOString(),
    })
    expect(resumed.rollout).not.toHaveProperty('pausedAt')
    expect(judged(applied(paused, resumed, at), healthy, at + 29 * SECOND)).toEqual({ kind: 'none' })
  })

  it('promotes to the next step now, running or paused, and resumes a paused one', () => {
    const running = startOn(blue())
    const promoted = onRequest(running, { type: 'promote', full: false }, T0 + SECOND)
    expect(promoted.weights).toEqual({ blue: 75, green: 25 })
    expect(promoted.reason).toBe('rollout to green: step 2/4 (25%) promoted by hand')
    expect(promoted.rollout).toMatchObject({
      step: 1,
      status: 'running',
      stepStartedAt: '2026-11-26T12:00:01.000Z',
    })
    const fromPause = onRequest(pausedOn(running), { type: 'promote', full: false }, T0 + 9 * SECOND)
    expect(fromPause.rollout).toMatchObject({ step: 1, status: 'running' })
    expect(fromPause.rollout).not.toHaveProperty('pausedAt')
  })

  it('promotes straight to 100% with full, completing the rollout', () => {
    const paused = pausedOn(startOn(blue()))
    const full = onRequest(paused, { type: 'promote', full: true }, T0 + 9 * SECOND)
    expect(full.active).toBe('green')
    expect(full.weights).toEqual({ blue: 0, green: 100 })
    expect(full.rollout).toMatchObject({
      step: 3,
      status: 'completed',
      outcome: 'completed: all traffic on green',
    })
    const last = startOn(blue(), [50, 100])
    expect(onRequest(last, { type: 'promote', full: false }, T0).rollout?.status).toBe('completed')
  })

  it('aborts a paused rollout back to where it started', () => {
    const aborted = onRequest(pausedOn(startOn(blue())), { type: 'abort' }, T0 + 9 * SECOND)
    expect(aborted.weights).toEqual({ blue: 100, green: 0 })
    expect(aborted.rollout).toMatchObject({ status: 'aborted' })
    expect(aborted.rollout).not.toHaveProperty('pausedAt')
  })

  it('refuses each where it does not apply, saying what there is', () => {
    const paused = pausedOn(startOn(blue()))
    expect(refusal(() => onRequest(paused, { type: 'pause' }, T0))).toEqual({
      code: 'BG_NO_ROLLOUT',
      status: 409,
      message: 'there is no rollout running to pause (the last one, to green, is paused)',
    })
    expect(refusal(() => onRequest(startOn(blue()), { type: 'resume' }, T0)).message).toBe(
      'there is no paused rollout to resume (the last one, to green, is running)',
    )
    expect(refusal(() => onRequest(blue(), { type: 'promote', full: true }, T0)).message).toBe(
      'there is no rollout running or paused to promote',
    )
    const completed = startOn(blue(), [100])
    expect(refusal(() => onRequest(completed, { type: 'promote', full: false }, T0)).code).toBe(
      'BG_NO_ROLLOUT',
    )
    expect(
      refusal(() => onRequest(paused, { type: 'start', to: 'green', steps: [50, 100], stepSeconds: 5 }, T0))
        .code,
    ).toBe('BG_ROLLOUT_RUNNING')
  })
})

describe('a step with a gate', () => {
  const gated = (gating: Gating, steps = [10, 50, 100]) => {
    const state = blue()
    const start = onRequest(state, { type: 'start', to: 'green', steps, stepSeconds: 30, gating }, T0)
    return applied(state, start, T0)
  }
  const manual: Gating = { gates: [{ type: 'manual' }, null, null] }
  const timeUp = T0 + 30 * SECOND

  it('waits for promote once its time is up and its figures pass, saying since when', () => {
    const running = gated(manual)
    const wait = changeOf(judged(running, healthy, timeUp))
    expect(wait.weights).toEqual({ blue: 90, green: 10 })
    expect(wait.reason).toBe(
      'rollout to green: step 1/3 (10%) waits for promote after error ratio 0.0% (0/80)',
    )
    expect(wait.rollout?.waiting).toEqual({ for: 'promote', since: '2026-11-26T12:00:30.000Z' })
    const waiting = applied(running, wait, timeUp)
    expect(judged(waiting, healthy, timeUp + 3600 * SECOND)).toEqual({ kind: 'none' })
    expect(changeOf(judged(waiting, failing, timeUp + SECOND)).rollout?.status).toBe('rolled-back')
    const promoted = onRequest(waiting, { type: 'promote', full: false }, timeUp + 5 * SECOND)
    expect(promoted.rollout).toMatchObject({ step: 1, status: 'running' })
    expect(promoted.rollout).not.toHaveProperty('waiting')
  })

  it('a pause moves on by itself once its time is over', () => {
    const running = gated({ gates: [{ type: 'pause', seconds: 20 }, null, null] })
    const waiting = applied(running, changeOf(judged(running, healthy, timeUp)), timeUp)
    expect(waiting.rollout?.waiting).toEqual({
      for: 'pause',
      since: '2026-11-26T12:00:30.000Z',
      until: '2026-11-26T12:00:50.000Z',
    })
    expect(judged(waiting, quiet, timeUp + 19 * SECOND)).toEqual({ kind: 'none' })
    const next = changeOf(judged(waiting, quiet, timeUp + 20 * SECOND))
    expect(next.weights).toEqual({ blue: 50, green: 50 })
    expect(next.reason).toBe('rollout to green: step 2/3 (50%) after a pause of 20 s')
  })

  it('autoPromoteAfterSeconds promotes a manual gate nobody promoted', () => {
    const running = gated({ ...manual, autoPromoteAfterSeconds: 60 })
    const waiting = applied(running, changeOf(judged(running, healthy, timeUp)), timeUp)
    expect(waiting.rollout?.waiting).toMatchObject({
      until: '2026-11-26T12:01:30.000Z',
      onTimeout: 'promote',
    })
    expect(judged(waiting, healthy, timeUp + 59 * SECOND)).toEqual({ kind: 'none' })
    const decision = judged(waiting, healthy, timeUp + 60 * SECOND)
    expect(decision).toMatchObject({ kind: 'change', action: 'rollout' })
    expect(changeOf(decision).reason).toBe(
      'rollout to green: step 2/3 (50%) promoted automatically after 60 s',
    )
  })

  it('abortIfNotApprovedWithinSeconds aborts the rollout back where it started', () => {
    const running = gated({ ...manual, abortIfNotApprovedWithinSeconds: 60 })
    const waiting = applied(running, changeOf(judged(running, healthy, timeUp)), timeUp)
    const decision = judged(waiting, healthy, timeUp + 60 * SECOND)
    expect(decision).toMatchObject({ kind: 'change', action: 'rollout-abort' })
    const change = changeOf(decision)
    expect(change.weights).toEqual({ blue: 100, green: 0 })
    expect(change.rollout).toMatchObject({
      status: 'aborted',
      outcome: 'rollout to green aborted at 10%: not promoted within 60 s',
    })
    expect(change.rollout).not.toHaveProperty('waiting')
  })

  it("while paused, a gate's time running out does nothing until resumed", () => {
    const running = gated({ ...manual, autoPromoteAfterSeconds: 60 })
    const waiting = applied(running, changeOf(judged(running, healthy, timeUp)), timeUp)
    const paused = applied(waiting, onRequest(waiting, { type: 'pause' }, timeUp + SECOND), timeUp + SECOND)
    expect(judged(paused, healthy, timeUp + 3600 * SECOND)).toEqual({ kind: 'none' })
  })

  it('without a gate, a step moves on as before', () => {
    const running = gated({ gates: [null, { type: 'manual' }, null] })
    expect(changeOf(judged(running, healthy, timeUp)).rollout).toMatchObject({ step: 1 })
  })
})

describe("an operator's rollback", () => {
  it('undoes a running or completed rollout as a whole', () => {
    for (const state of [startOn(blue()), startOn(blue(), [100])]) {
      const change = onRequest(state, { type: 'rollback' }, T0)
      expect(change).toEqual({
        active: 'blue',
        weights: { blue: 100, green: 0 },
        trigger: 'rollback',
        reason: 'rollback of the rollout to green',
        rollout: { ...state.rollout, status: 'rolled-back', outcome: 'rollback of the rollout to green' },
      })
      expect(onRequest(state, { type: 'rollback', reason: 'pager' }, T0).rollout?.outcome).toBe('pager')
    }
  })

  it('otherwise returns to the previous state, as a plain change that carries no rollout', () => {
    const green: State = { ...blue(8), active: 'green', weights: { blue: 0, green: 100 } }
    const change = onRequest(green, { type: 'rollback', previous: blue(7) }, T0)
    expect(change).toEqual({
      active: 'blue',
      weights: { blue: 100, green: 0 },
      trigger: 'rollback',
      reason: 'rollback to generation 7',
    })
  })

  it('after an aborted or rolled-back rollout, is a rollback like any other', () => {
    const running = startOn(blue())
    const aborted = applied(running, onRequest(running, { type: 'abort' }, T0), T0)
    const change = onRequest(aborted, { type: 'rollback', previous: running }, T0)
    expect(change).toEqual({
      active: 'blue',
      weights: { blue: 90, green: 10 },
      trigger: 'rollback',
      reason: `rollback to generation ${running.generation}`,
    })
  })

  it('is refused with nothing to return to, saying why', () => {
    expect(refusal(() => onRequest(blue(0), { type: 'rollback' }, T0))).toEqual({
      code: 'BG_NO_PREVIOUS_STATE',
      status: 409,
      message: 'there has been no change to roll back',
    })
    const lost = refusal(() => onRequest(blue(5), { type: 'rollback' }, T0))
    expect(lost.code).toBe('BG_NO_PREVIOUS_STATE')
    expect(lost.message).toMatch(
      /^there is no earlier routing to roll back to: the state before generation 5/,
    )
  })
})

describe('undoesRollout', () => {
  it('says when a rollback, by an operator or the release guard, returns to where a rollout started', () => {
    const running = startOn(blue())
    const completed = startOn(blue(), [100])
    const aborted = applied(running, onRequest(running, { type: 'abort' }, T0), T0)
    const rolledBack = applied(running, onRequest(running, { type: 'rollback' }, T0), T0)
    const table = [blue(), running, completed, aborted, rolledBack].map((state) => [
      state.rollout?.status ?? 'none',
      undoesRollout(state),
    ])
    expect(table).toEqual([
      ['none', false],
      ['running', true],
      ['completed', true],
      ['aborted', false],
      ['rolled-back', false],
    ])
  })
})

describe('stepAction', () => {
  it('rolls back a failing step at once, before its time is up', () => {
    expect(stepAction('failing', false, 'hold')).toBe('roll-back')
    expect(stepAction('failing', true, 'proceed')).toBe('roll-back')
  })

  it('waits out the time of a step that is not failing, judged or not', () => {
    for (const verdict of ['healthy', 'undecided'] as const) {
      expect(stepAction(verdict, false, 'hold')).toBe('wait')
      expect(stepAction(verdict, false, 'proceed')).toBe('wait')
    }
  })

  it('moves on from a healthy step once its time is up', () => {
    expect(stepAction('healthy', true, 'hold')).toBe('advance')
    expect(stepAction('healthy', true, 'proceed')).toBe('advance')
  })

  it('holds a step too quiet to judge, unless onLowTraffic is proceed', () => {
    expect(stepAction('undecided', true, 'hold')).toBe('hold')
    expect(stepAction('undecided', true, 'proceed')).toBe('advance')
  })
})
