import { hostname } from 'node:os'
import type { ReplicaDrain } from './standby.ts'
import type { ForgetResult, ReplicaInfo, ReplicaListing, ReplicaRegistry, WaitResult } from './store.ts'

/** The file store's registry: one host, and this process is the one replica it knows of. */
export class LocalReplicaRegistry implements ReplicaRegistry {
  readonly #id: string
  #generation = -1
  #lastSeen = new Date().toISOString()
  #drain: ReplicaDrain | undefined

  constructor(id: string) {
    this.#id = id
  }

  report(generation: number): void {
    this.#generation = generation
    this.#lastSeen = new Date().toISOString()
  }

  reportDrain(drain: ReplicaDrain): void {
    this.#drain = drain
  }

  async list(): Promise<ReplicaListing> {
    return { live: [this.#self()], missing: [] }
  }

  async waitFor(generation: number): Promise<WaitResult> {
    // The store applies its own change before answering it, so there is nothing to wait for.
    const replicas = [this.#self()]
    const pending = replicas.filter((replica) => replica.generation < generation)
    return { complete: pending.length === 0, generation, replicas, pending, missing: [] }
  }

  async forget(id: string): Promise<ForgetResult> {
    return id === this.#id ? { result: 'live', replica: this.#self() } : { result: 'unknown' }
  }

  async close(): Promise<void> {}

  #self(): ReplicaInfo {
    return {
      id: this.#id,
      host: hostname(),
      pid: process.pid,
      generation: this.#generation,
      lastSeen: this.#lastSeen,
      ...(this.#drain === undefined ? {} : { drain: this.#drain }),
    }
  }
}
