import { COLORS, type Color } from '../colors.ts'
import type { Logger } from '../log.ts'
import type { State } from '../state/state.ts'

// Draining the color a change took all traffic away from: what is still open on it (requests, WebSockets) is
// counted, closed after drain.timeout (or left open when it is 0), and the moment it empties is recorded as the
// safe moment to scale that color down.

/** A forwarded request, as the drain sees it. The forwarder's per-request handler is one, so nothing is allocated. */
export interface DrainableRequest {
  /** Its index in its color's in-flight list while it is in flight, -1 otherwise. Only the drain touches it. */
  drainSlot: number
  /** Aborts the upstream request and closes the client's connection (the response's headers may be out already). */
  abort(): void
}

/** Where forwarded requests check in and out; both calls are on the request path. */
export interface RequestTracker {
  requestStarted(color: Color, request: DrainableRequest): void
  requestEnded(color: Color, request: DrainableRequest): void
}

export interface OpenOnColor {
  requests: number
  websockets: number
}

export interface DrainRecord {
  color: Color
  since: string
  /** When what is still open will be closed; null when drain.timeout is 0 (left open). */
  closesAt: string | null
  /** When the color had no request or WebSocket left: the safe moment to scale it down. */
  drainedAt: string | null
}

export interface DrainStatus {
  blue: OpenOnColor
  green: OpenOnColor
  /** The color that last lost all its traffic, until it gets traffic again; null when there is none. */
  draining: DrainRecord | null
}

/** A drain's step, for the live events: begun, given up (traffic came back), done, or cut short at the timeout. */
export interface DrainChange extends OpenOnColor {
  phase: 'started' | 'canceled' | 'complete' | 'timeout'
  color: Color
}

export interface ColorDrainerOptions {
  /** Milliseconds before what is still open on a drained color is closed; 0 leaves it open. */
  timeout: number
  logger: Logger
  closeWebSockets: (color: Color) => void
  onChange?: (change: DrainChange) => void
}

interface Drain {
  color: Color
  since: number
  closesAt: number | null
  drainedAt: number | null
  timer: NodeJS.Timeout | undefined
}

/**
 * Counts requests and WebSockets per color, and drains the color a state change took all traffic away from.
 *
 * In-flight requests sit in an array per color, each holding its own index, so checking in and out is a push and a
 * swap-remove: no hashing, no allocation, about what a bare counter costs (a Set is several times dearer), and the
 * handles are there when a drain has to close them. At most one color drains at a time: weights sum to 100, so a
 * change that takes traffic away from one color gives it to the other, which cancels that one's drain.
 */
export class ColorDrainer implements RequestTracker {
  readonly #options: ColorDrainerOptions
  readonly #requests: Record<Color, DrainableRequest[]> = { blue: [], green: [] }
  readonly #websockets: Record<Color, number> = { blue: 0, green: 0 }
  #drain: Drain | undefined

  constructor(options: ColorDrainerOptions) {
    this.#options = options
  }

  requestStarted(color: Color, request: DrainableRequest): void {
    const requests = this.#requests[color]
    request.drainSlot = requests.length
    requests.push(request)
  }

  requestEnded(color: Color, request: DrainableRequest): void {
    const slot = request.drainSlot
    if (slot < 0) return
    const requests = this.#requests[color]
    const last = requests.pop()!
    if (last !== request) {
      requests[slot] = last
      last.drainSlot = slot
    }
    request.drainSlot = -1
    if (this.#drain !== undefined) this.#checkDrained()
  }

  websocketOpened(color: Color): void {
    this.#websockets[color]++
  }

  websocketClosed(color: Color): void {
    this.#websockets[color]--
    if (this.#drain !== undefined) this.#checkDrained()
  }

  /** A color whose weight went from above 0 to 0 starts draining; one that gets traffic again stops. */
  stateApplied(previous: State | undefined, next: State): void {
    const drain = this.#drain
    if (drain && next.weights[drain.color] > 0) {
      clearTimeout(drain.timer)
      this.#drain = undefined
      if (drain.drainedAt === null) {
        this.#options.logger.info(
          { color: drain.color, ...this.#open(drain.color) },
          'drain canceled: the color gets traffic again',
        )
        this.#changed('canceled', drain.color)
      }
    }
    if (!previous) return
    for (const color of COLORS) {
      if (previous.weights[color] > 0 && next.weights[color] === 0) this.#start(color)
    }
  }

  status(): DrainStatus {
    const drain = this.#drain
    return {
      blue: this.#open('blue'),
      green: this.#open('green'),
      draining: drain
        ? {
            color: drain.color,
            since: new Date(drain.since).toISOString(),
            closesAt: drain.closesAt === null ? null : new Date(drain.closesAt).toISOString(),
            drainedAt: drain.drainedAt === null ? null : new Date(drain.drainedAt).toISOString(),
          }
        : null,
    }
  }

  /** Shutdown closes everything itself; no drain timer may outlive it. */
  close(): void {
    clearTimeout(this.#drain?.timer)
  }

  #start(color: Color): void {
    clearTimeout(this.#drain?.timer)
    const { timeout, logger } = this.#options
    const since = Date.now()
    const drain: Drain = {
      color,
      since,
      closesAt: timeout > 0 ? since + timeout : null,
      drainedAt: null,
      timer: undefined,
    }
    this.#drain = drain
    logger.info(
      { color, ...this.#open(color), timeoutMs: timeout },
      'drain started: the color has no traffic',
    )
    this.#changed('started', color)
    this.#checkDrained()
    if (drain.drainedAt === null && timeout > 0) {
      drain.timer = setTimeout(() => this.#closeLeftovers(drain), timeout)
      drain.timer.unref()
    }
  }

  #checkDrained(): void {
    const drain = this.#drain!
    const { color } = drain
    if (drain.drainedAt !== null || this.#requests[color].length > 0 || this.#websockets[color] > 0) return
    drain.drainedAt = Date.now()
    clearTimeout(drain.timer)
    this.#options.logger.info(
      { color, drainMs: drain.drainedAt - drain.since },
      'drain complete: nothing is open on the color on this replica (the standby says when it may be scaled down)',
    )
    this.#changed('complete', color)
  }

  #closeLeftovers(drain: Drain): void {
    if (this.#drain !== drain || drain.drainedAt !== null) return
    const { color } = drain
    this.#options.logger.warn(
      { color, ...this.#open(color), timeoutMs: this.#options.timeout },
      'drain timeout: closing the requests and WebSockets still open on the color',
    )
    this.#changed('timeout', color)
    // A copy: an abort may check the request out before the loop is over.
    for (const request of [...this.#requests[color]]) request.abort()
    this.#options.closeWebSockets(color)
  }

  #changed(phase: DrainChange['phase'], color: Color): void {
    this.#options.onChange?.({ phase, color, ...this.#open(color) })
  }

  #open(color: Color): OpenOnColor {
    return { requests: this.#requests[color].length, websockets: this.#websockets[color] }
  }
}
