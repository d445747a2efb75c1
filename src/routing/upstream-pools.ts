import { COLORS, type Color } from '../colors.ts'
import type { PoolConfig, TimeoutsConfig } from '../config/types.ts'
import { tlsOptionsOf, Upstream, upstreamOptions } from './upstream.ts'

/** What a reload did to the upstreams: which are new, and which stopped getting traffic and now drain. */
export interface UpstreamChange {
  added: Upstream[]
  removed: Upstream[]
}

/** How often a removed upstream is looked at until its last request has finished. */
const DRAIN_CHECK_MS = 100

/**
 * Every upstream the proxy sends to, per color, and those a reload removed that are still finishing their requests.
 * A reload keeps the Upstream of a URL whose connection settings did not change (its connections, its standing in
 * the health checks and its in-flight count go on); a new URL, or one whose settings changed, gets a new Upstream,
 * and the one it replaces drains: no new request is routed to it, those in flight finish, then its connection pool
 * is closed.
 */
export class UpstreamPools {
  #current: Record<Color, Upstream[]>
  readonly #retiring = new Set<Upstream>()
  readonly #onDrained: (upstream: Upstream) => void

  constructor(
    pools: Readonly<Record<Color, PoolConfig>>,
    timeouts: TimeoutsConfig,
    onDrained: (upstream: Upstream) => void = () => {},
  ) {
    this.#current = {
      blue: pools.blue.upstreams.map((upstream) => new Upstream('blue', upstream, pools.blue, timeouts)),
      green: pools.green.upstreams.map((upstream) => new Upstream('green', upstream, pools.green, timeouts)),
    }
    this.#onDrained = onDrained
  }

  /** The upstreams routing may choose, per color, in the config's order. */
  get current(): Readonly<Record<Color, readonly Upstream[]>> {
    return this.#current
  }

  /** Removed upstreams whose requests have not all finished yet. */
  get retiring(): readonly Upstream[] {
    return [...this.#retiring]
  }

  /** Takes a reloaded config's pools: keeps what is unchanged, creates what is new, drains what is gone. */
  replace(pools: Readonly<Record<Color, PoolConfig>>, timeouts: TimeoutsConfig): UpstreamChange {
    const added: Upstream[] = []
    const removed: Upstream[] = []
    const next = {} as Record<Color, Upstream[]>
    for (const color of COLORS) {
      const pool = pools[color]
      const unused = new Map(this.#current[color].map((upstream) => [upstream.url, upstream]))
      next[color] = pool.upstreams.map((config) => {
        const kept = unused.get(config.url)
        // TLS files are read again: a reload after a CA or client certificate was renewed makes new connections.
        if (kept?.sameOptions(upstreamOptions(pool, timeouts, tlsOptionsOf(config, pool)))) {
          unused.delete(config.url)
          return kept
        }
        const upstream = new Upstream(color, config, pool, timeouts)
        added.push(upstream)
        return upstream
      })
      removed.push(...unused.values())
    }
    this.#current = next
    for (const upstream of removed) this.#retire(upstream)
    return { added, removed }
  }

  /** Closes every upstream, current and draining (undici lets the requests in flight finish first). */
  async close(): Promise<void> {
    await Promise.all(this.#all().map((upstream) => upstream.close().catch(() => {})))
  }

  async destroy(): Promise<void> {
    await Promise.all(this.#all().map((upstream) => upstream.destroy()))
  }

  #all(): Upstream[] {
    return [...COLORS.flatMap((color) => this.#current[color]), ...this.#retiring]
  }

  /**
   * Waits for the upstream's last request (or WebSocket) to finish, then closes its connections. Nothing routes to
   * it any more: the routing snapshot built after the reload no longer has it.
   */
  #retire(upstream: Upstream): void {
    this.#retiring.add(upstream)
    const check = () => {
      if (upstream.outstanding > 0) return void setTimeout(check, DRAIN_CHECK_MS).unref()
      this.#retiring.delete(upstream)
      // Already closed if the app shut down meanwhile.
      upstream.close().catch(() => {})
      this.#onDrained(upstream)
    }
    check()
  }
}
