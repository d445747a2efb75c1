import type { Color, Weights } from '../colors.ts'
import type { StickyConfig } from '../config/types.ts'
import type { AvailablePool, RoutingSnapshot } from './snapshot.ts'
import type { Upstream } from './upstream.ts'

/** What routing needs to know about a request, read from its headers by the caller. */
export interface RouteInput {
  /** The color named by the preview header, when preview routing is on and the header is present. */
  preview?: Color
  /** The bucket 0..99 in the client's sticky cookie (see parseStickyBucket), if any. */
  cookieBucket?: number
  /** The color in a sticky cookie set before cookies held buckets, if that is what the client sent. */
  cookieColor?: Color
  /** The value of the sticky header, in header mode. */
  stickyKey?: string
  /** A number in [0, 1) for a draw; injected so the choice stays a pure function. */
  random: number
}

export interface ColorChoice {
  color: Color
  /**
   * The bucket to tell the client in its sticky cookie: a new client during a split, or one whose cookie still
   * names a color. Undefined when the client needs no cookie.
   */
  cookieBucket?: number
}

/** Sticky buckets are 0..99, so a bucket below green's weight (an integer percentage) makes exactly w% green. */
export const STICKY_BUCKETS = 100

const splitActive = (weights: Weights): boolean => weights.blue > 0 && weights.green > 0

const colorOfBucket = (bucket: number, weights: Weights): Color => (bucket < weights.green ? 'green' : 'blue')

/**
 * Request -> color. Pure: the same snapshot and input always give the same answer.
 *
 * - A preview header wins, so the idle color can be smoke-tested; it never falls back to the active color.
 * - With all weight on one color, that color, whatever the client's stickiness says: a switch is total.
 * - During a split, a sticky client's bucket decides: its cookie's (cookie mode) or its key's hash (header mode).
 *   A bucket below green's weight goes green, so raising green's weight only moves clients from blue to green,
 *   lowering it only moves them back, and the share of returning clients on each color is the weight.
 * - A new client in cookie mode is given a bucket drawn at random, which also draws its color by weight; a client
 *   whose cookie names a color (set before cookies held buckets) keeps that color and is given a bucket in its
 *   range, so it stays put now and moves with the weights from then on.
 * - Everyone else is drawn by weight.
 */
export function chooseColor(snapshot: RoutingSnapshot, sticky: StickyConfig, input: RouteInput): ColorChoice {
  if (input.preview) return { color: input.preview }
  const { weights } = snapshot.state
  if (!splitActive(weights)) return { color: weights.green > 0 ? 'green' : 'blue' }

  if (sticky.mode === 'cookie') {
    if (input.cookieBucket !== undefined) return { color: colorOfBucket(input.cookieBucket, weights) }
    if (input.cookieColor) {
      return {
        color: input.cookieColor,
        cookieBucket: bucketInRange(input.cookieColor, weights, input.random),
      }
    }
    const bucket = Math.floor(input.random * STICKY_BUCKETS)
    return { color: colorOfBucket(bucket, weights), cookieBucket: bucket }
  }
  if (sticky.mode === 'header' && input.stickyKey !== undefined) {
    return { color: colorOfBucket(bucketOf(input.stickyKey), weights) }
  }
  return { color: input.random * 100 < weights.green ? 'green' : 'blue' }
}

/** A bucket drawn evenly from those that go to `color` at these weights (green: 0..w-1, blue: w..99). */
function bucketInRange(color: Color, weights: Weights, random: number): number {
  return color === 'green'
    ? Math.floor(random * weights.green)
    : weights.green + Math.floor(random * (STICKY_BUCKETS - weights.green))
}

const BUCKET_VALUE = /^\d{1,2}$/

/** The bucket in a sticky cookie's value ("0".."99"); undefined for anything else, an old color cookie included. */
export function parseStickyBucket(value: string | undefined): number | undefined {
  return value !== undefined && BUCKET_VALUE.test(value) ? Number(value) : undefined
}

/** A stable bucket 0..99 for a sticky key: FNV-1a, 32 bit. */
export function bucketOf(key: string): number {
  let hash = 0x811c9dc5
  for (let i = 0; i < key.length; i++) {
    hash ^= key.charCodeAt(i)
    hash = Math.imul(hash, 0x01000193)
  }
  return (hash >>> 0) % STICKY_BUCKETS
}

/** Available pool -> upstream, by the pool's balancing policy; undefined when the pool has none available. */
export function chooseUpstream(pool: AvailablePool, exclude?: Upstream): Upstream | undefined {
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
