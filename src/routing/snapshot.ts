import type { Color } from '../colors.ts'
import type { Balance } from '../config/types.ts'
import type { State } from '../state/state.ts'
import type { Upstream } from './upstream.ts'

/**
 * A color's pool as a snapshot has it: the upstreams it may send traffic to right now (those neither failing
 * their health checks nor ejected), and how to choose among them. The configured pool is a PoolConfig.
 */
export interface AvailablePool {
  readonly color: Color
  readonly upstreams: readonly Upstream[]
  readonly balance: Balance
  /** Round-robin cursor. The only mutable field: it advances per request and needs no coordination. */
  cursor: number
}

/**
 * Everything the request path needs to route, as one immutable value. Store changes, health changes and
 * shutdown build a new snapshot off the request path and swap it in whole (Traefik's router factory), so a
 * request sees one consistent view from start to end and never waits for anything.
 */
export interface RoutingSnapshot {
  readonly state: State
  readonly pools: Readonly<Record<Color, AvailablePool>>
}

export function buildSnapshot(
  state: State,
  upstreams: Readonly<Record<Color, readonly Upstream[]>>,
  balance: Readonly<Record<Color, Balance>>,
  isAvailable: (upstream: Upstream) => boolean = () => true,
): RoutingSnapshot {
  const pool = (color: Color): AvailablePool => ({
    color,
    upstreams: Object.freeze(upstreams[color].filter(isAvailable)),
    balance: balance[color],
    cursor: 0,
  })
  return Object.freeze({ state, pools: Object.freeze({ blue: pool('blue'), green: pool('green') }) })
}
