import type { Logger } from '../log.ts'

type Step = () => void | Promise<void>

interface Closer {
  name: string
  close: Step
  abort: Step
}

/**
 * How everything the app has started stops, registered by each part as it is built (Caddy's `ctx.OnCancel`,
 * fastify's `onClose`), so that shutdown is written once and runs in the reverse order of start-up by construction:
 * a part closes before anything it was built on. A part that fails to close is logged and the others still close.
 */
export class Closers {
  readonly #logger: Logger
  readonly #closers: Closer[] = []

  constructor(logger: Logger) {
    this.#logger = logger
  }

  /**
   * `close` stops the part gracefully; `abort`, when given, is the quick way used when start-up fails (nothing is
   * being served yet that deserves to finish).
   */
  add(name: string, close: Step, abort: Step = close): void {
    this.#closers.push({ name, close, abort })
  }

  /** Closes every part, the last one added first. Rejects with the first failure, once all have been tried. */
  async close(): Promise<void> {
    const failures = await this.#run('close')
    if (failures.length > 0) throw failures[0]
  }

  /** Start-up failed: aborts every part already added, the last first. Failures are only logged. */
  async abort(): Promise<void> {
    await this.#run('abort')
  }

  async #run(how: 'close' | 'abort'): Promise<unknown[]> {
    const failures: unknown[] = []
    // Taken off as they run, so that each part is closed at most once whatever calls come later.
    for (let closer = this.#closers.pop(); closer; closer = this.#closers.pop()) {
      try {
        await closer[how]()
      } catch (error) {
        this.#logger.error({ err: error, part: closer.name }, `could not ${how} the ${closer.name}`)
        failures.push(error)
      }
    }
    return failures
  }
}
