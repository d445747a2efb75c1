// The two colors and how traffic is split between them: the vocabulary every layer speaks, from the config up to
// the CLI. Pure and at the bottom of the layers (README "Architecture"), so that naming a color never means
// importing the state, its store or anything above them.

export const COLORS = ['blue', 'green'] as const
export type Color = (typeof COLORS)[number]

export interface Weights {
  blue: number
  green: number
}

export function isColor(value: unknown): value is Color {
  return value === 'blue' || value === 'green'
}

export function otherColor(color: Color): Color {
  return color === 'blue' ? 'green' : 'blue'
}

export function isValidWeight(value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= 0 && value <= 100
}

export function weightsProblem(weights: unknown): string | undefined {
  if (typeof weights !== 'object' || weights === null) return 'weights must be an object {blue, green}'
  const { blue, green, ...rest } = weights as Record<string, unknown>
  const extra = Object.keys(rest)
  if (extra.length > 0) return `unknown color(s) in weights: ${extra.join(', ')}`
  if (!isValidWeight(blue) || !isValidWeight(green)) return 'weights must be integers from 0 to 100'
  if (blue + green !== 100) return `weights must sum to 100, got ${blue + green}`
  return undefined
}

/** `weight` to `color` and the rest to the other. */
export function weightsWith(color: Color, weight: number): Weights {
  return color === 'blue' ? { blue: weight, green: 100 - weight } : { blue: 100 - weight, green: weight }
}

/** All traffic to one color. */
export function allTo(color: Color): Weights {
  return color === 'blue' ? { blue: 100, green: 0 } : { blue: 0, green: 100 }
}

/**
 * The active color for a weighted split: the color with the larger weight; a tie keeps the current one.
 * So a progressive 10/25/50/100 shift reports the old color active until the new one carries the majority.
 */
export function activeFor(weights: Weights, current: Color): Color {
  if (weights.blue === weights.green) return current
  return weights.blue > weights.green ? 'blue' : 'green'
}
