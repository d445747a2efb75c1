import { describe, expect, it } from 'vitest'
import {
  changesNothing,
  checkedChange,
  checkedGeneration,
  freezeState,
  initialState,
  type Rollout,
  replacedState,
  rollbackTarget,
  rolloutProblem,
  type State,
  supersedes,
} from '../../src/state/state.ts'

const at = (generation: number, changes: Partial<State> = {}): State => ({
  ...initialState('blue', new Date('2026-11-26T12:00:00Z')),
  generation,
  ...changes,
})

describe('supersedes', () => {
  it('takes any state when there is none yet, and a newer generation over an older one', () => {
    expect(supersedes(at(0), undefined)).toBe(true)
    expect(supersedes(at(4), at(3))).toBe(true)
    expect(supersedes(at(3), at(4))).toBe(false)
  })

  it('ignores the same state again, whatever order its keys come in', () => {
    const state = at(7, { reason: 'release 42', trigger: 'admin' })
    const reordered = JSON.parse(JSON.stringify(Object.fromEntries(Object.entries(state).reverse()))) as State
    expect(supersedes(reordered, state)).toBe(false)
    expect(supersedes(state, state)).toBe(false)
    // Built in code, a state may say rollout: undefined; read back from a store, it has no such key.
    expect(supersedes({ ...state, rollout: undefined }, reordered)).toBe(false)
  })

  it('takes a different state at the same generation: the store has the truth after a raced restart', () => {
    const applied = at(7, { reason: 'release 42' })
    expect(supersedes(at(7, { reason: 'raced a restart' }), applied)).toBe(true)
    expect(supersedes(at(7, { active: 'green', weights: { blue: 0, green: 100 } }), applied)).toBe(true)
    expect(supersedes(at(6, { active: 'green', weights: { blue: 0, green: 100 } }), applied)).toBe(false)
  })
})

describe('what a change alters', () => {
  const green = at(3, { active: 'green', weights: { blue: 0, green: 100 }, reason: 'release' })
  const rollout = (status: Rollout['status']): Rollout => ({
    to: 'green',
    steps: [10, 100],
    stepSeconds: 60,
    step: 0,
    status,
    from: { active: 'blue', weights: { blue: 100, green: 0 } },
    startedAt: '2026-11-26T12:00:00Z',
    stepStartedAt: '2026-11-26T12:00:00Z',
  })

  it('nothing, for the same routing asked again, whoever asks and why', () => {
    expect(changesNothing(green, { active: 'green', weights: { blue: 0, green: 100 } })).toBe(true)
    const again: State = { ...green, generation: 4, reason: 'again', updatedBy: 'someone else' }
    expect(changesNothing(green, again)).toBe(true)
    expect(changesNothing(green, { active: 'blue', weights: { blue: 0, green: 100 } })).toBe(false)
    expect(changesNothing(green, { active: 'green', weights: { blue: 1, green: 99 } })).toBe(false)
  })

  it('something, when either side has a running rollout; nothing for the record of one that ended', () => {
    const canary = at(4, { weights: { blue: 90, green: 10 }, rollout: rollout('running') })
    const plain = { active: 'blue' as const, weights: { blue: 90, green: 10 } }
    expect(changesNothing(canary, plain)).toBe(false)
    expect(changesNothing(at(4, plain), { ...plain, rollout: rollout('running') })).toBe(false)
    const paused = { ...rollout('paused'), pausedAt: '2026-11-26T12:00:05Z' }
    expect(changesNothing(at(4, { ...plain, rollout: paused }), plain)).toBe(false)
    for (const status of ['completed', 'rolled-back', 'aborted'] as const) {
      expect(changesNothing(at(4, { ...plain, rollout: rollout(status) }), plain), status).toBe(true)
    }
  })

  it('keeps as replaced the state before, when the new one routes as the stored one', () => {
    const blue = at(2)
    expect(replacedState(green, blue, null)).toBe(blue)
    expect(replacedState(blue, green, blue)).toBe(green)
    const ended = at(4, { active: 'green', weights: { blue: 0, green: 100 }, reason: 'rollout ended' })
    expect(replacedState(ended, green, blue)).toBe(blue)
    expect(replacedState(green, green, null)).toBeUndefined()
  })

  it('offers as a rollback target only a state that routes otherwise', () => {
    expect(rollbackTarget(green, at(2))).toEqual(at(2))
    expect(
      rollbackTarget(green, at(2, { active: 'green', weights: { blue: 0, green: 100 } })),
    ).toBeUndefined()
    expect(rollbackTarget(green, null)).toBeUndefined()
  })
})

describe('freezeState', () => {
  it('freezes every level, so no holder of a state can change what the others see', () => {
    const now = '2026-11-26T12:00:00.000Z'
    const state = freezeState({
      ...at(4, { weights: { blue: 90, green: 10 } }),
      rollout: {
        to: 'green',
        steps: [10, 100],
        stepSeconds: 60,
        step: 0,
        status: 'running',
        from: { active: 'blue', weights: { blue: 100, green: 0 } },
        startedAt: now,
        stepStartedAt: now,
      },
    })
    for (const part of [state, state.weights, state.rollout, state.rollout!.steps, state.rollout!.from]) {
      expect(Object.isFrozen(part)).toBe(true)
    }
    expect(Object.isFrozen(state.rollout!.from.weights)).toBe(true)
  })
})

describe('checkedChange and checkedGeneration', () => {
  it("copies the caller's rollout, which freezing the stored state must leave alone", () => {
    const rollout: Rollout = {
      to: 'green',
      steps: [50, 100],
      stepSeconds: 60,
      step: 0,
      status: 'running',
      from: { active: 'blue', weights: { blue: 100, green: 0 } },
      startedAt: '2026-11-26T12:00:00.000Z',
      stepStartedAt: '2026-11-26T12:00:00.000Z',
    }
    const checked = checkedChange({
      active: 'blue',
      weights: { blue: 50, green: 50 },
      updatedBy: 't',
      reason: 'r',
      rollout,
    })
    expect(checked.rollout).toEqual(rollout)
    expect(checked.rollout).not.toBe(rollout)
    expect(checked.rollout!.from).not.toBe(rollout.from)
  })

  it('takes no generation or a non-negative integer, and refuses anything else with 400 BG_BAD_REQUEST', () => {
    expect(checkedGeneration(undefined)).toBeUndefined()
    expect(checkedGeneration(0)).toBe(0)
    expect(checkedGeneration(7)).toBe(7)
    for (const bad of [-1, 1.5, '7', null, Number.MAX_SAFE_INTEGER + 1, Number.NaN]) {
      expect(() => checkedGeneration(bad), String(bad)).toThrow(
        expect.objectContaining({ code: 'BG_BAD_REQUEST', status: 400 }),
      )
    }
  })
})

describe('rolloutProblem: pauses and gates', () => {
  // As the previous version stored it: no pausedAt, gates, timeouts or waiting.
  const stored: Rollout = {
    to: 'green',
    steps: [10, 50, 100],
    stepSeconds: 30,
    step: 0,
    status: 'running',
    from: { active: 'blue', weights: { blue: 100, green: 0 } },
    startedAt: '2026-11-26T12:00:00.000Z',
    stepStartedAt: '2026-11-26T12:00:00.000Z',
  }
  const since = '2026-11-26T12:00:30.000Z'

  it('reads a rollout stored before pauses and gates existed, and one with them', () => {
    expect(rolloutProblem(stored)).toBeUndefined()
    expect(rolloutProblem({ ...stored, status: 'paused', pausedAt: since })).toBeUndefined()
    const gated = {
      ...stored,
      gates: [{ type: 'manual' }, { type: 'pause', seconds: 20 }, null],
      autoPromoteAfterSeconds: 60,
      waiting: { for: 'promote', since, until: '2026-11-26T12:01:30.000Z', onTimeout: 'promote' },
    }
    expect(rolloutProblem(gated)).toBeUndefined()
  })

  it('refuses a pause without its time, gates that do not fit the steps, both timeouts, a stray wait', () => {
    expect(rolloutProblem({ ...stored, status: 'paused' })).toMatch(/pausedAt must be a time/)
    expect(rolloutProblem({ ...stored, pausedAt: since })).toMatch(/pausedAt must be a time/)
    expect(rolloutProblem({ ...stored, gates: [null, null] })).toMatch(/a gate or null for each step/)
    expect(rolloutProblem({ ...stored, gates: [null, { type: 'manual' }, { type: 'manual' }] })).toMatch(
      /null for the last/,
    )
    expect(rolloutProblem({ ...stored, gates: [{ type: 'pause' }, null, null] })).toMatch(/must each be null/)
    expect(
      rolloutProblem({ ...stored, autoPromoteAfterSeconds: 5, abortIfNotApprovedWithinSeconds: 5 }),
    ).toMatch(/exclude each other/)
    expect(rolloutProblem({ ...stored, waiting: { for: 'approval', since } })).toMatch(
      /rollout.waiting must be/,
    )
    expect(rolloutProblem({ ...stored, status: 'completed', waiting: { for: 'pause', since } })).toMatch(
      /only for a running or paused rollout/,
    )
  })
})
