import type { Redis } from 'ioredis'
import { COLORS } from '../colors.ts'
import { OwnFiguresOnly, RedisSharedFigures, type SharedFigures } from '../state/shared-figures.ts'
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

/** The charts pooled over `figures`: whatever transport shares them, the buckets are added up the same way. */
export function seriesExchange(figures: SharedFigures<SeriesSnapshot>): SeriesExchange {
  return {
    start: (source) => figures.start(source),
    pooled: async (local) => {
      const all = await figures.gather(local)
      return { series: poolSeries(all), replicas: all.length }
    },
    close: () => figures.close(),
  }
}

/** A process alone (the file store without --workers): its own buckets. */
export function localSeriesExchange(): SeriesExchange {
  return seriesExchange(new OwnFiguresOnly())
}

/** Every replica's buckets in the hash `<state key>:series`. */
export function redisSeriesExchange(
  client: Redis,
  stateKey: string,
  replicaId: string,
  stepMs: number,
): SeriesExchange {
  return seriesExchange(
    new RedisSharedFigures({
      client,
      key: `${stateKey}:series`,
      replicaId,
      stepMs,
      encode: (snapshot, at) => JSON.stringify(entryOf(snapshot, at)),
      decode: (text) => {
        const entry = JSON.parse(text) as SeriesEntry
        return { at: entry.at, value: snapshotOf(entry) }
      },
    }),
  )
}

/** A bucket as published: `[at, requests, errors, {latency bucket index: count}]`. */
type Published = [number, number, number, Record<string, number>]

/** One replica's (or worker's) buckets as they travel: compact, with when they were taken. */
export interface SeriesEntry {
  at: number
  series: Record<string, Published[]>
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
