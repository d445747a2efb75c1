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
  async require(action: ChangeAction, weights: Weights, from: Weights, force: boolean): Promise<string[]> {
    const { mirror } = this.#options
    if (!this.#appliesTo(action)) return []
    const { maxMismatchRatio, minCompared } = mirror.config.gate
    const colors = COLORS.filter((color) => weights[color] > from[color])
    if (colors.length === 0) return []
    // The fleet's figures: every replica copies a share of the traffic it serves, and the gate judges them all
    // together (README "Mirroring"). When the others' cannot be read, a pass on this replica's sample alone is not
    // given: the gate refuses (forcing still goes past it), naming why.
    const fleet = await mirror.fleet()
    for (const color of colors) {
      const figures = fleet.window[color]
      const tooFew = figures.compared < minCompared
      const blind = fleet.problem !== undefined
      if (!blind && !tooFew && figures.ratio <= maxMismatchRatio) continue
      if (force) return ['mirror']
      const why = blind
        ? `the gate cannot see the other replicas' mirrored requests, ${fleet.problem}`
        : tooFew
          ? `only ${figures.compared} mirrored request(s) to ${color} were compared across ${fleet.replicas} replica(s), ${minCompared} are needed (is mirroring on? POST /mirror)`
          : `${figures.mismatched} of ${figures.compared} mirrored request(s) to ${color} answered differently across ${fleet.replicas} replica(s) (${percent(figures.ratio)}, the limit is ${percent(maxMismatchRatio)})`
      throw new BlueGreenError('BG_MIRROR_MISMATCH', `${why}; pass "force": true to send it traffic anyway`, {
        color,
        ...figures,
        replicas: fleet.replicas,
        ...(blind ? { problem: fleet.problem } : {}),
        maxMismatchRatio,
        minCompared,
        top: mirror.diffs.top(TOP_DIFFERENCES, mirror.figures(color).since),
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
