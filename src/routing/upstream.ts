import { Pool } from 'undici'
import type { Color } from '../colors.ts'
import { sameValue } from '../config/changes.ts'
import type { PoolConfig, TimeoutsConfig, UpstreamConfig } from '../config/types.ts'

/**
 * One upstream server and its keep-alive connections (an undici Pool: its `dispatcher`). Created once at start-up
 * and shared by every routing snapshot; only `outstanding` changes, counted by the forwarder for
 * least-outstanding balancing and draining.
 */
export class Upstream {
  readonly color: Color
  readonly url: string
  readonly origin: string
  /** Where requests to it are dispatched: undici's pool of keep-alive connections to it. */
  readonly dispatcher: Pool
  /** Requests and WebSockets in flight to this upstream. */
  outstanding = 0
  readonly #options: Pool.Options
  #fresh: Pool | undefined

  constructor(color: Color, config: UpstreamConfig, pool: PoolConfig, timeouts: TimeoutsConfig) {
    this.color = color
    this.url = config.url
    this.origin = config.origin
    this.#options = upstreamOptions(pool, timeouts)
    this.dispatcher = new Pool(config.origin, this.#options)
  }

  /** Whether its connections were made with these settings: a reload keeps it only then. */
  sameOptions(options: Pool.Options): boolean {
    return sameValue(this.#options, options)
  }

  /**
   * Connections that serve one request each (pipelining 0 turns keep-alive off), for requests sent again: the idle
   * connection a request failed on may have been closed by the upstream, and so may every other idle one, since an
   * upstream that closes idle connections or dies closes them all. Made at the first retry.
   */
  get freshDispatcher(): Pool {
    // Closed (a reload removed it and it has drained): no new pool that nothing would close.
    if (this.dispatcher.closed) return this.dispatcher
    this.#fresh ??= new Pool(this.origin, { ...this.#options, pipelining: 0 })
    return this.#fresh
  }

  async close(): Promise<void> {
    await Promise.all([this.dispatcher.close(), this.#fresh?.close()])
  }

  async destroy(): Promise<void> {
    await Promise.all([this.dispatcher.destroy(), this.#fresh?.destroy()])
  }
}

/** The connection settings of a pool's upstreams. */
export function upstreamOptions(pool: PoolConfig, timeouts: TimeoutsConfig): Pool.Options {
  // undici's defaults suit a client, not an edge proxy: 300 s header and body timeouts, unbounded connections.
  return {
    connections: pool.maxConnectionsPerUpstream,
    pipelining: 1,
    headersTimeout: timeouts.header,
    bodyTimeout: timeouts.body,
    keepAliveTimeout: timeouts.upstreamIdle,
    keepAliveMaxTimeout: timeouts.upstreamIdle,
    connect: { timeout: timeouts.connect, noDelay: true },
  }
}

export function createUpstreams(
  pools: Readonly<Record<Color, PoolConfig>>,
  timeouts: TimeoutsConfig,
): Record<Color, Upstream[]> {
  return {
    blue: pools.blue.upstreams.map((upstream) => new Upstream('blue', upstream, pools.blue, timeouts)),
    green: pools.green.upstreams.map((upstream) => new Upstream('green', upstream, pools.green, timeouts)),
  }
}
