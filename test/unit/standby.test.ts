import { describe, expect, it } from 'vitest'
import { allTo } from '../../src/colors.ts'
import { drainedOn, nextStandby, type Standby, standbyOver, standbyView } from '../../src/state/standby.ts'

const NOW = '2026-05-04T10:00:00.000Z'
const LATER = '2026-05-05T10:00:00.000Z'
const blueStandby: Standby = { color: 'blue', since: NOW, keepUntil: LATER, generation: 3 }

describe('nextStandby', () => {
  it('starts a standby for the color that loses all its traffic', () => {
    expect(
      nextStandby({ weights: allTo('blue') }, { weights: allTo('green'), generation: 3 }, NOW, LATER),
    ).toEqual(blueStandby)
    // The last step of a rollout takes the last of it.
    const last = nextStandby(
      { weights: { blue: 50, green: 50 } },
      { weights: allTo('green'), generation: 3 },
      NOW,
      LATER,
    )
    expect(last).toEqual(blueStandby)
  })

  it('keeps it through changes that do not give the color traffic, and ends it when one does', () => {
    const stored = { weights: allTo('green'), standby: blueStandby }
    expect(nextStandby(stored, { weights: allTo('green'), generation: 4 }, LATER, LATER)).toBe(blueStandby)
    expect(
      nextStandby(stored, { weights: { blue: 10, green: 90 }, generation: 4 }, LATER, LATER),
    ).toBeUndefined()
    // A switch back puts the other color on standby instead.
    expect(nextStandby(stored, { weights: allTo('blue'), generation: 4 }, LATER, LATER)).toMatchObject({
      color: 'green',
      generation: 4,
    })
  })

  it('starts none for a split that leaves both colors traffic', () => {
    expect(
      nextStandby(
        { weights: allTo('blue') },
        { weights: { blue: 90, green: 10 }, generation: 1 },
        NOW,
        LATER,
      ),
    ).toBeUndefined()
  })
})

describe('the fleet view', () => {
  const drained = { color: 'blue' as const, since: NOW, drainedAt: '2026-05-04T10:00:01.000Z' }

  it('a replica has drained the color once its drain is complete, or when it never sent it traffic', () => {
    expect(drainedOn({ generation: 3, drain: drained }, blueStandby)).toEqual({
      drained: true,
      drainedAt: drained.drainedAt,
    })
    expect(drainedOn({ generation: 3, drain: { ...drained, drainedAt: null } }, blueStandby)).toEqual({
      drained: false,
    })
    expect(drainedOn({ generation: 3, drain: null }, blueStandby)).toEqual({ drained: true })
    // Not yet applied the switch, or says nothing of its drain: not drained.
    expect(drainedOn({ generation: 2, drain: null }, blueStandby)).toEqual({ drained: false })
    expect(drainedOn({ generation: 3 }, blueStandby)).toEqual({ drained: false })
  })

  it('is safe to scale down only when drained on every live replica and keepFor is over', () => {
    const before = Date.parse(LATER) - 1
    const after = Date.parse(LATER)
    const all = [
      { id: 'a', generation: 3, drain: drained },
      { id: 'b', generation: 4, drain: null },
    ]
    expect(standbyView(blueStandby, all, before)).toEqual({
      color: 'blue',
      since: NOW,
      keepUntil: LATER,
      drained: true,
      drainedAt: drained.drainedAt,
      replicas: [
        { id: 'a', drained: true, drainedAt: drained.drainedAt },
        { id: 'b', drained: true },
      ],
      safeToScaleDown: false,
    })
    expect(standbyView(blueStandby, all, after).safeToScaleDown).toBe(true)
    const holding = [...all, { id: 'c', generation: 3, drain: { ...drained, drainedAt: null } }]
    expect(standbyView(blueStandby, holding, after)).toMatchObject({ drained: false, safeToScaleDown: false })
    expect(standbyView(blueStandby, [], after)).toMatchObject({ drained: false, safeToScaleDown: false })
    expect(standbyOver(blueStandby, before)).toBe(false)
  })
})
