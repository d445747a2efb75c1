import type { Logger } from '../log.ts'
import {
  type Standby,
  type StandbyPhase,
  type StandbyView,
  standbyOver,
  standbyView,
} from '../state/standby.ts'
import type { State } from '../state/state.ts'
import type { ReplicaRegistry } from '../state/store.ts'

const MAX_TIMER_MS = 2 ** 31 - 1

/** The `standby` live event's data. */
export interface StandbyEvent {
  phase: StandbyPhase
  color: Standby['color']
  since: string
  keepUntil: string
  safeToScaleDown: boolean
}

export interface StandbyWatchOptions {
  replicas: ReplicaRegistry
  /** The state this replica serves right now. */
  current: () => State | undefined
  /** Publishes a live event (GET /events/stream). */
  publish: (kind: 'standby', data: StandbyEvent) => void
  /** How often the registry is read while a standby has not drained everywhere or its time is not over. */
  pollMs: number
  logger: Logger
}

/** What this replica has seen of the standby in force: which phases it has published. */
interface Seen {
  standby: Standby
  drained: boolean
  over: boolean
  /** Loaded at start-up: the first look only notes whether it has drained (the replicas that saw it said so). */
  quiet: boolean
}

/**
 * Follows the standby in the state: gives GET /state and GET /replicas its fleet view (the state's record plus every
 * live replica's drain from the registry), and publishes a `standby` live event for each phase this replica sees:
 * `started` when it applies the change that began it, `drained` once every live replica has drained the color,
 * `over` once keepFor is over. `safeToScaleDown` becomes true at whichever of the last two comes later. A replica
 * that starts during a standby publishes only what happens after it started.
 */
export class StandbyWatch {
  readonly #options: StandbyWatchOptions
  #seen: Seen | undefined
  #timer: NodeJS.Timeout | undefined
  #last: StandbyView | undefined
  #closed = false

  constructor(options: StandbyWatchOptions) {
    this.#options = options
  }

  /** The app calls this with every state it applies. */
  stateApplied(previous: State | undefined, next: State): void {
    const standby = next.standby
    if (!standby) {
      this.#seen = undefined
      this.#stop()
      return
    }
    if (this.#seen?.standby.generation === standby.generation) return
    const fresh = previous !== undefined && previous.standby?.generation !== standby.generation
    // Loaded at start-up: what is already over was published by the replicas that saw it happen.
    const over = !fresh && standbyOver(standby, Date.now())
    this.#seen = { standby, drained: false, over, quiet: !fresh }
    if (fresh) this.#publish('started', standby, false)
    this.#schedule(0)
  }

  /** The fleet view of the standby in force, or null when no color is on standby. */
  async view(): Promise<StandbyView | null> {
    const standby = this.#options.current()?.standby
    if (!standby) return null
    try {
      const listing = await this.#options.replicas.list()
      this.#last = standbyView(standby, listing.live, Date.now())
    } catch (error) {
      this.#options.logger.debug({ err: error }, 'cannot list the replicas for the standby view')
      // The registry is out of reach: the last view, or one that claims nothing.
      if (this.#last?.since !== standby.since) this.#last = standbyView(standby, [], Date.now())
    }
    return this.#last
  }

  close(): void {
    this.#closed = true
    this.#stop()
  }

  async #poll(): Promise<void> {
    this.#timer = undefined
    const seen = this.#seen
    if (!seen || this.#closed) return
    const view = await this.view()
    // A change applied meanwhile has its own poll.
    if (this.#seen !== seen || view === null) return
    if (view.drained && !seen.drained) {
      seen.drained = true
      if (!seen.quiet) this.#publish('drained', seen.standby, view.safeToScaleDown)
    }
    seen.quiet = false
    if (!seen.over && standbyOver(seen.standby, Date.now())) {
      seen.over = true
      this.#publish('over', seen.standby, view.safeToScaleDown)
    }
    if (!seen.drained) this.#schedule(this.#options.pollMs)
    // Drained everywhere: nothing to look at until keepFor is over (a timer holds at most about 24.8 days).
    else if (!seen.over) {
      const untilOver = Date.parse(seen.standby.keepUntil) - Date.now()
      this.#schedule(Math.min(Math.max(untilOver, 0) + 10, MAX_TIMER_MS))
    }
  }

  #schedule(delay: number): void {
    if (this.#closed) return
    this.#stop()
    this.#timer = setTimeout(() => void this.#poll(), delay)
    this.#timer.unref()
  }

  #stop(): void {
    clearTimeout(this.#timer)
    this.#timer = undefined
  }

  #publish(phase: StandbyPhase, standby: Standby, safeToScaleDown: boolean): void {
    const { color, since, keepUntil } = standby
    this.#options.logger.info({ phase, color, since, keepUntil, safeToScaleDown }, `standby ${phase}`)
    this.#options.publish('standby', { phase, color, since, keepUntil, safeToScaleDown })
  }
}
