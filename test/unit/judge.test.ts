import { describe, expect, it } from 'vitest'
import { outageOver } from '../../src/rollout/judge.ts'

// The release guard's pure verdicts; judge() itself is tested beside the windows it reads (windows.test.ts), the
// transitions they lead to in machine.test.ts, and the guard acting on them against real upstreams in
// test/integration/dead-color.test.ts and rollout.test.ts.

describe('outageOver', () => {
  const watched = 1_000_000

  it('is over once the color has had no upstream for the limit, counted from when it was watched', () => {
    // Down before the change was applied: only the watched time counts.
    expect(outageOver(watched - 60_000, watched, watched + 4_999, 5_000)).toBe(false)
    expect(outageOver(watched - 60_000, watched, watched + 5_000, 5_000)).toBe(true)
    // Down during the watch: counted from then.
    expect(outageOver(watched + 10_000, watched, watched + 14_999, 5_000)).toBe(false)
    expect(outageOver(watched + 10_000, watched, watched + 15_000, 5_000)).toBe(true)
  })

  it('is never over while an upstream is available, nor with the rule off', () => {
    expect(outageOver(undefined, watched, watched + 3_600_000, 5_000)).toBe(false)
    expect(outageOver(watched, watched, watched + 3_600_000, 0)).toBe(false)
  })
})
