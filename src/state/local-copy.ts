// Each Redis replica's copy of the last state it applied, in a local file, so that a replica restarted while Redis
// is unreachable can serve (flagged stale) instead of answering 503 until Redis is back. Redis stays the truth:
// the copy is read only when Redis does not answer at start-up, and a failure to write it is logged, never fatal.

import { readFile } from 'node:fs/promises'
import type { Logger } from '../log.ts'
import { writeFileAtomically } from './atomic-file.ts'
import { freezeState, type State, stateProblem } from './state.ts'

/** What the file holds: the state, the Redis key it belongs to, and when it was written. */
interface LocalCopyDocument {
  key: string
  savedAt: string
  state: State
}

export interface SavedState {
  state: State
  /** When the copy was written, i.e. when this state was last known to be Redis's (ms since the epoch). */
  savedAt: number
}

export interface LocalStateCopyOptions {
  file: string
  /** The state key in Redis: a copy written for another key (another service on the host) is not ours. */
  key: string
  logger: Logger
}

export class LocalStateCopy {
  readonly #options: LocalStateCopyOptions
  /** The text last written (or being written), so the same state is not written twice. */
  #written: string | undefined
  /** The newest state waiting for the write in progress to finish: only the last one matters. */
  #next: State | undefined
  #writing: Promise<void> | undefined
  /** The kind of the last write failure, until a write succeeds. */
  #lastFailure: string | undefined

  constructor(options: LocalStateCopyOptions) {
    this.#options = options
  }

  get file(): string {
    return this.#options.file
  }

  /** The saved state, or undefined when there is none that can be used (each reason is logged). */
  async read(): Promise<SavedState | undefined> {
    const { file, key, logger } = this.#options
    let text: string
    try {
      text = await readFile(file, 'utf8')
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code
      if (code !== 'ENOENT') logger.warn({ err: error, file }, 'cannot read the local copy of the state')
      return undefined
    }
    const problem = documentProblem(text, key)
    if (typeof problem === 'string') {
      logger.warn({ file, problem }, 'the local copy of the state is not usable; ignored')
      return undefined
    }
    // Served as it is, it must not be written back as if Redis had just confirmed it.
    this.#written = JSON.stringify(problem.state)
    return { state: freezeState(problem.state), savedAt: Date.parse(problem.savedAt) }
  }

  /** Writes the state in the background; writes never overlap, and a burst of changes ends with the last one. */
  save(state: State): void {
    this.#next = state
    this.#writing ??= this.#drain().finally(() => {
      this.#writing = undefined
    })
  }

  /** Waits for the write in progress, so a clean shutdown leaves the newest state on disk. */
  async close(): Promise<void> {
    await this.#writing
  }

  async #drain(): Promise<void> {
    while (this.#next) {
      const state = this.#next
      this.#next = undefined
      const document: LocalCopyDocument = {
        key: this.#options.key,
        savedAt: new Date().toISOString(),
        state,
      }
      const identity = JSON.stringify(state)
      if (identity === this.#written) continue
      try {
        await writeFileAtomically(this.#options.file, `${JSON.stringify(document, null, 2)}\n`)
        this.#written = identity
        if (this.#lastFailure)
          this.#options.logger.info({ file: this.#options.file }, 'local copy written again')
        this.#lastFailure = undefined
      } catch (error) {
        this.#failed(error)
      }
    }
  }

  /**
   * Logged once per kind of failure (a read-only disk would otherwise log on every change); by code, since the
   * message names a temp file that differs every time.
   */
  #failed(error: unknown): void {
    const kind = (error as NodeJS.ErrnoException).code ?? (error as Error).message
    if (kind === this.#lastFailure) return
    this.#lastFailure = kind
    this.#options.logger.warn(
      { err: error, file: this.#options.file },
      'cannot keep the last applied state in the local file (state.redis.lastStateFile); a restart while Redis is down will not be able to serve',
    )
  }
}

/** The document, checked as anything read from disk must be; or what is wrong with it. */
function documentProblem(text: string, key: string): string | LocalCopyDocument {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    return 'not JSON'
  }
  if (typeof value !== 'object' || value === null) return 'not a JSON object'
  const document = value as Record<string, unknown>
  if (document.key !== key) return `written for the key ${JSON.stringify(document.key)}, not ${key}`
  if (typeof document.savedAt !== 'string' || Number.isNaN(Date.parse(document.savedAt))) {
    return 'savedAt is not a time'
  }
  const problem = stateProblem(document.state)
  return problem === undefined ? (document as unknown as LocalCopyDocument) : `state: ${problem}`
}
