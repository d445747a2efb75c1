import { describe, expect, it } from 'vitest'
import { type MirrorSnapshot, poolMirror, sameEpoch } from '../../src/mirror/exchange.ts'

// Which replicas' mirror figures add up: the same setting and rules, and the same mirror generation.

function snapshot(from: { generation: number; changed: boolean }, compared = 1, epoch = 'e'): MirrorSnapshot {
  return {
    epoch,
    since: 0,
    from,
    window: { blue: { compared: 0, mismatched: 0 }, green: { compared, mismatched: 1 } },
    routes: [{ route: 'GET /users', compared, mismatched: 1 }],
  }
}

describe('sameEpoch', () => {
  it('adds figures counted under the same setting only', () => {
    expect(
      sameEpoch(snapshot({ generation: 4, changed: true }), snapshot({ generation: 4, changed: true })),
    ).toBe(true)
    expect(
      sameEpoch(
        snapshot({ generation: 4, changed: true }),
        snapshot({ generation: 4, changed: true }, 1, 'other'),
      ),
    ).toBe(false)
  })

  it('leaves out figures of the generation before, kept by a replica that has not applied the change yet', () => {
    const mine = snapshot({ generation: 7, changed: true })
    expect(sameEpoch(mine, snapshot({ generation: 5, changed: true }))).toBe(false)
    // Started with its process before the change: the generation before too.
    expect(sameEpoch(mine, snapshot({ generation: 6, changed: false }))).toBe(false)
    // Started with its process after the change: of this generation.
    expect(sameEpoch(mine, snapshot({ generation: 9, changed: false }))).toBe(true)
  })

  it('a replica started after the change adds the figures that change started, not a later one', () => {
    const mine = snapshot({ generation: 9, changed: false })
    expect(sameEpoch(mine, snapshot({ generation: 7, changed: true }))).toBe(true)
    expect(sameEpoch(mine, snapshot({ generation: 10, changed: true }))).toBe(false)
    expect(sameEpoch(mine, snapshot({ generation: 3, changed: false }))).toBe(true)
  })
})

describe('poolMirror', () => {
  it('adds up the figures and the routes, the most mismatched first', () => {
    const pooled = poolMirror([
      snapshot({ generation: 1, changed: true }, 3),
      snapshot({ generation: 1, changed: true }, 4),
      {
        ...snapshot({ generation: 1, changed: true }, 2),
        routes: [{ route: 'GET /a', compared: 9, mismatched: 5 }],
      },
    ])
    expect(pooled.replicas).toBe(3)
    expect(pooled.window.green).toEqual({ compared: 9, mismatched: 3 })
    expect(pooled.routes).toEqual([
      { route: 'GET /a', compared: 9, mismatched: 5 },
      { route: 'GET /users', compared: 7, mismatched: 2 },
    ])
  })
})
