import { describe, expect, it } from 'vitest'
import {
  activeFor,
  allTo,
  COLORS,
  isColor,
  isValidWeight,
  otherColor,
  weightsProblem,
  weightsWith,
} from '../../src/colors.ts'

describe('colors', () => {
  it('knows exactly blue and green', () => {
    expect(COLORS).toEqual(['blue', 'green'])
    expect(COLORS.every(isColor)).toBe(true)
    for (const value of ['Blue', 'red', '', undefined, null, 0, ['blue']]) expect(isColor(value)).toBe(false)
    expect(otherColor('blue')).toBe('green')
    expect(otherColor('green')).toBe('blue')
  })
})

describe('weights', () => {
  it('takes whole numbers from 0 to 100 as a weight', () => {
    for (const weight of [0, 1, 50, 100]) expect(isValidWeight(weight)).toBe(true)
    for (const weight of [-1, 101, 2.5, Number.NaN, '50', null]) expect(isValidWeight(weight)).toBe(false)
  })

  it('says what is wrong with a split', () => {
    expect(weightsProblem({ blue: 90, green: 10 })).toBeUndefined()
    expect(weightsProblem(undefined)).toBe('weights must be an object {blue, green}')
    expect(weightsProblem({ blue: 90, green: 10, red: 0 })).toBe('unknown color(s) in weights: red')
    expect(weightsProblem({ blue: 90.5, green: 9.5 })).toBe('weights must be integers from 0 to 100')
    expect(weightsProblem({ blue: 90 })).toBe('weights must be integers from 0 to 100')
    expect(weightsProblem({ blue: 90, green: 20 })).toBe('weights must sum to 100, got 110')
  })

  it('builds a split from one color and its weight', () => {
    expect(weightsWith('green', 10)).toEqual({ blue: 90, green: 10 })
    expect(weightsWith('blue', 25)).toEqual({ blue: 25, green: 75 })
    expect(allTo('blue')).toEqual({ blue: 100, green: 0 })
    expect(allTo('green')).toEqual({ blue: 0, green: 100 })
  })

  it('makes the color with the larger weight active, and keeps the current one on a tie', () => {
    expect(activeFor({ blue: 90, green: 10 }, 'green')).toBe('blue')
    expect(activeFor({ blue: 10, green: 90 }, 'blue')).toBe('green')
    expect(activeFor({ blue: 50, green: 50 }, 'blue')).toBe('blue')
    expect(activeFor({ blue: 50, green: 50 }, 'green')).toBe('green')
  })
})
