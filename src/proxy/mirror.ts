import type { IncomingMessage } from 'node:http'
import { Agent } from 'undici'
import { type Color, otherColor } from '../colors.ts'
import { sameValue } from '../config/changes.ts'
import type { MirrorConfig } from '../config/types.ts'
import type { Logger } from '../log.ts'
import { quantile, SlidingWindows } from '../metrics/windows.ts'
import { type CapturedResponse, coveredBy, differences } from '../mirror/compare.ts'
import { bodyPreview, DiffLog, redactedHeaders, redactedPairs, redactedTarget } from '../mirror/diffs.ts'
import { NoiseMemory, routeKey } from '../mirror/noise.ts'
import { chooseUpstream } from '../routing/pick.ts'
import type { RoutingSnapshot } from '../routing/snapshot.ts'
import type { Upstream } from '../routing/upstream.ts'
import type { MirrorSetting, State } from '../state/state.ts'
import { MIRROR_HEADER } from './headers.ts'

// Mirroring: a share of live requests is copied to the other color once the client's request has been read, and
// the copy's answer is compared with the one the client got (src/mirror/compare.ts). Nothing here is awaited by the
// request path: the client's answer streams on as it would, and the copy lives on its own connections, with its own
// short timeout, bounded in number. README's "Mirroring" tells the story.

export type MirrorResult = 'match' | 'mismatch' | 'error' | 'dropped'
/**
 * Why a copy was dropped: too many under way, a body over the limit, the live answer never completed, or its route's
 * noise is not known yet (the route's first noise sample got no answer), so a difference could not be judged.
 */
export type DropReason = 'inFlight' | 'bodyTooLarge' | 'liveFailed' | 'noiseUnknown'

export interface MirrorOptions {
  config: MirrorConfig
  logger: Logger
  /** Each copy's result, once (bluegreen_mirror_requests_total). */
  count: (result: MirrorResult) => void
  random?: () => number
}

/** Compared and mismatched copies to a color over the window (an error counts as a mismatch). */
export interface MirrorFigures {
  compared: number
  mismatched: number
  ratio: number
}

/** Routes whose figures are kept for GET /mirror; beyond it, new routes are left out. */
const MAX_ROUTES = 1000

export class Mirror {
  /** The share of matching requests copied right now, 0..1; 0 when off, which is all the request path tests. */
  share = 0
  readonly diffs: DiffLog
  readonly noise = new NoiseMemory()
  /** The copies' connections; a reload that changes maxInFlight or timeout replaces them (see reconfigure). */
  agent: Agent
  readonly #options: MirrorOptions
  #config: MirrorConfig
  #windows: SlidingWindows
  #methods: ReadonlySet<string>
  #ignore: ReadonlySet<string>
  readonly #random: () => number
  readonly #counts: Record<MirrorResult, number> = { match: 0, mismatch: 0, error: 0, dropped: 0 }
  readonly #dropped: Record<DropReason, number> = {
    inFlight: 0,
    bodyTooLarge: 0,
    liveFailed: 0,
    noiseUnknown: 0,
  }
  readonly #routes = new Map<string, { compared: number; mismatched: number }>()
  #setting: MirrorSetting | undefined
  /** When mirroring was last turned on or off or its share changed: the figures the gate reads start there. */
  #since = 0
  #inFlight = 0
  #lastError: { at: string; message: string } | undefined

  constructor(options: MirrorOptions) {
    const { config } = options
    this.#options = options
    this.#config = config
    this.diffs = new DiffLog(config.diffs)
    this.#windows = new SlidingWindows(config.window)
    this.#methods = new Set(config.methods)
    this.#ignore = new Set(config.compare.ignore)
    this.#random = options.random ?? Math.random
    this.agent = copiesAgent(config)
  }

  /** The settings in force: read at each use, so a reload applies from the next copy on. */
  get config(): MirrorConfig {
    return this.#config
  }

  /**
   * New settings (a reload), from the next copy on; the share turned on stays (it is in the state). Copies under way
   * finish as they started. Figures counted or noise learned under other comparison rules would judge the next gate
   * by those rules: a change to `window` or `compare` starts the window's figures, the per-route figures and the
   * learned noise again, as turning mirroring on does. Any other change keeps them, and the differences listed.
   */
  reconfigure(config: MirrorConfig): void {
    const before = this.#config
    this.#config = config
    this.#methods = new Set(config.methods)
    this.#ignore = new Set(config.compare.ignore)
    this.diffs.resize(config.diffs)
    if (config.maxInFlight !== before.maxInFlight || config.timeout !== before.timeout) {
      const previous = this.agent
      this.agent = copiesAgent(config)
      // Copies under way finish on the connections they have; the old pool then closes.
      previous.close().catch(() => {})
    }
    if (config.window !== before.window || !sameValue(config.compare, before.compare)) {
      this.#startFiguresAgain()
      this.#routes.clear()
      this.noise.clear()
    }
  }

  /** Every applied state: on, off, or another share. */
  stateApplied(state: State): void {
    const next = state.mirror
    const share = next?.enabled ? next.percent / 100 : 0
    // Turned on, off, or another share: the figures start again, so a fixed release is judged on its own answers.
    if (share !== this.share) this.#startFiguresAgain()
    this.#setting = next
    this.share = share
  }

  /**
   * Whether to copy this request, and the copy if so (hot path, reached only while mirroring is on). Dropped and
   * counted when too many copies are under way or the body is declared over the limit.
   */
  select(
    req: IncomingMessage,
    route: { snapshot: RoutingSnapshot; color: Color },
    headers: string[],
  ): MirrorCopy | undefined {
    if (!this.#methods.has(req.method ?? 'GET')) return undefined
    const url = req.url ?? '/'
    const prefixes = this.#config.pathPrefixes
    if (prefixes.length > 0 && !prefixes.some((prefix) => url.startsWith(prefix))) return undefined
    if (this.#random() >= this.share) return undefined
    const declared = Number(req.headers['content-length'] ?? 0)
    if (declared > this.#config.maxBodyBytes) return this.drop('bodyTooLarge')
    if (this.#inFlight >= this.#config.maxInFlight) return this.drop('inFlight')
    const target = otherColor(route.color)
    const upstream = chooseUpstream(route.snapshot.pools[target])
    if (upstream === undefined) {
      this.#failed(`no available upstream in the ${target} pool`)
      return undefined
    }
    const key = routeKey(req.method ?? 'GET', url)
    const sample = this.noise.wantsSample(key, this.#config.compare.noiseSampleRate, this.#random())
      ? chooseUpstream(route.snapshot.pools[route.color])
      : undefined
    this.#inFlight++
    return new MirrorCopy(this, req, key, headers, route.color, upstream, sample)
  }

  drop(reason: DropReason): undefined {
    this.#dropped[reason]++
    this.#result('dropped')
    return undefined
  }

  /** The window's figures for copies sent to `color`, since mirroring was last turned on or its share changed. */
  figures(color: Color): MirrorFigures & { p50Ms: number; p99Ms: number; since: number } {
    const figures = this.#windows.figures(color)
    const ratio = figures.requests === 0 ? 0 : figures.errors / figures.requests
    return {
      compared: figures.requests,
      mismatched: figures.errors,
      ratio,
      p50Ms: quantile(figures, 0.5),
      p99Ms: quantile(figures, 0.99),
      since: this.#since,
    }
  }

  status(): unknown {
    const routes = [...this.#routes.entries()]
      .filter(([, figures]) => figures.mismatched > 0)
      .sort((a, b) => b[1].mismatched - a[1].mismatched)
      .slice(0, 20)
      .map(([route, figures]) => ({ route, ...figures }))
    return {
      enabled: this.share > 0,
      percent: this.#setting?.percent ?? null,
      since: this.share > 0 ? new Date(this.#since).toISOString() : null,
      inFlight: this.#inFlight,
      results: { ...this.#counts },
      dropped: { ...this.#dropped },
      window: {
        seconds: this.#config.window / 1000,
        blue: this.figures('blue'),
        green: this.figures('green'),
      },
      mismatchedRoutes: routes,
      noise: this.noise.summary(20),
      lastError: this.#lastError ?? null,
      config: {
        methods: this.#config.methods,
        pathPrefixes: this.#config.pathPrefixes,
        maxInFlight: this.#config.maxInFlight,
        timeoutMs: this.#config.timeout,
        maxBodyBytes: this.#config.maxBodyBytes,
        compare: this.#config.compare,
        gate: this.#config.gate,
      },
    }
  }

  async close(): Promise<void> {
    this.#windows.close()
    await this.agent.destroy()
  }

  /** A copy is over (compared, failed or dropped) and none of its requests is still out. */
  released(): void {
    this.#inFlight--
  }

  /** The copy's answer and the live one, compared; `sample` the live color's second answer, when asked twice. */
  compared(
    copy: MirrorCopy,
    live: CapturedResponse,
    mirrored: CapturedResponse,
    sample: CapturedResponse | undefined,
    latencyMs: number,
  ): void {
    const { compare } = this.#config
    const ignore = this.#ignore
    // Without a sample, a route never sampled has no known noise: a field that differs on every answer (an id, a
    // timestamp) would count as a difference. Diffy compares only when all three answers are in; so here, until one
    // sample of the route has been answered. The copy is neither a match nor a mismatch.
    if (sample === undefined && !this.noise.knows(copy.route)) {
      this.drop('noiseUnknown')
      return
    }
    if (sample !== undefined) {
      const noise = differences(live, sample, {
        headers: compare.headers,
        ignored: (field) => coveredBy(field, ignore),
      })
      this.noise.learn(copy.route, noise)
    }
    const learned = this.noise.fieldsOf(copy.route)
    const fields = differences(live, mirrored, {
      headers: compare.headers,
      ignored: (field) => coveredBy(field, ignore) || coveredBy(field, learned),
    })
    const mismatch = fields.length > 0
    this.#windows.record(copy.target, mismatch ? 500 : 200, latencyMs)
    this.#routeFigures(copy.route, mismatch)
    this.#result(mismatch ? 'mismatch' : 'match')
    if (!mismatch) return
    this.diffs.add({
      at: new Date().toISOString(),
      method: copy.method,
      path: redactedTarget(copy.path),
      colors: { live: copy.liveColor, mirror: copy.target },
      status: { live: live.status, mirror: mirrored.status },
      fields,
      requestHeaders: redactedPairs(copy.headers),
      headers: { live: redactedHeaders(live.headers), mirror: redactedHeaders(mirrored.headers) },
      bodies: {
        live: bodyPreview(live.body),
        mirror: bodyPreview(mirrored.body),
        truncated: live.truncated || mirrored.truncated,
      },
    })
  }

  /** The copy got no answer (a timeout, a refused connection): counted as a mismatch in the window. */
  errored(copy: MirrorCopy, error: Error, latencyMs: number): void {
    this.#windows.record(copy.target, 500, latencyMs)
    this.#routeFigures(copy.route, true)
    this.#failed(`${copy.method} ${redactedTarget(copy.path)} to ${copy.target}: ${error.message}`)
  }

  #startFiguresAgain(): void {
    this.#since = Date.now()
    // A new window rather than a later start in the old one: its one-second buckets would blur the edge.
    this.#windows.close()
    this.#windows = new SlidingWindows(this.#config.window)
  }

  #failed(message: string): void {
    this.#lastError = { at: new Date().toISOString(), message }
    this.#options.logger.debug({ message }, 'mirror copy failed')
    this.#result('error')
  }

  #routeFigures(route: string, mismatch: boolean): void {
    let figures = this.#routes.get(route)
    if (figures === undefined) {
      if (this.#routes.size >= MAX_ROUTES) return
      figures = { compared: 0, mismatched: 0 }
      this.#routes.set(route, figures)
    }
    figures.compared++
    if (mismatch) figures.mismatched++
  }

  #result(result: MirrorResult): void {
    this.#counts[result]++
    this.#options.count(result)
  }
}

/**
 * One copied request: its body gathered (up to the limit) as it streams to the live color, the live answer
 * captured (bounded) as it streams to the client, the copy (and a noise sample) sent once the body is read, and
 * all of it compared when every answer is in. The forwarder calls the live* methods; each is a no-op once over.
 */
export class MirrorCopy {
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

  /** One request of this copy, its answer captured (bounded), or the error; never rejects. */
  async #request(upstream: Upstream, body: Buffer | null): Promise<CapturedResponse | Error> {
    const { config, agent } = this.#mirror
    this.#open++
    try {
      const response = await agent.request({
        origin: upstream.origin,
        path: this.path,
        method: this.method as 'GET',
        headers: [...this.headers, MIRROR_HEADER, '1'],
        body,
        signal: AbortSignal.timeout(config.timeout),
      })
      const chunks: Buffer[] = []
      let size = 0
      let truncated = false
      const limit = config.compare.maxCaptureBytes
      for await (const chunk of response.body as AsyncIterable<Buffer>) {
        if (size + chunk.length > limit) {
          chunks.push(chunk.subarray(0, limit - size))
          size = limit
          truncated = true
          break
        }
        chunks.push(chunk)
        size += chunk.length
      }
      return {
        status: response.statusCode,
        headers: response.headers,
        body: Buffer.concat(chunks, size),
        truncated,
      }
    } catch (error) {
      const failure = error as Error
      return failure.name === 'TimeoutError' ? new Error(`no answer within ${config.timeout} ms`) : failure
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
    if (mirrored instanceof Error) this.#mirror.errored(this, mirrored, this.#latencyMs)
    else {
      // A sample that failed teaches nothing: the copy is compared with what is already known. Nor does one answered
      // with another status than the live answer: the live color failed once (a 500, a 503 while it restarts), which
      // says nothing about what varies between two good answers, and learning `status` as noise would hide every
      // status difference on the route from then on.
      const sample =
        this.#sample instanceof Error || this.#sample?.status !== live.status ? undefined : this.#sample
      this.#mirror.compared(this, live, mirrored, sample, this.#latencyMs)
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

/** The copies' own connections and timeouts: a slow idle color ties up these, never the live pools. */
function copiesAgent(config: MirrorConfig): Agent {
  return new Agent({
    connections: config.maxInFlight,
    pipelining: 1,
    headersTimeout: config.timeout,
    bodyTimeout: config.timeout,
    keepAliveTimeout: 4_000,
    connect: { timeout: config.timeout, noDelay: true },
  })
}
