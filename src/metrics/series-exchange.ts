import type { Redis } from 'ioredis'
import { COLORS } from '../colors.ts'
import { onRedis } from '../state/redis-connection.ts'
import { poolSeries, type SeriesSnapshot } from './series.ts'
import { emptyFigures, type WindowFigures } from './windows.ts'

/**
 * How replicas pool the console's charts. With Redis every replica publishes its buckets every step (a few hundred
 * bytes for a quiet one: only buckets that saw a request, latency counts kept sparse) and GET /windows adds up
 * every replica that published lately; with the file store there is one replica, and its own figures are all.
 */
export interface SeriesExchange {
  /** Starts publishing `source` (Redis), if the exchange publishes at all. */
  start(source: () => SeriesSnapshot): void
  /** The figures of every replica that published lately, this one's (`local`) included, and how many they are. */
  pooled(local: SeriesSnapshot): Promise<{ series: SeriesSnapshot; replicas: number }>
  close(): Promise<void>
}

export class LocalSeriesExchange implements SeriesExchange {
  start(): void {}

  async pooled(local: SeriesSnapshot): Promise<{ series: SeriesSnapshot; replicas: number }> {
    return { series: local, replicas: 1 }
  }

  async close(): Promise<void> {}
}

/** A bucket as published: `[at, requests, errors, {latency bucket index: count}]`. */
type Published = [number, number, number, Record<string, number>]

/** One replica's (or worker's) buckets as they travel: compact, with when they were taken. */
export interface SeriesEntry {
  at: number
  series: Record<string, Published[]>
}

export class RedisSeriesExchange implements SeriesExchange {
  readonly #client: Redis
  readonly #key: string
  readonly #replicaId: string
  readonly #stepMs: number
  #timer: NodeJS.Timeout | undefined

  constructor(client: Redis, stateKey: string, replicaId: string, stepMs: number) {
    this.#client = client
    this.#key = `${stateKey}:series`
    this.#replicaId = replicaId
    this.#stepMs = stepMs
  }

  start(source: () => SeriesSnapshot): void {
    this.#timer = setInterval(() => {
      // A Redis outage costs the charts other replicas' figures, nothing else: the store reports it.
      this.#publish(source()).catch(() => {})
    }, this.#stepMs)
    this.#timer.unref()
  }

  async pooled(local: SeriesSnapshot): Promise<{ series: SeriesSnapshot; replicas: number }> {
    const now = Date.now()
    const entries = await onRedis(this.#client, async () => {
      const [, all] = (await this.#client
        .multi()
        .hset(this.#key, this.#replicaId, JSON.stringify(entryOf(local, now)))
        .hgetall(this.#key)
        .exec()) as [[Error | null, unknown], [Error | null, Record<string, string>]]
      return all[1] ?? {}
    })
    const snapshots: SeriesSnapshot[] = [local]
    const gone: string[] = []
    for (const [replica, text] of Object.entries(entries)) {
      if (replica === this.#replicaId) continue
      try {
        const entry = JSON.parse(text) as SeriesEntry
        // Three steps without a word: stopped, or cut off from Redis; ten, and it is cleared away.
        if (now - entry.at > this.#stepMs * 10) gone.push(replica)
        if (now - entry.at > this.#stepMs * 3) continue
        snapshots.push(snapshotOf(entry))
      } catch {
        gone.push(replica)
      }
    }
    if (gone.length > 0) await this.#client.hdel(this.#key, ...gone).catch(() => {})
    return { series: poolSeries(snapshots), replicas: snapshots.length }
  }

  async close(): Promise<void> {
    clearInterval(this.#timer)
    try {
      if (this.#client.status === 'ready') await this.#client.hdel(this.#key, this.#replicaId)
    } catch {
      // Left out anyway once it is three steps old.
    }
  }

  async #publish(snapshot: SeriesSnapshot): Promise<void> {
    const entry = JSON.stringify(entryOf(snapshot, Date.now()))
    await onRedis(this.#client, () => this.#client.hset(this.#key, this.#replicaId, entry))
  }
}

export function entryOf(snapshot: SeriesSnapshot, at: number): SeriesEntry {
  const series: Record<string, Published[]> = {}
  for (const color of COLORS) {
    series[color] = snapshot[color].map(({ at: start, figures }) => {
      const latency: Record<string, number> = {}
      figures.latency.forEach((count, index) => {
        if (count > 0) latency[index] = count
      })
      return [start, figures.requests, figures.errors, latency]
    })
  }
  return { at, series }
}

export function snapshotOf(entry: SeriesEntry): SeriesSnapshot {
  const snapshot: SeriesSnapshot = { blue: [], green: [] }
  for (const color of COLORS) {
    for (const [at, requests, errors, sparse] of entry.series[color] ?? []) {
      const figures: WindowFigures = { ...emptyFigures(), requests, errors }
      for (const [index, count] of Object.entries(sparse)) {
        if (Number(index) < figures.latency.length) figures.latency[Number(index)] = count
      }
      snapshot[color].push({ at, figures })
    }
  }
  return snapshot
}
