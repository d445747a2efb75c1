import { describe, expect, it } from 'vitest'
import { initialState, type State, supersedes } from '../../src/state/state.ts'

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
