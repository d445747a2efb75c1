import type { Color } from '../colors.ts'

// Sliding-window figures per color, in memory: requests, errors (5xx answers, the proxy's own 502/503/504
// included) and a latency histogram, in one-second buckets. Recording a request is a few array increments at the
// current bucket, which a one-second timer advances, so the request path reads no clock for it.

/** Upper bounds (ms) of the latency buckets: about 20% apart from 0.5 ms to a minute, then everything above. */
export const LATENCY_BOUNDS_MS: readonly number[] = (() => {
  const bounds: number[] = []
  for (let bound = 0.5; bound < 60_000; bound *= 1.2) bounds.push(Math.round(bound * 100) / 100)
  bounds.push(Number.POSITIVE_INFINITY)
  return bounds
})()

/** A window's sums for one color; plain numbers, so replicas can publish and add them up. */
export interface WindowFigures {
  requests: number
  errors: number
  /** Counts per LATENCY_BOUNDS_MS bucket. */
  latency: number[]
}

export function emptyFigures(): WindowFigures {
  return { requests: 0, errors: 0, latency: new Array<number>(LATENCY_BOUNDS_MS.length).fill(0) }
}

export function addFigures(into: WindowFigures, other: WindowFigures): WindowFigures {
  into.requests += other.requests
  into.errors += other.errors
  for (let i = 0; i < into.latency.length; i++) into.latency[i]! += other.latency[i] ?? 0
  return into
}

/** The q-quantile (0..1) in ms: the upper bound of the bucket it falls in, so never an underestimate. */
export function quantile(figures: WindowFigures, q: number): number {
  const total = figures.latency.reduce((sum, count) => sum + count, 0)
  if (total === 0) return 0
  const rank = Math.ceil(q * total)
  let seen = 0
  for (let i = 0; i < figures.latency.length; i++) {
    seen += figures.latency[i]!
    if (seen >= rank) return LATENCY_BOUNDS_MS[i]!
  }
  return Number.POSITIVE_INFINITY
}

export function errorRatio(figures: WindowFigures): number {
  return figures.requests === 0 ? 0 : figures.errors / figures.requests
}

/** The index in LATENCY_BOUNDS_MS of the bucket a duration (ms) falls in. */
export function bucketOf(ms: number): number {
  // Binary search over ~60 bounds: cheaper than a logarithm and exact at the edges.
  let low = 0
  let high = LATENCY_BOUNDS_MS.length - 1
  while (low < high) {
    const middle = (low + high) >> 1
    if (ms <= LATENCY_BOUNDS_MS[middle]!) high = middle
    else low = middle + 1
  }
  return low
}

class ColorRing {
  readonly requests: Uint32Array
  readonly errors: Uint32Array
  readonly latency: Uint32Array
  /** The second (since the epoch) each slot holds, so a slot from a lap ago reads as empty. */
  readonly seconds: Float64Array

  constructor(slots: number) {
    this.requests = new Uint32Array(slots)
    this.errors = new Uint32Array(slots)
    this.latency = new Uint32Array(slots * LATENCY_BOUNDS_MS.length)
    this.seconds = new Float64Array(slots).fill(-1)
  }

  clear(slot: number, second: number): void {
    this.requests[slot] = 0
    this.errors[slot] = 0
    this.latency.fill(0, slot * LATENCY_BOUNDS_MS.length, (slot + 1) * LATENCY_BOUNDS_MS.length)
    this.seconds[slot] = second
  }
}

export class SlidingWindows {
  readonly #slots: number
  readonly #rings: Record<Color, ColorRing>
  readonly #timer: NodeJS.Timeout
  #slot = 0
  #second: number

  /** windowMs: how far back figures() looks, in whole seconds. */
  constructor(windowMs: number) {
    this.#slots = Math.max(1, Math.round(windowMs / 1000)) + 1
    this.#rings = { blue: new ColorRing(this.#slots), green: new ColorRing(this.#slots) }
    this.#second = Math.floor(Date.now() / 1000)
    this.#rings.blue.clear(0, this.#second)
    this.#rings.green.clear(0, this.#second)
    // A tick a little late only shifts a request into the neighbouring second; figures() catches up exactly.
    this.#timer = setInterval(() => this.#advance(), 1000)
    this.#timer.unref()
  }

  /** One finished request. Hot path. */
  record(color: Color, status: number, durationMs: number): void {
    const ring = this.#rings[color]
    const slot = this.#slot
    ring.requests[slot]!++
    if (status >= 500) ring.errors[slot]!++
    ring.latency[slot * LATENCY_BOUNDS_MS.length + bucketOf(durationMs)]!++
  }

  /** The sums for a color over the window, counting only from about `sinceMs` on (from the second before it). */
  figures(color: Color, sinceMs = 0): WindowFigures {
    this.#advance()
    const ring = this.#rings[color]
    const figures = emptyFigures()
    const oldest = this.#second - this.#slots + 2
    // record() writes to the slot the timer last advanced to, so requests made just after a second boundary can sit
    // in the slot of the second before, until the tick: count from one second earlier, or they would be missed.
    const since = Math.max(oldest, Math.floor(sinceMs / 1000) - 1)
    for (let slot = 0; slot < this.#slots; slot++) {
      const second = ring.seconds[slot]!
      if (second < since || second > this.#second) continue
      figures.requests += ring.requests[slot]!
      figures.errors += ring.errors[slot]!
      const base = slot * LATENCY_BOUNDS_MS.length
      for (let i = 0; i < LATENCY_BOUNDS_MS.length; i++) figures.latency[i]! += ring.latency[base + i]!
    }
    return figures
  }

  close(): void {
    clearInterval(this.#timer)
  }

  #advance(): void {
    const now = Math.floor(Date.now() / 1000)
    // At most one lap of slots needs clearing, however long the process slept.
    const steps = Math.min(now - this.#second, this.#slots)
    for (let i = 0; i < steps; i++) {
      const second = now - steps + 1 + i
      this.#slot = (this.#slot + 1) % this.#slots
      this.#rings.blue.clear(this.#slot, second)
      this.#rings.green.clear(this.#slot, second)
    }
    if (now > this.#second) this.#second = now
  }
}
