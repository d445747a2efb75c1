import type { IncomingMessage } from 'node:http'
import type { Color } from '../colors.ts'
import type { CapturedResponse } from '../mirror/compare.ts'
import type { CopiedRequest, DropReason } from '../mirror/comparisons.ts'
import type { Upstream } from '../routing/upstream.ts'
import type { Mirror } from './mirror.ts'
import { sendCopy } from './mirror-send.ts'

/**
 * One copied request: its body gathered (up to the limit) as it streams to the live color, the live answer
 * captured (bounded) as it streams to the client, the copy (and a noise sample) sent once the body is read, and
 * all of it compared when every answer is in. The forwarder calls the live* methods; each is a no-op once over.
 */
export class MirrorCopy implements CopiedRequest {
  readonly route: string
  readonly method: string
  readonly path: string
  readonly headers: string[]
  readonly liveColor: Color
  readonly target: Color
  readonly #mirror: Mirror
  readonly #req: IncomingMessage
  readonly #upstream: Upstream
  readonly #sampleUpstream: Upstream | undefined
  #body: Buffer[] = []
  #bodyBytes = 0
  #live: CapturedResponse | undefined
  #liveChunks: Buffer[] = []
  #liveBytes = 0
  #liveEnded = false
  #mirrored: CapturedResponse | Error | undefined
  #sample: CapturedResponse | Error | undefined
  #latencyMs = 0
  /** Requests of this copy still out (the copy, the sample). */
  #open = 0
  #over = false
  #released = false

  constructor(
    mirror: Mirror,
    req: IncomingMessage,
    route: string,
    headers: string[],
    liveColor: Color,
    upstream: Upstream,
    sample: Upstream | undefined,
  ) {
    this.#mirror = mirror
    this.#req = req
    this.route = route
    this.method = req.method ?? 'GET'
    this.path = req.url ?? '/'
    this.headers = headers
    this.liveColor = liveColor
    this.target = upstream.color
    this.#upstream = upstream
    this.#sampleUpstream = sample
  }

  /** Called by the forwarder once the live request's body stream is set up: listening earlier would steal it. */
  requestStarted(hasBody: boolean): void {
    if (!hasBody) {
      this.#send(null)
      return
    }
    const req = this.#req
    req.on('data', this.#onData)
    req.once('end', this.#onEnd)
    req.once('close', this.#onClose)
  }

  liveStart(status: number, headers: Record<string, string | string[] | undefined>): void {
    if (this.#over) return
    this.#live = { status, headers, body: EMPTY, truncated: false }
    this.#liveChunks = []
  }

  liveData(chunk: Buffer): void {
    const live = this.#live
    if (this.#over || live === undefined || live.truncated) return
    const room = this.#mirror.config.compare.maxCaptureBytes - this.#liveBytes
    if (chunk.length > room) {
      if (room > 0) this.#liveChunks.push(chunk.subarray(0, room))
      this.#liveBytes += Math.max(room, 0)
      live.truncated = true
      return
    }
    this.#liveChunks.push(chunk)
    this.#liveBytes += chunk.length
  }

  liveEnd(): void {
    if (this.#over || this.#live === undefined) return
    this.#live.body = Buffer.concat(this.#liveChunks, this.#liveBytes)
    this.#liveChunks = []
    this.#liveEnded = true
    this.#settleIfReady()
  }

  /** The live request is over however it went: without a complete answer there is nothing to compare with. */
  liveOver(): void {
    if (!this.#over && !this.#liveEnded) this.#abandon('liveFailed')
  }

  readonly #onData = (chunk: Buffer): void => {
    this.#bodyBytes += chunk.length
    if (this.#bodyBytes > this.#mirror.config.maxBodyBytes) {
      this.#abandon('bodyTooLarge')
      return
    }
    this.#body.push(chunk)
  }

  readonly #onEnd = (): void => {
    this.#stopListening()
    if (this.#over) return
    this.#send(Buffer.concat(this.#body, this.#bodyBytes))
    this.#body = []
  }

  readonly #onClose = (): void => {
    if (!this.#req.complete) this.#abandon('liveFailed')
  }

  #stopListening(): void {
    this.#req.off('data', this.#onData)
    this.#req.off('end', this.#onEnd)
    this.#req.off('close', this.#onClose)
  }

  #send(body: Buffer | null): void {
    const startedAt = performance.now()
    this.#request(this.#upstream, body).then((answer) => {
      this.#latencyMs = performance.now() - startedAt
      this.#mirrored = answer
      this.#settleIfReady()
    })
    if (this.#sampleUpstream !== undefined) {
      this.#request(this.#sampleUpstream, body).then((answer) => {
        this.#sample = answer
        this.#settleIfReady()
      })
    }
  }

  /** One request of this copy, counted while it is out. */
  async #request(upstream: Upstream, body: Buffer | null): Promise<CapturedResponse | Error> {
    const { config, agent } = this.#mirror
    this.#open++
    try {
      return await sendCopy(
        agent,
        upstream,
        { method: this.method, path: this.path, headers: this.headers, body },
        config,
      )
    } finally {
      this.#open--
      this.#releaseIfIdle()
    }
  }

  #settleIfReady(): void {
    if (this.#over || !this.#liveEnded || this.#mirrored === undefined) return
    if (this.#sampleUpstream !== undefined && this.#sample === undefined) return
    this.#over = true
    const live = this.#live!
    const mirrored = this.#mirrored
    if (mirrored instanceof Error) this.#mirror.comparisons.errored(this, mirrored, this.#latencyMs)
    else {
      // A sample that failed teaches nothing: the copy is compared with what is already known. Nor does one answered
      // with another status than the live answer: the live color failed once (a 500, a 503 while it restarts), which
      // says nothing about what varies between two good answers, and learning `status` as noise would hide every
      // status difference on the route from then on.
      const sample =
        this.#sample instanceof Error || this.#sample?.status !== live.status ? undefined : this.#sample
      this.#mirror.comparisons.compared(this, live, mirrored, sample, this.#latencyMs)
    }
    this.#releaseIfIdle()
  }

  #abandon(reason: DropReason): void {
    if (this.#over) return
    this.#over = true
    this.#stopListening()
    this.#body = []
    this.#liveChunks = []
    this.#mirror.drop(reason)
    this.#releaseIfIdle()
  }

  #releaseIfIdle(): void {
    if (!this.#over || this.#open > 0 || this.#released) return
    this.#released = true
    this.#mirror.released()
  }
}

const EMPTY = Buffer.alloc(0)
