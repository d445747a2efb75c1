import type { StickyConfig } from '../config/types.ts'
import type { Color, Weights } from '../state/state.ts'
import type { ColorPool, RoutingSnapshot } from './snapshot.ts'
import type { Upstream } from './upstream.ts'

/** What routing needs to know about a request, read from its headers by the caller. */
export interface RouteInput {
  /** The color named by the preview header, when preview routing is on and the header is present. */
  preview?: Color
  /** The color in the client's sticky cookie, if any. */
  cookieColor?: Color
  /** The value of the sticky header, in header mode. */
  stickyKey?: string
  /** A number in [0, 1) for a non-sticky draw; injected so the choice stays a pure function. */
  random: number
}

export interface ColorChoice {
  color: Color
  /** True when the client should be told its color in a cookie (a new client during a weighted split). */
  setCookie: boolean
}

const splitActive = (weights: Weights): boolean => weights.blue > 0 && weights.green > 0

/**
 * Request -> color. Pure: the same snapshot and input always give the same answer.
 *
 * - A preview header wins, so the idle color can be smoke-tested; it never falls back to the active color.
 * - With all weight on one color, that color, whatever the client's stickiness says: a switch is total.
 * - During a split, a sticky client keeps its color (cookie mode), or its hash bucket decides (header mode:
 *   bucket < green's weight goes green, so raising green's weight only moves clients from blue to green and
 *   lowering it only moves them back); everyone else is drawn by weight.
 */
export function chooseColor(snapshot: RoutingSnapshot, sticky: StickyConfig, input: RouteInput): ColorChoice {
  if (input.preview) return { color: input.preview, setCookie: false }
  const { weights } = snapshot.state
  if (!splitActive(weights)) return { color: weights.green > 0 ? 'green' : 'blue', setCookie: false }

  if (sticky.mode === 'cookie' && input.cookieColor) return { color: input.cookieColor, setCookie: false }
  if (sticky.mode === 'header' && input.stickyKey !== undefined) {
    return { color: bucketOf(input.stickyKey) < weights.green ? 'green' : 'blue', setCookie: false }
  }
  const color: Color = input.random * 100 < weights.green ? 'green' : 'blue'
  return { color, setCookie: sticky.mode === 'cookie' }
}

/** A stable bucket 0..99 for a sticky key: FNV-1a, 32 bit. */
export function bucketOf(key: string): number {
  let hash = 0x811c9dc5
  for (let i = 0; i < key.length; i++) {
    hash ^= key.charCodeAt(i)
    hash = Math.imul(hash, 0x01000193)
  }
  return (hash >>> 0) % 100
}

/** Color pool -> upstream, by the pool's balancing policy; undefined when the pool has none available. */
export function chooseUpstream(pool: ColorPool, exclude?: Upstream): Upstream | undefined {
  const { upstreams } = pool
  const count = upstreams.length
  if (count === 0) return undefined
  if (count === 1) return upstreams[0] === exclude ? undefined : upstreams[0]

  if (pool.balance === 'least-outstanding') {
    // Take the cursor-th of the least loaded, so ties spread evenly. (Starting the scan at a rotating offset
    // does not: with [busy, idle, idle] the first idle one after the busy one would win two times in three.)
    let least = Number.POSITIVE_INFINITY
    let tied = 0
    for (const candidate of upstreams) {
      if (candidate === exclude) continue
      if (candidate.outstanding < least) {
        least = candidate.outstanding
        tied = 1
      } else if (candidate.outstanding === least) tied++
    }
    if (tied === 0) return undefined
    let nth = pool.cursor++ % tied
    for (const candidate of upstreams) {
      if (candidate === exclude || candidate.outstanding !== least) continue
      if (nth-- === 0) return candidate
    }
    return undefined
  }

  if (exclude === undefined) return upstreams[pool.cursor++ % count]
  // A retry takes the upstream after the failed one and leaves the cursor alone: advancing it would line the next
  // request up with the failed upstream again, so with [dead, live] every request would try the dead one first.
  const failed = upstreams.indexOf(exclude)
  for (let i = 1; i <= count; i++) {
    const candidate = upstreams[(failed + i) % count]!
    if (candidate !== exclude) return candidate
  }
  return undefined
}
