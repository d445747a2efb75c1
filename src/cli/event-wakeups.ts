import { AdminCallError, type AdminClientOptions, openEventStream } from '../admin/client.ts'

/**
 * What makes events --follow look again: the admin API's event stream (GET /events/stream), so a change is printed
 * as soon as it is made rather than at the next poll. Each event, and each keep-alive (a refusal made through
 * another replica is in the fleet's trail but not in this replica's stream), is a wake-up. While the stream is
 * down (the admin API restarting), a wake-up every `interval` ms, and the stream is opened again where it left off.
 */
export class EventWakeups {
  readonly #client: AdminClientOptions
  readonly #interval: number
  #connected = false
  #woken = false
  #wake: (() => void) | undefined
  #lastEventId: string | undefined

  private constructor(client: AdminClientOptions, interval: number) {
    this.#client = client
    this.#interval = interval
  }

  /** Opens the stream; undefined from a proxy older than it (404), which is followed by polling instead. */
  static async open(client: AdminClientOptions, interval: number): Promise<EventWakeups | undefined> {
    const wakeups = new EventWakeups(client, interval)
    try {
      await wakeups.#connect()
    } catch (error) {
      if (error instanceof AdminCallError && error.status === 404) return undefined
      throw error
    }
    return wakeups
  }

  /** Resolves at the next wake-up (at once if one came since the last call). */
  async next(): Promise<void> {
    if (!this.#woken && this.#connected) await new Promise<void>((resolve) => (this.#wake = resolve))
    else if (!this.#woken) {
      await new Promise((resolve) => setTimeout(resolve, this.#interval))
      // Still down: the caller's next call fails and says so, as a poll would.
      await this.#connect().catch(() => {})
    }
    this.#woken = false
  }

  async #connect(): Promise<void> {
    const stream = await openEventStream(this.#client, this.#lastEventId, (frame) => {
      if (frame.id !== undefined) this.#lastEventId = frame.id
      this.#wakeUp()
    })
    this.#connected = true
    void stream.ended.then(() => {
      this.#connected = false
      // The caller looks at once, and so learns that the admin API is gone.
      this.#wakeUp()
    })
  }

  #wakeUp(): void {
    this.#woken = true
    this.#wake?.()
    this.#wake = undefined
  }
}
