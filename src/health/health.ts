import { COLORS, type Color } from '../colors.ts'
import { sameValue } from '../config/changes.ts'
import type { PoolConfig } from '../config/types.ts'
import type { Logger } from '../log.ts'
import type { Metrics } from '../metrics/registry.ts'
import type { RequestOutcome } from '../proxy/http-forward.ts'
import type { FailureReason } from '../proxy/upstream-errors.ts'
import type { Upstream } from '../routing/upstream.ts'
import { ActiveChecks } from './active-checks.ts'
import { OutlierDetector } from './outlier.ts'

/** Why an upstream does or does not get traffic. */
export type UpstreamCondition = 'healthy' | 'unhealthy' | 'ejected'

/** One upstream as GET /state shows it. */
export interface UpstreamHealthStatus {
  url: string
  /** Gets traffic: passing its health checks and not ejected. */
  available: boolean
  condition: UpstreamCondition
  /** The active checks' verdict (always true with checks off). */
  healthy: boolean
  /** When its outlier ejection ends (ISO time), or null. */
  ejectedUntil: string | null
  /** 5xx answers and connection failures in a row, toward `outlier.consecutiveFailures`. */
  consecutiveFailures: number
  /** The last active check, or null before the first one (or with checks off). */
  lastCheck: { at: string; up: boolean; detail: string; durationMs: number } | null
}

export type HealthStatus = Record<Color, UpstreamHealthStatus[]>

export interface UpstreamHealthOptions {
  upstreams: Readonly<Record<Color, readonly Upstream[]>>
  pools: Readonly<Record<Color, PoolConfig>>
  logger: Logger
  /** Sets bluegreen_upstream_healthy; left out in tests that need no registry. */
  metrics?: Metrics
}

/** What health tracks of one color's pool: its checks, its outlier detector and its upstreams' standing. */
interface PoolHealth {
  readonly color: Color
  /** The pool's settings it was built from. */
  readonly config: PoolConfig
  readonly checks: ActiveChecks
  readonly outlier: OutlierDetector
  /** In the pool's order: the index the checks and the detector use. */
  readonly members: Tracked[]
  /** By URL, for outcomes, which name their upstream by URL. */
  readonly byUrl: Map<string, Tracked>
  /** Since when (epoch ms) none of its upstreams has been available, or undefined while one is. */
  unavailableSince: number | undefined
}

interface Tracked {
  readonly upstream: Upstream
  readonly index: number
  readonly poolHealth: PoolHealth
  /** The one field the routing snapshot reads. */
  available: boolean
  condition: UpstreamCondition
  ejectionTimer: NodeJS.Timeout | undefined
  readonly gauge: { set(value: number): void } | undefined
}

/**
 * Which upstreams get traffic, from active health checks and passive outlier detection together. The request
 * path only ever writes counters here; when availability changes, the listeners rebuild the routing snapshot
 * (Traefik's StatusSetter: health talks to routing through one callback).
 */
export class UpstreamHealth {
  readonly #pools: Record<Color, PoolHealth>
  readonly #tracked = new Map<Upstream, Tracked>()
  readonly #listeners = new Set<() => void>()
  readonly #logger: Logger
  #notifyQueued = false
  #closed: Promise<void> | undefined

  readonly #metrics: Metrics | undefined
  #started = false

  constructor(options: UpstreamHealthOptions) {
    this.#logger = options.logger
    this.#metrics = options.metrics
    this.#pools = {
      blue: this.#buildPool('blue', options.upstreams.blue, options.pools.blue),
      green: this.#buildPool('green', options.upstreams.green, options.pools.green),
    }
  }

  /**
   * A reload's new upstreams and pool settings. A color whose upstreams and settings are unchanged goes on as it
   * was; another gets fresh checks and outlier detection. An upstream that stays keeps its health checks' verdict
   * (an unhealthy one does not get traffic back until its checks pass), but an ejection ends with the reload.
   */
  replace(
    upstreams: Readonly<Record<Color, readonly Upstream[]>>,
    pools: Readonly<Record<Color, PoolConfig>>,
  ): void {
    if (this.#closed) return
    for (const color of COLORS) {
      const before = this.#pools[color]
      const same =
        before.config === pools[color] ||
        (sameValue(before.config.healthCheck, pools[color].healthCheck) &&
          sameValue(before.config.outlier, pools[color].outlier) &&
          before.members.length === upstreams[color].length &&
          before.members.every((member, index) => member.upstream === upstreams[color][index]))
      if (same) continue
      const wasUnhealthy = new Set(
        before.members
          .filter((member) => !before.checks.healthy(member.index))
          .map((member) => member.upstream),
      )
      for (const member of before.members) {
        clearTimeout(member.ejectionTimer)
        this.#tracked.delete(member.upstream)
        if (!upstreams[color].includes(member.upstream))
          this.#metrics?.upstreamHealthy.remove(color, member.upstream.url)
      }
      void before.checks.close()
      const built = this.#buildPool(color, upstreams[color], pools[color], wasUnhealthy)
      this.#pools[color] = built
      if (this.#started) built.checks.start()
    }
    this.#notify()
  }

  #buildPool(
    color: Color,
    upstreams: readonly Upstream[],
    config: PoolConfig,
    wasUnhealthy: ReadonlySet<Upstream> = new Set(),
  ): PoolHealth {
    const built: PoolHealth = {
      color,
      config,
      checks: new ActiveChecks(
        upstreams,
        config.healthCheck,
        (index, _healthy, why) => this.#update(built.members[index]!, why),
        (upstream) => wasUnhealthy.has(upstream),
      ),
      outlier: new OutlierDetector(config.outlier, upstreams.length),
      members: [],
      byUrl: new Map(),
      // A pool with nothing deployed has never had an upstream to offer.
      unavailableSince: upstreams.length === 0 ? Date.now() : undefined,
    }
    upstreams.forEach((upstream, index) => {
      const healthy = built.checks.healthy(index)
      const tracked: Tracked = {
        upstream,
        index,
        poolHealth: built,
        available: healthy,
        condition: healthy ? 'healthy' : 'unhealthy',
        ejectionTimer: undefined,
        gauge: this.#metrics?.upstreamHealthy.labels(color, upstream.url),
      }
      tracked.gauge?.set(healthy ? 1 : 0)
      built.members.push(tracked)
      built.byUrl.set(upstream.url, tracked)
      this.#tracked.set(upstream, tracked)
    })
    if (upstreams.length > 0 && !built.members.some((member) => member.available)) {
      built.unavailableSince = Date.now()
    }
    return built
  }

  /** Whether the upstream gets traffic. Read for every upstream each time a routing snapshot is built. */
  isAvailable(upstream: Upstream): boolean {
    return this.#tracked.get(upstream)?.available ?? true
  }

  /**
   * Since when (epoch ms) the color has had no available upstream, or undefined while it has one: the release
   * guard rolls back a color that stays like this (rollback.unavailableFor), since every request to it gets 503.
   */
  unavailableSince(color: Color): number | undefined {
    return this.#pools[color].unavailableSince
  }

  /**
   * A finished request, per request. An upstream's answer below 500 ends its run of failures; 5xx extends it.
   * Outcomes with an error are left out (the forwarder reported the failure through recordFailure already, or
   * undici refused the client's request), and so are clients that went away (499): neither says how the upstream
   * answered.
   */
  recordOutcome(outcome: RequestOutcome): void {
    if (outcome.error !== undefined || outcome.status === 499) return
    const tracked = this.#pools[outcome.color].byUrl.get(outcome.upstream)
    if (tracked === undefined || !tracked.available || !tracked.poolHealth.outlier.enabled) return
    if (outcome.status >= 500) this.#failure(tracked, `HTTP ${outcome.status}`)
    else tracked.poolHealth.outlier.success(tracked.index)
  }

  /** A failed attempt to reach an upstream (the forwarder's onUpstreamFailure). */
  recordFailure(upstream: Upstream, reason: FailureReason): void {
    const tracked = this.#tracked.get(upstream)
    if (tracked === undefined || !tracked.available || !tracked.poolHealth.outlier.enabled) return
    this.#failure(tracked, reason)
  }

  /**
   * Calls the listener after availability changes, once per burst of changes (a microtask later), so the app
   * rebuilds its routing snapshot off the request path. Returns a function that removes it.
   */
  onChange(listener: () => void): () => void {
    this.#listeners.add(listener)
    return () => this.#listeners.delete(listener)
  }

  status(): HealthStatus {
    const describe = (tracked: Tracked): UpstreamHealthStatus => {
      const { checks, outlier } = tracked.poolHealth
      const ejectedUntil = outlier.ejectedUntil(tracked.index)
      const last = checks.lastCheck(tracked.index)
      return {
        url: tracked.upstream.url,
        available: tracked.available,
        condition: tracked.condition,
        healthy: checks.healthy(tracked.index),
        ejectedUntil: ejectedUntil === 0 ? null : new Date(ejectedUntil).toISOString(),
        consecutiveFailures: outlier.consecutiveFailures(tracked.index),
        lastCheck: last
          ? {
              at: new Date(last.at).toISOString(),
              up: last.up,
              detail: last.detail,
              durationMs: Math.round(last.durationMs * 100) / 100,
            }
          : null,
      }
    }
    return {
      blue: this.#pools.blue.members.map(describe),
      green: this.#pools.green.members.map(describe),
    }
  }

  /** Starts the active checks. Every upstream counts as available until its checks say otherwise. */
  start(): void {
    this.#started = true
    for (const color of COLORS) this.#pools[color].checks.start()
  }

  /** Stops checks and ejection timers and waits for the checks in flight. Safe to call more than once. */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      for (const tracked of this.#tracked.values()) clearTimeout(tracked.ejectionTimer)
      await Promise.all(COLORS.map((color) => this.#pools[color].checks.close()))
    })()
    return this.#closed
  }

  #failure(tracked: Tracked, why: string): void {
    const { outlier } = tracked.poolHealth
    const ejection = outlier.failure(tracked.index, Date.now())
    if (!ejection) return
    tracked.ejectionTimer = setTimeout(() => {
      tracked.ejectionTimer = undefined
      outlier.restore(tracked.index, Date.now())
      this.#update(tracked, `ejection of ${ejection.duration} ms over`)
    }, ejection.duration)
    tracked.ejectionTimer.unref()
    this.#update(
      tracked,
      `${ejection.failures} failures in a row (last: ${why}): ejected for ${ejection.duration} ms (backoff step ${ejection.step})`,
    )
  }

  /** Recomputes an upstream's condition after its checks or its ejection changed; logs and announces a change. */
  #update(tracked: Tracked, why: string): void {
    if (this.#closed) return
    const { checks, outlier } = tracked.poolHealth
    const condition: UpstreamCondition = !checks.healthy(tracked.index)
      ? 'unhealthy'
      : outlier.ejectedUntil(tracked.index) !== 0
        ? 'ejected'
        : 'healthy'
    if (condition === tracked.condition) return
    const from = tracked.condition
    tracked.condition = condition
    tracked.available = condition === 'healthy'
    tracked.gauge?.set(tracked.available ? 1 : 0)
    const { poolHealth } = tracked
    if (poolHealth.members.some((member) => member.available)) poolHealth.unavailableSince = undefined
    else poolHealth.unavailableSince ??= Date.now()
    const line = { upstream: tracked.upstream.url, color: tracked.poolHealth.color, from, to: condition, why }
    if (tracked.available) this.#logger.info(line, 'upstream back in service')
    else this.#logger.warn(line, 'upstream taken out of service')
    this.#notify()
  }

  #notify(): void {
    if (this.#notifyQueued) return
    this.#notifyQueued = true
    queueMicrotask(() => {
      this.#notifyQueued = false
      for (const listener of this.#listeners) {
        try {
          listener()
        } catch (error) {
          this.#logger.error({ err: error }, 'an upstream health listener failed')
        }
      }
    })
  }
}
