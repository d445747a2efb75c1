import { randomUUID } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { AuditTrail } from '../audit/audit.ts'
import { BlueGreenError } from '../errors.ts'

/** One event as GET /events/stream sends it: `id:` (`<process>-<count>`), `event:` (the kind), `data:` (JSON). */
export interface LiveEvent {
  id: string
  /** The count in the id: one more per event this process publishes. */
  count: number
  kind: string
  data: unknown
}

export interface EventStreamOptions {
  /** How many recent events a client reconnecting with Last-Event-ID can be given. */
  keep?: number
  /** How often an idle stream gets a comment, so proxies and load balancers do not close it as dead. */
  keepAliveMs?: number
  /** What names this process in the ids; random by default. */
  processTag?: string
  /** Streams served at once; beyond, 503 BG_TOO_MANY_STREAMS (each holds a socket, and reads need no token). */
  maxStreams?: number
  /** What may wait unsent to one stream: a client that stops reading is dropped, not buffered for without end. */
  maxBufferedBytes?: number
}

/**
 * This replica's live events (GET /events/stream, Server-Sent Events): what it publishes goes to every open stream
 * at once. Ids count up per process; the last `keep` events are kept so that a client reconnecting with
 * Last-Event-ID misses nothing, and one that would (too far behind, or its id came from another process) is told to
 * resync instead of being left with a silent gap. The process is in the id because one count cannot be told from
 * another: after a restart, or with --workers (which share the admin port) when the client reconnects to a sibling.
 */
export class EventStream {
  readonly #keep: number
  readonly #keepAliveMs: number
  readonly #processTag: string
  readonly #maxStreams: number
  readonly #maxBufferedBytes: number
  readonly #recent: LiveEvent[] = []
  readonly #clients = new Set<ServerResponse>()
  readonly #listeners = new Set<(event: LiveEvent) => void>()
  #lastCount = 0
  #keepAlive: NodeJS.Timeout | undefined

  constructor({
    keep = 500,
    keepAliveMs = 15_000,
    processTag = randomUUID().slice(0, 8),
    maxStreams = 100,
    maxBufferedBytes = 1024 * 1024,
  }: EventStreamOptions = {}) {
    this.#keep = keep
    this.#keepAliveMs = keepAliveMs
    this.#processTag = processTag
    this.#maxStreams = maxStreams
    this.#maxBufferedBytes = maxBufferedBytes
  }

  /** How many streams are open: one whose client went away is no longer counted. */
  get clients(): number {
    return this.#clients.size
  }

  publish(kind: string, data: unknown): void {
    const count = ++this.#lastCount
    const event: LiveEvent = { id: `${this.#processTag}-${count}`, count, kind, data }
    this.#recent.push(event)
    if (this.#recent.length > this.#keep) this.#recent.shift()
    const frame = frameOf(event)
    for (const client of this.#clients) this.#send(client, frame)
    for (const listener of this.#listeners) {
      try {
        listener(event)
      } catch {
        // A listener's failure is its own: the event still reaches every stream and the other listeners.
      }
    }
  }

  /**
   * Calls `listener` with every event published from now on, in this process (the notifier reads what happened
   * here). Answers how to stop.
   */
  subscribe(listener: (event: LiveEvent) => void): () => void {
    this.#listeners.add(listener)
    return () => this.#listeners.delete(listener)
  }

  /** Answers GET /events/stream: what the client missed (Last-Event-ID), then every event as it is published. */
  serve(req: IncomingMessage, res: ServerResponse): void {
    if (this.#clients.size >= this.#maxStreams) {
      throw new BlueGreenError(
        'BG_TOO_MANY_STREAMS',
        `this replica already serves ${this.#maxStreams} live event streams; close one, or read GET /events`,
      )
    }
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      // nginx buffers responses by default, which would hold the events back.
      'x-accel-buffering': 'no',
    })
    res.write(': bluegreen live events\n\n')
    const lastEventId = req.headers['last-event-id']
    if (typeof lastEventId === 'string') this.#replay(res, lastEventId)
    this.#clients.add(res)
    this.#startKeepAlive()
    res.on('close', () => {
      this.#clients.delete(res)
      if (this.#clients.size === 0) this.#stopKeepAlive()
    })
  }

  /** Ends every open stream (the admin listener is closing). */
  endStreams(): void {
    for (const client of this.#clients) client.end()
    this.#clients.clear()
    this.#stopKeepAlive()
  }

  #replay(res: ServerResponse, lastEventId: string): void {
    const prefix = `${this.#processTag}-`
    const countText = lastEventId.startsWith(prefix) ? lastEventId.slice(prefix.length) : ''
    const last = /^\d+$/.test(countText) ? Number(countText) : Number.NaN
    const oldest = this.#recent[0]?.count ?? this.#lastCount + 1
    // An id another process gave, or a gap (the client fell more than `keep` behind): it must start again.
    if (Number.isNaN(last) || last > this.#lastCount || last + 1 < oldest) {
      const reason =
        Number.isNaN(last) || last > this.#lastCount
          ? 'another proxy process gave that id (a restart, or another worker)'
          : 'events were missed'
      const id = `${prefix}${this.#lastCount}`
      res.write(frameOf({ id, count: this.#lastCount, kind: 'resync', data: { lastEventId, reason } }))
      return
    }
    for (const event of this.#recent) if (event.count > last) res.write(frameOf(event))
  }

  /** A frame to one stream, unless more than maxBufferedBytes already wait for it: then the client is dropped. */
  #send(client: ServerResponse, text: string): void {
    if (client.writableLength > this.#maxBufferedBytes) {
      this.#clients.delete(client)
      client.destroy()
      return
    }
    client.write(text)
  }

  #startKeepAlive(): void {
    if (this.#keepAlive) return
    this.#keepAlive = setInterval(() => {
      for (const client of this.#clients) this.#send(client, ': keep-alive\n\n')
    }, this.#keepAliveMs)
    this.#keepAlive.unref()
  }

  #stopKeepAlive(): void {
    clearInterval(this.#keepAlive)
    this.#keepAlive = undefined
  }
}

/**
 * An audit trail that also publishes every event it records as an `audit` live event, once the trail has it: a
 * client woken by it (events --follow) then finds it in GET /events. Published even when the store refused it.
 */
export function publishingTrail(trail: AuditTrail, events: EventStream): AuditTrail {
  return {
    record: async (event) => {
      try {
        await trail.record(event)
      } finally {
        events.publish('audit', event)
      }
    },
    recent: (limit) => trail.recent(limit),
    close: () => trail.close(),
  }
}

function frameOf(event: LiveEvent): string {
  return `id: ${event.id}\nevent: ${event.kind}\ndata: ${JSON.stringify(event.data)}\n\n`
}
