import type { Redis } from 'ioredis'
import type { Color } from '../colors.ts'
import { addFigures, emptyFigures, type WindowFigures } from '../metrics/windows.ts'
import { onRedis } from '../state/redis-connection.ts'

/**
 * How replicas combine their window figures for a decision. With Redis every replica publishes its own figures for
 * the watched generation and reads everyone's, so the verdict rests on all the traffic, however it is spread;
 * with the file store there is one replica, whose `--workers` combine theirs through the cluster primary
 * (cluster-worker.ts), and a single process's own figures are the whole story.
 */
export interface WindowExchange {
  /** Publishes this replica's figures and returns the sum over every replica that published for this generation. */
  combine(generation: number, color: Color, local: WindowFigures): Promise<WindowFigures>
  close(): Promise<void>
}

/**
 * How long another replica's (or worker's) figures count: three evaluations, and at least two seconds. Each entry
 * is a whole window's sums, so a late one is still right, and a replica whose event loop lags under load must not
 * drop out of the decision. One that stopped publishing does.
 */
export function exchangeFreshness(evaluateEvery: number): number {
  return Math.max(evaluateEvery * 3, 2_000)
}

export class LocalExchange implements WindowExchange {
  async combine(_generation: number, _color: Color, local: WindowFigures): Promise<WindowFigures> {
    return local
  }

  async close(): Promise<void> {}
}

interface Published {
  generation: number
  color: Color
  at: number
  figures: WindowFigures
}

export class RedisExchange implements WindowExchange {
  readonly #client: Redis
  readonly #key: string
  readonly #replicaId: string
  /** Figures older than this are from a replica that stopped publishing: left out, then deleted. */
  readonly #freshMs: number

  constructor(client: Redis, stateKey: string, replicaId: string, freshMs: number) {
    this.#client = client
    this.#key = `${stateKey}:windows`
    this.#replicaId = replicaId
    this.#freshMs = freshMs
  }

  async combine(generation: number, color: Color, local: WindowFigures): Promise<WindowFigures> {
    const now = Date.now()
    const mine: Published = { generation, color, at: now, figures: local }
    const [, entries] = (await onRedis(this.#client, () =>
      this.#client.multi().hset(this.#key, this.#replicaId, JSON.stringify(mine)).hgetall(this.#key).exec(),
    )) as [[Error | null, unknown], [Error | null, Record<string, string>]]
    const total = emptyFigures()
    const stale: string[] = []
    for (const [replica, text] of Object.entries(entries[1] ?? {})) {
      try {
        const published = JSON.parse(text) as Published
        if (now - published.at > this.#freshMs * 10) stale.push(replica)
        if (
          published.generation !== generation ||
          published.color !== color ||
          now - published.at > this.#freshMs
        )
          continue
        addFigures(total, published.figures)
      } catch {
        stale.push(replica)
      }
    }
    if (stale.length > 0) await this.#client.hdel(this.#key, ...stale)
    return total
  }

  async close(): Promise<void> {
    try {
      if (this.#client.status === 'ready') await this.#client.hdel(this.#key, this.#replicaId)
    } catch {
      // Gone with its freshness anyway.
    }
  }
}
