import { COLORS, type Color, isColor, type Weights } from '../colors.ts'

// Standby: the color a change took all traffic away from stays deployed for `standby.keepFor`, the instant rollback
// target, before it may be retired. The record lives in the state itself (State.standby), set by the store under its
// compare-and-set (the Redis store's CHANGE script mirrors nextStandby: keep the two in step), so every replica
// agrees on it and a restart keeps it. Whether the color has drained is each replica's own knowledge, shared
// through the replica registry; standbyView puts the two together into the fleet view GET /state answers.

/** standby.keepFor's default: the seed keeps the old color 24 to 48 hours. */
export const DEFAULT_KEEP_FOR_MS = 24 * 60 * 60 * 1000

/** The color on standby, since when, and until when it is kept for an instant rollback. */
export interface Standby {
  color: Color
  since: string
  keepUntil: string
  /** The generation that started it: a replica that has not applied it yet still sends the color traffic. */
  generation: number
}

/**
 * What a replica says about the drain of the color that last lost all its traffic there (see proxy/drain.ts); null
 * when no color has since it started.
 */
export type ReplicaDrain = { color: Color; since: string; drainedAt: string | null } | null

/** The fleet view of the standby color, as GET /state and GET /replicas give it. */
export interface StandbyView extends Omit<Standby, 'generation'> {
  /** Drained on every live replica. */
  drained: boolean
  /** When the last live replica drained it, once all have. */
  drainedAt?: string
  replicas: { id: string; drained: boolean; drainedAt?: string }[]
  /** Drained on every live replica and keepFor is over: the color can be scaled down. */
  safeToScaleDown: boolean
}

/** A standby's step, for the `standby` live event. */
export type StandbyPhase = 'started' | 'drained' | 'over'

/**
 * The standby record a change leaves: a color that had traffic and gets none starts one (since `now`, kept until
 * `keepUntil`); the color on standby getting traffic again (a rollback, a switch back) ends it; otherwise it stays.
 */
export function nextStandby(
  stored: { weights: Weights; standby?: Standby },
  next: { weights: Weights; generation: number },
  now: string,
  keepUntil: string,
): Standby | undefined {
  let standby = stored.standby
  for (const color of COLORS) {
    if (stored.weights[color] > 0 && next.weights[color] === 0) {
      standby = { color, since: now, keepUntil, generation: next.generation }
    }
  }
  if (standby && next.weights[standby.color] > 0) return undefined
  return standby
}

/** Whether the standby time is over at `now` (ms since the epoch): the color is retired, no longer a rollback target. */
export function standbyOver(standby: Standby, now: number): boolean {
  return now >= Date.parse(standby.keepUntil)
}

export function standbyProblem(value: unknown): string | undefined {
  const standby = value as Record<string, unknown> | null
  if (
    typeof standby !== 'object' ||
    standby === null ||
    !isColor(standby.color) ||
    typeof standby.since !== 'string' ||
    typeof standby.keepUntil !== 'string' ||
    Number.isNaN(Date.parse(standby.keepUntil)) ||
    !Number.isSafeInteger(standby.generation)
  ) {
    return 'standby must be {color, since, keepUntil, generation}'
  }
  return undefined
}

/**
 * Whether one replica has drained the standby color: it has applied the change that took the color's traffic, and
 * its drain of the color is complete, or it has drained no color since it started (a replica started after the
 * change never sent the color traffic). One that says nothing of its drain (a version before standby) has not.
 */
export function drainedOn(
  replica: { generation: number; drain?: ReplicaDrain },
  standby: Standby,
): { drained: boolean; drainedAt?: string } {
  const { drain } = replica
  if (drain === undefined || replica.generation < standby.generation) return { drained: false }
  if (drain?.color !== standby.color) return { drained: true }
  return drain.drainedAt === null ? { drained: false } : { drained: true, drainedAt: drain.drainedAt }
}

/** The fleet view of a standby, from the live replicas' drains, at `now` (ms since the epoch). */
export function standbyView(
  standby: Standby,
  live: readonly { id: string; generation: number; drain?: ReplicaDrain }[],
  now: number,
): StandbyView {
  const replicas = live.map((replica) => ({ id: replica.id, ...drainedOn(replica, standby) }))
  const drained = replicas.length > 0 && replicas.every((replica) => replica.drained)
  // A replica started after the switch has no drain time of its own: the latest of the others' is the fleet's.
  const times = replicas.flatMap((replica) => (replica.drainedAt === undefined ? [] : [replica.drainedAt]))
  const drainedAt = drained && times.length > 0 ? [...times].sort().at(-1) : undefined
  const { color, since, keepUntil } = standby
  return {
    color,
    since,
    keepUntil,
    drained,
    ...(drainedAt === undefined ? {} : { drainedAt }),
    replicas,
    safeToScaleDown: drained && standbyOver(standby, now),
  }
}
