import type { Redis } from 'ioredis'
import { COLORS, type Color } from '../colors.ts'
import { OwnFiguresOnly, RedisSharedFigures, type SharedFigures } from '../state/shared-figures.ts'

/**
 * How replicas pool the mirror's figures for GET /mirror and the gate, the way the console's charts are pooled
 * (metrics/series-exchange.ts): with Redis every replica publishes its window's figures every step to
 * `<key>:mirror` and a read adds up every replica that published lately under the same figures' start (`epoch`);
 * with the file store there is one replica, whose `--workers` pool theirs through the cluster primary
 * (cluster-worker.ts mirrorExchange), and a single process's own figures are all.
 */
export interface MirrorExchange {
  /** Starts publishing `source` (Redis), if the exchange publishes at all. */
  start(source: () => MirrorSnapshot): void
  /** Publishes `local` now (the figures just started again) and reads the fleet's. */
  pooled(local: MirrorSnapshot): Promise<PooledMirror>
  close(): Promise<void>
}

/** Compared and mismatched copies to a color over the window. */
export interface MirrorCounts {
  compared: number
  mismatched: number
}

/** One replica's mirror figures as they travel. */
export interface MirrorSnapshot {
  /**
   * Which figures these are: the mirror setting and comparison rules they were counted under. Figures of another
   * epoch are never added to these.
   */
  epoch: string
  /** When this replica's figures started (ms). */
  since: number
  /**
   * The state generation this replica's figures started at, and whether a change it saw while running (mirroring
   * turned on, off or reshared) started them; otherwise they started with the process (or a reload's new rules), in
   * the mirror generation that was in force then.
   */
  from: { generation: number; changed: boolean }
  window: Record<Color, MirrorCounts>
  /** The routes with the most mismatches (at most ROUTES). */
  routes: Array<{ route: string } & MirrorCounts>
}

export interface PooledMirror {
  window: Record<Color, MirrorCounts>
  routes: Array<{ route: string } & MirrorCounts>
  /** The replicas added up, this one included. */
  replicas: number
}

/** How many mismatched routes a replica publishes and the pooled figures list. */
export const ROUTES = 20

/**
 * The mirror's figures pooled over `figures`: whatever transport shares them, the others' are added to this
 * replica's when they are of the same epoch (sameEpoch).
 */
export function mirrorExchange(figures: SharedFigures<MirrorSnapshot>): MirrorExchange {
  return {
    start: (source) => figures.start(source),
    pooled: async (local) => {
      const [, ...others] = await figures.gather(local)
      return poolMirror([local, ...others.filter((other) => sameEpoch(local, other))])
    },
    close: () => figures.close(),
  }
}

/** A process alone (the file store without --workers): its own figures. */
export function localMirrorExchange(): MirrorExchange {
  return mirrorExchange(new OwnFiguresOnly())
}

/** One replica's (or worker's) figures as they travel, with when they were taken. */
export interface MirrorEntry {
  at: number
  snapshot: MirrorSnapshot
}

/** Every replica's figures in the hash `<state key>:mirror`. */
export function redisMirrorExchange(
  client: Redis,
  stateKey: string,
  replicaId: string,
  stepMs: number,
): MirrorExchange {
  return mirrorExchange(
    new RedisSharedFigures({
      client,
      key: `${stateKey}:mirror`,
      replicaId,
      stepMs,
      encode: (snapshot, at) => JSON.stringify({ at, snapshot } satisfies MirrorEntry),
      decode: (text) => {
        const { at, snapshot } = JSON.parse(text) as MirrorEntry
        return { at, value: snapshot }
      },
    }),
  )
}

/**
 * Whether another replica's figures add to this one's: counted under the same setting and rules (`epoch`), and in the
 * same mirror generation. Figures a change started begin at that change's state generation; figures that started
 * with a process belong to whichever generation was in force then. A replica that has not applied the latest change
 * yet (or not published since) still has the figures of the generation before, which the setting may have had too
 * (turned off and on again): those are left out.
 */
export function sameEpoch(local: MirrorSnapshot, other: MirrorSnapshot): boolean {
  if (other.epoch !== local.epoch) return false
  const [mine, theirs] = [local.from, other.from]
  if (mine.changed && theirs.changed) return theirs.generation === mine.generation
  // Started with its process: after this replica's change, or in a generation before it.
  if (mine.changed) return theirs.generation >= mine.generation
  // Its change came before this replica started, or after: one this replica has not applied yet.
  if (theirs.changed) return theirs.generation <= mine.generation
  return true
}

export function poolMirror(snapshots: MirrorSnapshot[]): PooledMirror {
  const window = { blue: { compared: 0, mismatched: 0 }, green: { compared: 0, mismatched: 0 } }
  const routes = new Map<string, MirrorCounts>()
  for (const snapshot of snapshots) {
    for (const color of COLORS) {
      window[color].compared += snapshot.window[color]?.compared ?? 0
      window[color].mismatched += snapshot.window[color]?.mismatched ?? 0
    }
    for (const { route, compared, mismatched } of snapshot.routes ?? []) {
      const sum = routes.get(route) ?? { compared: 0, mismatched: 0 }
      sum.compared += compared
      sum.mismatched += mismatched
      routes.set(route, sum)
    }
  }
  const top = [...routes.entries()]
    .sort((a, b) => b[1].mismatched - a[1].mismatched)
    .slice(0, ROUTES)
    .map(([route, counts]) => ({ route, ...counts }))
  return { window, routes: top, replicas: snapshots.length }
}
