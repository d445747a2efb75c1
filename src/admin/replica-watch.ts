import type { Logger } from '../log.ts'
import type { ReplicaInfo, ReplicaRegistry } from '../state/store.ts'
import type { EventStream } from './event-stream.ts'

export interface ReplicaWatchOptions {
  replicas: ReplicaRegistry
  events: EventStream
  logger: Logger
  /** How often the registry is read (the heartbeat interval: nothing changes faster). */
  interval: number
  /** The generation this replica has applied, which a live replica behind it is lagging from. */
  generation: () => number | undefined
  /** How long a live replica must stay behind before it counts as lagging (a change takes a moment to apply). */
  lagAfter: number
}

/**
 * Publishes a `replica` live event when a replica goes missing (no heartbeat for three intervals), starts lagging
 * (live, but behind the state this replica serves for `lagAfter`), or comes back from either. GET /replicas reads
 * the same registry on demand; this reads it every interval, so that what changes is told, not only asked for.
 * Every replica watches the fleet and publishes what it sees: a notification of it is claimed by one of them.
 */
export class ReplicaWatch {
  readonly #options: ReplicaWatchOptions
  readonly #timer: NodeJS.Timeout
  /** What each replica was last told as: missing or lagging; a replica not here is fine. */
  readonly #told = new Map<string, 'missing' | 'lagging'>()
  /** Since when each live replica has been behind. */
  readonly #behindSince = new Map<string, number>()
  #busy = false

  constructor(options: ReplicaWatchOptions) {
    this.#options = options
    this.#timer = setInterval(() => void this.#check(), options.interval)
    this.#timer.unref()
  }

  close(): void {
    clearInterval(this.#timer)
  }

  async #check(): Promise<void> {
    if (this.#busy) return
    this.#busy = true
    try {
      const current = this.#options.generation()
      if (current === undefined) return
      const listing = await this.#options.replicas.list()
      const now = Date.now()
      for (const replica of listing.missing) this.#tell(replica, 'missing', {})
      const seen = new Set(listing.missing.map((replica) => replica.id))
      for (const replica of listing.live) {
        seen.add(replica.id)
        if (replica.generation >= current) {
          this.#behindSince.delete(replica.id)
          this.#back(replica)
          continue
        }
        const since = this.#behindSince.get(replica.id) ?? now
        this.#behindSince.set(replica.id, since)
        if (now - since >= this.#options.lagAfter) {
          this.#tell(replica, 'lagging', { current, behindSince: new Date(since).toISOString() })
        } else if (this.#told.get(replica.id) === 'missing') this.#back(replica)
      }
      // Forgotten or aged out of the registry: nothing more to say of it.
      for (const id of [...this.#told.keys()]) if (!seen.has(id)) this.#told.delete(id)
      for (const id of [...this.#behindSince.keys()]) if (!seen.has(id)) this.#behindSince.delete(id)
    } catch (error) {
      // The store's outage is told elsewhere (its log, /readyz, the metrics): nothing to add once a second.
      this.#options.logger.debug({ err: error }, 'cannot read the replica registry')
    } finally {
      this.#busy = false
    }
  }

  #tell(replica: ReplicaInfo, phase: 'missing' | 'lagging', more: Record<string, unknown>): void {
    if (this.#told.get(replica.id) === phase) return
    this.#told.set(replica.id, phase)
    this.#options.events.publish('replica', { phase, ...describe(replica), ...more })
  }

  #back(replica: ReplicaInfo): void {
    const was = this.#told.get(replica.id)
    if (was === undefined) return
    this.#told.delete(replica.id)
    this.#options.events.publish('replica', { phase: 'back', was, ...describe(replica) })
  }
}

function describe(replica: ReplicaInfo): Record<string, unknown> {
  const { id, host, pid, generation, lastSeen } = replica
  return { id, host, pid, generation, lastSeen, at: new Date().toISOString() }
}
