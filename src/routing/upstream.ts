import { Pool } from 'undici'
import type { PoolConfig, TimeoutsConfig, UpstreamConfig } from '../config/types.ts'
import type { Color } from '../state/state.ts'

/**
 * One upstream server and its keep-alive connection pool. Created once at start-up and shared by every routing
 * snapshot; only `outstanding` changes, counted by the forwarder for least-outstanding balancing and draining.
 */
export class Upstream {
  readonly color: Color
  readonly url: string
  readonly origin: string
  readonly pool: Pool
  /** Requests and WebSockets in flight to this upstream. */
  outstanding = 0

  constructor(color: Color, config: UpstreamConfig, pool: PoolConfig, timeouts: TimeoutsConfig) {
    this.color = color
    this.url = config.url
    this.origin = config.origin
    // undici's defaults suit a client, not an edge proxy: 300 s header and body timeouts, unbounded connections.
    this.pool = new Pool(config.origin, {
      connections: pool.maxConnectionsPerUpstream,
      pipelining: 1,
      headersTimeout: timeouts.header,
      bodyTimeout: timeouts.body,
      keepAliveTimeout: timeouts.upstreamIdle,
      keepAliveMaxTimeout: timeouts.upstreamIdle,
      connect: { timeout: timeouts.connect, noDelay: true },
    })
  }

  close(): Promise<void> {
    return this.pool.close()
  }

  destroy(): Promise<void> {
    return this.pool.destroy()
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
