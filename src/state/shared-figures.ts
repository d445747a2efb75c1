import type { Redis } from 'ioredis'
import { onRedis } from './redis-connection.ts'

// Figures every replica publishes for the others to add up: the console's charts (metrics/series-exchange.ts) and
// the mirror's window (mirror/exchange.ts). One transport per setting: a Redis hash with a field per replica (here),
// the cluster primary relaying between the workers that share a state file (cluster-worker.ts), or, for a process
// alone, its own figures only.

/** Figures of one kind shared between replicas: this one's published, the others' that are fresh read back. */
export interface SharedFigures<T> {
  /** Publishes `source()` every step, if the transport publishes at all. */
  start(source: () => T): void
  /** Publishes `local` now, and answers it first, then every other replica's figures that are fresh. */
  gather(local: T): Promise<T[]>
  close(): Promise<void>
}

/** Figures as they travel: when they were taken, and the figures. */
export interface Stamped<T> {
  at: number
  value: T
}

/** A process alone: its own figures are all there are. */
export class OwnFiguresOnly<T> implements SharedFigures<T> {
  start(): void {}

  async gather(local: T): Promise<T[]> {
    return [local]
  }

  async close(): Promise<void> {}
}

export interface RedisFiguresOptions<T> {
  client: Redis
  /** The hash, a field per replica. */
  key: string
  replicaId: string
  /** How often each replica publishes; figures three steps old are left out, ten steps old cleared away. */
  stepMs: number
  encode(value: T, at: number): string
  /** Throws for a field it cannot read, which is then cleared away. */
  decode(text: string): Stamped<T>
}

/** Each replica's figures in one Redis hash: written every step and at each read, read back whole. */
export class RedisSharedFigures<T> implements SharedFigures<T> {
  readonly #options: RedisFiguresOptions<T>
  #timer: NodeJS.Timeout | undefined

  constructor(options: RedisFiguresOptions<T>) {
    this.#options = options
  }

  start(source: () => T): void {
    const { client, key, replicaId, stepMs, encode } = this.#options
    this.#timer = setInterval(() => {
      // A Redis outage costs the readers the other replicas' figures, nothing else: they say so when read.
      const text = encode(source(), Date.now())
      onRedis(client, () => client.hset(key, replicaId, text)).catch(() => {})
    }, stepMs)
    this.#timer.unref()
  }

  async gather(local: T): Promise<T[]> {
    const { client, key, replicaId, stepMs, encode, decode } = this.#options
    const now = Date.now()
    const text = encode(local, now)
    const entries = await onRedis(client, async () => {
      const [, all] = (await client.multi().hset(key, replicaId, text).hgetall(key).exec()) as [
        [Error | null, unknown],
        [Error | null, Record<string, string>],
      ]
      if (all[0]) throw all[0]
      return all[1] ?? {}
    })
    const gathered: T[] = [local]
    const gone: string[] = []
    for (const [replica, field] of Object.entries(entries)) {
      if (replica === replicaId) continue
      try {
        const { at, value } = decode(field)
        // Three steps without a word: stopped, or cut off from Redis; ten, and it is cleared away.
        if (now - at > stepMs * 10) gone.push(replica)
        if (now - at > stepMs * 3) continue
        gathered.push(value)
      } catch {
        gone.push(replica)
      }
    }
    if (gone.length > 0) await client.hdel(key, ...gone).catch(() => {})
    return gathered
  }

  async close(): Promise<void> {
    clearInterval(this.#timer)
    const { client, key, replicaId } = this.#options
    try {
      if (client.status === 'ready') await client.hdel(key, replicaId)
    } catch {
      // Left out anyway once it is three steps old.
    }
  }
}
