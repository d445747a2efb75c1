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
   * BlueGreenError BG_GENERATION_CONFLICT (409) and changes nothing. Otherwise it stores the change with
   * generation + 1, keeps the state it replaced (for rollback) and notifies every follower.
   * Throws BG_STATE_UNAVAILABLE (503) when the store cannot be reached.
   */
  change(change: StateChange, expectedGeneration?: number): Promise<State>
  /** The state the last change replaced, or undefined when there has been no change yet. */
  previous(): Promise<State | undefined>
  /** Calls listener with each newly applied state (a higher generation than the last one), wherever it came from. */
  subscribe(listener: StateListener): () => void
  /** Stops following changes and releases files, timers and connections. */
  close(): Promise<void>
}
