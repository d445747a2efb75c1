import type { Color } from '../colors.ts'
import type { RetriesConfig, RetryBudgetConfig } from '../config/types.ts'
import type { FailureReason } from './upstream-errors.ts'

// Which failed requests are tried again, and how many (README "Retries"). The forwarder asks; this decides.
//
// - A request that never reached an upstream (refused, unreachable, connect timeout) is tried on another upstream
//   of its color, whatever its method: nothing of it left the proxy and its body is unread. No upstream did any
//   work for it, so it takes nothing from the budget. Up to CONNECT_ATTEMPTS attempts.
// - A request that reached an upstream is sent again only when a second copy is harmless and possible: an
//   idempotent method (RFC 9110 9.2.2), no body (it was streamed to the upstream and is gone), nothing of the
//   response relayed to the client yet, and a failure in `retries.on`. At most `retries.max` times, within the budget.

/** What the forwarder did after a failed attempt: logged with it, and counted (bluegreen_upstream_retries_*). */
export type RetryDecision = 'retried' | 'denied' | 'none'

/** Attempts at a request whose connection cannot be made, over the upstreams of its color. */
export const CONNECT_ATTEMPTS = 3

export class RetryPolicy {
  readonly budget: RetryBudget
  /** Times a request that reached an upstream may be sent again. */
  readonly max: number
  readonly #methods: ReadonlySet<string>
  readonly #on: ReadonlySet<FailureReason>

  constructor(config: RetriesConfig) {
    this.max = config.max
    this.#methods = new Set(config.methods)
    this.#on = new Set(config.on)
    this.budget = new RetryBudget(config.budget)
  }

  /** Whether a request without a body that reached an upstream and failed this way may be sent again, budget aside. */
  mayResend(method: string | undefined, reason: FailureReason): boolean {
    return this.#on.has(reason) && this.#methods.has(method ?? 'GET')
  }
}

/** Seconds the budget looks back over. */
const WINDOW = 10

/** One color's requests and retries, per second of the window, in a ring indexed by second. */
class BudgetRing {
  readonly seconds = new Float64Array(WINDOW).fill(-1)
  readonly requests = new Uint32Array(WINDOW)
  readonly retries = new Uint32Array(WINDOW)

  /** The slot of this second, emptied first if it still holds one a lap ago. */
  slot(second: number): number {
    const slot = second % WINDOW
    if (this.seconds[slot] !== second) {
      this.seconds[slot] = second
      this.requests[slot] = 0
      this.retries[slot] = 0
    }
    return slot
  }
}

/**
 * A request sent again adds load to a color that is failing, so those retries are budgeted, as Linkerd's and
 * Finagle's budgets do it: over the last 10 s, at most `percent` of the requests the color received, plus
 * `minPerSecond` a second so that a quiet color can still retry. When everything fails, the upstreams see at most
 * 1.2 times the traffic, plus that minimum.
 *
 * Over time rather than over the requests in flight (Envoy's retry_budget), because the failures retries are for
 * come in bursts: an upstream killed fails everything it had in flight at once, and idle connections an upstream
 * closes together race the proxy together. Tried (test/integration/retries.test.ts), 20% of the requests in flight
 * with a minimum of 3 still lost 18 to 32 GETs when one of two upstreams was killed under 40 clients, and 9 to 20
 * of 320 to stale connections; over time, a burst is paid for by the requests before it, and none were lost.
 *
 * A request costs one increment in its color's ring, at the time the forwarder read anyway; nothing is allocated.
 */
export class RetryBudget {
  readonly #ratio: number
  /** Retries allowed in any window whatever the traffic. */
  readonly #floor: number
  readonly #rings: Record<Color, BudgetRing> = { blue: new BudgetRing(), green: new BudgetRing() }

  constructor(config: RetryBudgetConfig) {
    this.#ratio = config.percent / 100
    this.#floor = config.minPerSecond * WINDOW
  }

  /** Every forwarded request, on the hot path; `now` in ms (performance.now()). */
  requestStarted(color: Color, now: number): void {
    const ring = this.#rings[color]
    ring.requests[ring.slot(Math.floor(now / 1000))]!++
  }

  /** Takes one retry from the color's budget, or says there is none left. */
  tryRetry(color: Color, now: number): boolean {
    const ring = this.#rings[color]
    const second = Math.floor(now / 1000)
    const current = ring.slot(second)
    let requests = 0
    let retries = 0
    for (let slot = 0; slot < WINDOW; slot++) {
      if (ring.seconds[slot]! <= second - WINDOW) continue
      requests += ring.requests[slot]!
      retries += ring.retries[slot]!
    }
    if (retries + 1 > requests * this.#ratio + this.#floor) return false
    ring.retries[current]!++
    return true
  }
}
