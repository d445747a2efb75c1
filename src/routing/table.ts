import type { Color } from '../colors.ts'
import type { Balance } from '../config/types.ts'
import { type State, supersedes } from '../state/state.ts'
import type { StoreStatus } from '../state/store.ts'
import { buildSnapshot, type RoutingSnapshot } from './snapshot.ts'
import type { Upstream } from './upstream.ts'

export interface Readiness {
  ready: boolean
  reasons: string[]
}

export interface RoutingTableOptions {
  upstreams: Readonly<Record<Color, readonly Upstream[]>>
  balance: Readonly<Record<Color, Balance>>
  /** Whether an upstream gets traffic right now (health checks, outlier ejection). */
  isAvailable: (upstream: Upstream) => boolean
  storeStatus: () => StoreStatus | undefined
  /** state.maxStaleness: cut off from the store longer than this (ms) is not ready; 0 = off. */
  maxStaleness: number
  now?: () => number
}

/**
 * The one owner of the routing snapshot the request path reads: a state from any source (the store, a sibling
 * worker) replaces it only if it supersedes the one applied, and a change of upstream health rebuilds it over
 * the same state. Each is a new immutable snapshot swapped in whole.
 */
export class RoutingTable {
  #options: RoutingTableOptions
  readonly #listeners: ((state: State, previous: State | undefined) => void)[] = []
  #snapshot: RoutingSnapshot | undefined

  constructor(options: RoutingTableOptions) {
    this.#options = options
  }

  /** What requests are routed by right now; undefined until a state has been applied. */
  snapshot(): RoutingSnapshot | undefined {
    return this.#snapshot
  }

  /** Applies a state if it supersedes the one applied (a newer generation, or the store's truth): true if it did. */
  readonly apply = (state: State): boolean => {
    const previous = this.#snapshot?.state
    if (!supersedes(state, previous)) return false
    this.#snapshot = this.#build(state)
    for (const listener of this.#listeners) listener(state, previous)
    return true
  }

  /** Tells `listener`, in the order added, of every state applied, with the one it replaced (none for the first). */
  onApplied(listener: (state: State, previous: State | undefined) => void): void {
    this.#listeners.push(listener)
  }

  /** An upstream went in or out of service: the same state over other upstreams, so nothing is "applied". */
  upstreamsChanged(): void {
    if (this.#snapshot) this.#snapshot = this.#build(this.#snapshot.state)
  }

  /** A reload's upstreams and balancing: the same state over them, swapped in whole like any other snapshot. */
  reconfigure(upstreams: RoutingTableOptions['upstreams'], balance: RoutingTableOptions['balance']): void {
    this.#options = { ...this.#options, upstreams, balance }
    this.upstreamsChanged()
  }

  /** Whether this replica should get traffic (GET /readyz), and every reason it should not. */
  readiness(shuttingDown: boolean): Readiness {
    const reasons: string[] = []
    if (shuttingDown) reasons.push('shutting down')
    const snapshot = this.#snapshot
    if (!snapshot) reasons.push('the routing state is not loaded (is the state store reachable?)')
    else if (snapshot.pools[snapshot.state.active].upstreams.length === 0) {
      reasons.push(`the active pool (${snapshot.state.active}) has no healthy upstream`)
    }
    const { maxStaleness } = this.#options
    const cutOff = cutOffFor(this.#options.storeStatus(), maxStaleness, (this.#options.now ?? Date.now)())
    if (cutOff !== undefined) {
      reasons.push(
        `cut off from the state store for ${(cutOff / 1000).toFixed(1)} s, longer than state.maxStaleness (${maxStaleness / 1000} s)`,
      )
    }
    return { ready: reasons.length === 0, reasons }
  }

  #build(state: State): RoutingSnapshot {
    const { upstreams, balance, isAvailable } = this.#options
    return buildSnapshot(state, upstreams, balance, isAvailable)
  }
}

/**
 * How long (ms) this replica has been cut off from its store, when that is longer than `maxStaleness` (0: off).
 * Counted from the last sync, and only while the store does not answer: a quiet store is not a stale one.
 */
function cutOffFor(status: StoreStatus | undefined, maxStaleness: number, now: number): number | undefined {
  if (maxStaleness === 0 || !status || status.reachable || status.lastSyncAt === undefined) return undefined
  const staleFor = now - status.lastSyncAt
  return staleFor > maxStaleness ? staleFor : undefined
}
