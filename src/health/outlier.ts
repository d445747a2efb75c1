import type { OutlierConfig } from '../config/types.ts'

// Passive outlier detection for one pool, Envoy's model: consecutive 5xx answers or connection failures eject an
// upstream for a while, longer each time it is ejected again soon after, never more than a share of the pool at
// once. Pure bookkeeping: the caller passes the time in and owns the timers that end ejections, so every rule
// here is testable without waiting.

/** One ejection, as decided by a failure. */
export interface Ejection {
  /** When it ends (epoch milliseconds). */
  until: number
  duration: number
  /** Its step in the backoff: 1 lasts ejectionTime, 2 twice that, ... (it stops growing at maxEjectionTime). */
  step: number
  /** The consecutive failures that caused it. */
  failures: number
}

interface Member {
  consecutiveFailures: number
  /** Epoch ms at which the current ejection ends; 0 while in service. */
  ejectedUntil: number
  /** Ejections not yet forgiven: the next one lasts ejectionTime * 2^level, capped at maxEjectionTime. */
  level: number
  /** When the last ejection ended; the level steps down one per ejectionTime in service since. */
  returnedAt: number
}

/**
 * How many upstreams of a pool may be ejected at once: maxEjectedPercent of the pool, rounded down. So a pool of
 * one is never ejected unless the share is 100 (ejecting it would empty the pool: 503 for every request, on the
 * strength of passive evidence alone; active health checks can still take it out), and with the default 50 a pool
 * of two or three loses at most one.
 */
export function maxEjectedFor(poolSize: number, maxEjectedPercent: number): number {
  return Math.floor((poolSize * maxEjectedPercent) / 100)
}

/** The outlier state of one pool's upstreams, addressed by their index in the pool. */
export class OutlierDetector {
  readonly enabled: boolean
  readonly maxEjected: number
  readonly #config: OutlierConfig
  readonly #members: Member[]
  /** The level whose ejection already reaches maxEjectionTime: more would only lengthen the clean period needed. */
  readonly #maxLevel: number
  #ejected = 0

  constructor(config: OutlierConfig, poolSize: number) {
    if (!Number.isInteger(poolSize) || poolSize < 0) {
      throw new TypeError(`poolSize must be a non-negative integer, got ${poolSize}`)
    }
    if (config.maxEjectionTime < config.ejectionTime) {
      throw new TypeError('outlier maxEjectionTime must be at least ejectionTime')
    }
    this.#config = config
    this.enabled = config.consecutiveFailures > 0
    this.maxEjected = maxEjectedFor(poolSize, config.maxEjectedPercent)
    this.#maxLevel = Math.ceil(Math.log2(config.maxEjectionTime / config.ejectionTime))
    this.#members = Array.from({ length: poolSize }, () => ({
      consecutiveFailures: 0,
      ejectedUntil: 0,
      level: 0,
      returnedAt: 0,
    }))
  }

  /** How many upstreams are ejected right now. */
  get ejectedCount(): number {
    return this.#ejected
  }

  /** An answer below 500: the run of failures is over. Per request, so it only ever writes one field. */
  success(index: number): void {
    const member = this.#members[index]!
    if (member.consecutiveFailures !== 0) member.consecutiveFailures = 0
  }

  /**
   * A 5xx answer or a connection failure. Returns the ejection when this one completes a run of
   * `consecutiveFailures` and the pool's share allows another ejection. Past the share the count keeps its value,
   * so the next failure tries again (and succeeds once another upstream is back).
   */
  failure(index: number, now: number): Ejection | undefined {
    if (!this.enabled) return undefined
    const member = this.#members[index]!
    // Answers still arriving from requests sent before the ejection say nothing new.
    if (member.ejectedUntil !== 0) return undefined
    member.consecutiveFailures++
    if (member.consecutiveFailures < this.#config.consecutiveFailures) return undefined
    if (this.#ejected >= this.maxEjected) return undefined

    const { ejectionTime, maxEjectionTime } = this.#config
    if (member.level > 0) {
      const forgiven = Math.floor((now - member.returnedAt) / ejectionTime)
      member.level = Math.max(0, member.level - forgiven)
    }
    const step = member.level + 1
    const duration = Math.min(ejectionTime * 2 ** member.level, maxEjectionTime)
    member.level = Math.min(step, this.#maxLevel)
    const failures = member.consecutiveFailures
    member.consecutiveFailures = 0
    member.ejectedUntil = now + duration
    this.#ejected++
    return { until: member.ejectedUntil, duration, step, failures }
  }

  /** Ends an upstream's ejection (its timer fired). Does nothing when it is not ejected. */
  restore(index: number, now: number): void {
    const member = this.#members[index]!
    if (member.ejectedUntil === 0) return
    member.ejectedUntil = 0
    member.consecutiveFailures = 0
    member.returnedAt = now
    this.#ejected--
  }

  /** Epoch ms at which the upstream's ejection ends, or 0 while it is in service. */
  ejectedUntil(index: number): number {
    return this.#members[index]!.ejectedUntil
  }

  consecutiveFailures(index: number): number {
    return this.#members[index]!.consecutiveFailures
  }
}
