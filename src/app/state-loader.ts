import type { Logger } from '../log.ts'
import type { State } from '../state/state.ts'
import type { StateStore } from '../state/store.ts'

const RETRY_LOAD_MS = 1_000

export interface StateLoaderOptions {
  store: StateStore
  apply: (state: State) => void
  /** The file store: a state that cannot be loaded is a start-up error. Otherwise loading goes on in the background. */
  loadBeforeListening: boolean
  /** Serves a local copy of the last state applied while the store does not answer (StateBackend). */
  restoreLastState?: () => Promise<boolean>
  /** Whether a state has been applied yet, from any source. */
  hasState: () => boolean
  /** Whether the app is shutting down: a failed load is then not tried again. */
  closing: () => boolean
  logger: Logger
}

/**
 * Loads the state from the store at start-up, and keeps trying until the store answers. Meanwhile the replica
 * serves its local copy of the last state it applied, if it has one; without one the proxy answers 503 and /readyz
 * says why.
 */
export class StateLoader {
  readonly #options: StateLoaderOptions
  #retry: NodeJS.Timeout | undefined
  /** The first failure is logged; the retries after it (one a second) only at debug level. */
  #failures = 0

  constructor(options: StateLoaderOptions) {
    this.#options = options
  }

  /** Resolves once the state is loaded when it must load before listening, at once otherwise. */
  async start(): Promise<void> {
    if (this.#options.loadBeforeListening) await this.#load()
    // A failure is logged and tried again; once shutting down, it does not matter.
    else void this.#load().catch(() => {})
  }

  stop(): void {
    clearTimeout(this.#retry)
  }

  async #load(): Promise<void> {
    const { store, apply, loadBeforeListening, closing, logger } = this.#options
    try {
      apply(await store.start())
    } catch (error) {
      if (loadBeforeListening || closing()) throw error
      if (!this.#options.hasState()) await this.#options.restoreLastState?.()
      this.#failures++
      logger[this.#failures === 1 ? 'error' : 'debug'](
        { err: error, retryInMs: RETRY_LOAD_MS, attempts: this.#failures },
        this.#options.hasState()
          ? 'the state store does not answer: serving a stale state until it does'
          : 'no routing state yet: not ready until the state store answers',
      )
      this.#retry = setTimeout(() => void this.#load().catch(() => {}), RETRY_LOAD_MS)
      this.#retry.unref()
    }
  }
}
