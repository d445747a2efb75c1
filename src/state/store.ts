import type { ReplicaDrain } from './standby.ts'
import type { State, StateChange } from './state.ts'

export type StateListener = (state: State) => void

/**
 * Where the shared routing state lives. The file store (embedded, one host) and the Redis store (many replicas)
 * both implement it, and test/integration/state-store-contract.test.ts holds both to the same behaviour.
 *
 * The request path never calls a store: the app subscribes and rebuilds its immutable routing snapshot on each
 * change, so a slow or absent store can delay a change but never a request.
 */
export interface StateStore {
  /** Reads the state (writing the initial one when none exists yet) and starts following changes. */
  start(): Promise<State>
  /** The last state this process has applied, or undefined before start() has loaded one. */
  current(): State | undefined
  /**
   * One atomic compare-and-set: when expectedGeneration is given and is not the stored generation, it throws
   * BlueGreenError BG_GENERATION_CONFLICT (409) and changes nothing. Otherwise, when the change would leave the
   * stored state as it is (changesNothing in state.ts: the same routing, no running rollout on either side), it
   * writes nothing, notifies no one and answers the stored state with `changed: false`, applying it here if this
   * process was behind. Otherwise it stores the change with generation + 1, keeps the state it replaced for
   * rollback (replacedState in state.ts) and notifies every follower. All of it is decided against the stored
   * state, under the store's lock or in its script, never against this process's copy, which can be behind.
   * Throws BG_STATE_UNAVAILABLE (503) when the store cannot be reached.
   */
  commit(change: StateChange, expectedGeneration?: number): Promise<Commit>
  /** commit(), answering only the state in force after it. */
  change(change: StateChange, expectedGeneration?: number): Promise<State>
  /**
   * The state a rollback returns to: the last one whose routing differs from the state in force, or undefined when
   * none is known (no change has altered the routing yet, or the state was written by a version that kept a
   * repeated change's twin instead; see rollbackTarget in state.ts).
   */
  previous(): Promise<State | undefined>
  /** Calls listener with each newly applied state (a higher generation than the last one), wherever it came from. */
  subscribe(listener: StateListener): () => void
  /** Stops following changes and releases files, timers and connections. */
  close(): Promise<void>
  /** Whether the store is reachable and when this replica last synced with it; a store without it always is. */
  status?(): StoreStatus
}

/** What a commit answers: the state in force after it, and whether the commit made it (a new generation). */
export interface Commit {
  state: State
  changed: boolean
}

/** How this replica's view of the store stands, for /state, /readyz and the metrics. */
export interface StoreStatus {
  /** Whether the store answered its last read or write. */
  reachable: boolean
  /** When this replica last confirmed its state against the store (ms since the epoch), if ever. */
  lastSyncAt: number | undefined
  /**
   * The local file the state served was read from, when this replica started while the store was unreachable
   * and the store has not answered since.
   */
  restoredFrom?: string
}

/** One proxy replica as the registry knows it. */
export interface ReplicaInfo {
  id: string
  host: string
  pid: number
  /** The generation this replica has applied. */
  generation: number
  /** When it last reported itself (ISO time). */
  lastSeen: string
  /** The drain of the color that last lost its traffic there; absent from versions before standby. */
  drain?: ReplicaDrain
}

export interface WaitResult {
  /** True when every live replica had applied the generation before the timeout, and none was missing. */
  complete: boolean
  generation: number
  /** The live replicas. */
  replicas: ReplicaInfo[]
  /** The live replicas that had not applied it yet, at the timeout. */
  pending: ReplicaInfo[]
  /** The replicas that stopped heartbeating: they may still serve an older state. */
  missing: ReplicaInfo[]
}

/** The registry's view of the replicas. */
export interface ReplicaListing {
  /** Heartbeating, this one included. */
  live: ReplicaInfo[]
  /**
   * Seen recently but silent for more than three heartbeats: cut off from the store, frozen or dead, nobody can
   * tell which, so they are named until they come back, are forgotten, or age out.
   */
  missing: ReplicaInfo[]
}

/** What forgetting a replica found: only a missing one can be forgotten, since a live one would list itself again. */
export type ForgetResult =
  | { result: 'forgotten'; replica: ReplicaInfo }
  | { result: 'live'; replica: ReplicaInfo }
  | { result: 'unknown' }

/**
 * Every proxy replica and the generation it has applied. With Redis the replicas heartbeat into a shared
 * registry; with the file store this process is the only replica it knows.
 */
export interface ReplicaRegistry {
  /** Says this replica has applied `generation`, at once (waiters are woken) and then with every heartbeat. */
  report(generation: number): void
  /** Says how this replica's drain stands (standby's fleet view), at once and then with every heartbeat. */
  reportDrain(drain: ReplicaDrain): void
  list(): Promise<ReplicaListing>
  /**
   * Resolves when every live replica has applied `generation` and none is missing, or at the timeout with the
   * ones that have not and the missing ones.
   */
  waitFor(generation: number, timeoutMs: number): Promise<WaitResult>
  /** Drops a missing replica from the registry (an operator knows it is gone). */
  forget(id: string): Promise<ForgetResult>
  /** Stops heartbeating and deregisters: a replica that shuts down cleanly is gone, not missing. */
  close(): Promise<void>
}
