import type { ChangeAction } from '../audit/audit.ts'
import { COLORS, type Weights } from '../colors.ts'
import { BlueGreenError } from '../errors.ts'
import type { Mirror } from '../proxy/mirror.ts'

export interface MirrorGateOptions {
  mirror: Mirror
}
/** How many of the most frequent differences a refusal names. */
const TOP_DIFFERENCES = 5

/**
 * The mirror as a gate before a change (412 BG_MIRROR_MISMATCH unless forced): a color about to get more traffic
 * must have answered the copies it was sent as the live color did, often enough, over enough of them.
 */
export class MirrorGate {
  readonly #options: MirrorGateOptions

  constructor(options: MirrorGateOptions) {
    this.#options = options
  }

  /** The share POST /mirror turns on when it names none and none was set before. */
  get percent(): number {
    return this.#options.mirror.config.percent
  }

  /**
   * Checks each color the change gives more traffic than it has, when the config gates this action. Refuses (412)
   * when too few copies were compared or too many differed, unless forced; forced, it answers the gates gone past
   * (["mirror"]) for the audit trail.
   */
  require(action: ChangeAction, weights: Weights, from: Weights, force: boolean): string[] {
    const { mirror } = this.#options
    if (!this.#appliesTo(action)) return []
    const { maxMismatchRatio, minCompared } = mirror.config.gate
    for (const color of COLORS) {
      if (weights[color] <= from[color]) continue
      // This replica's figures: each replica copies the same share of the traffic it serves, so any one of them
      // is a sample of the same mirror (README "Mirroring").
      const { compared, mismatched, ratio, since } = mirror.figures(color)
      const figures = { compared, mismatched, ratio }
      const tooFew = figures.compared < minCompared
      if (!tooFew && figures.ratio <= maxMismatchRatio) continue
      if (force) return ['mirror']
      const why = tooFew
        ? `only ${figures.compared} mirrored request(s) to ${color} were compared, ${minCompared} are needed (is mirroring on? POST /mirror)`
        : `${figures.mismatched} of ${figures.compared} mirrored request(s) to ${color} answered differently (${percent(figures.ratio)}, the limit is ${percent(maxMismatchRatio)})`
      throw new BlueGreenError('BG_MIRROR_MISMATCH', `${why}; pass "force": true to send it traffic anyway`, {
        color,
        ...figures,
        maxMismatchRatio,
        minCompared,
        top: mirror.diffs.top(TOP_DIFFERENCES, since),
      })
    }
    return []
  }

  #appliesTo(action: ChangeAction): boolean {
    const { on } = this.#options.mirror.config.gate
    if (action === 'switch') return on.switch
    if (action === 'weights') return on.weights
    if (action === 'rollout') return on.rollout
    // A rollback goes back to what ran before; a rollout's later steps were gated at its first.
    return false
  }
}

function percent(ratio: number): string {
  return `${Math.round(ratio * 10_000) / 100}%`
}
