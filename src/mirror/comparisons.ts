import type { Color } from '../colors.ts'
import { sameValue } from '../config/changes.ts'
import type { MirrorConfig } from '../config/types.ts'
import type { Logger } from '../log.ts'
import { quantile, SlidingWindows } from '../metrics/windows.ts'
import { type CapturedResponse, coveredBy, differences } from './compare.ts'
import { bodyPreview, DiffLog, redactedHeaders, redactedPairs, redactedTarget } from './diffs.ts'
import { type MirrorCounts, type MirrorSnapshot, ROUTES } from './exchange.ts'
import { NoiseMemory } from './noise.ts'

// What mirroring found, off the request path: each finished copy judged against the live answer (with the noise
// learned for its route), and the results kept for the gate and GET /mirror: counts, the window's figures per color,
// per-route figures, the learned noise, the latest differences. The copying itself is src/proxy/mirror.ts.

export type MirrorResult = 'match' | 'mismatch' | 'error' | 'dropped'
/**
 * Why a copy was dropped: too many under way, a body over the limit, the live answer never completed, or its route's
 * noise is not known yet (the route's first noise sample got no answer), so a difference could not be judged.
 */
export type DropReason = 'inFlight' | 'bodyTooLarge' | 'liveFailed' | 'noiseUnknown'

/** Compared and mismatched copies to a color over the window (an error counts as a mismatch). */
export interface MirrorFigures {
  compared: number
  mismatched: number
  ratio: number
}

/** The figures pooled across replicas (`problem`: why they are only this replica's). */
export interface FleetMirror {
  window: Record<Color, MirrorFigures>
  routes: Array<{ route: string } & MirrorCounts>
  replicas: number
  problem?: string
}

/** A copied request as the comparison names it in figures and differences. */
export interface CopiedRequest {
  /** Its route key (noise.ts routeKey). */
  readonly route: string
  readonly method: string
  readonly path: string
  /** The request's headers as name, value pairs. */
  readonly headers: string[]
  readonly liveColor: Color
  /** The color the copy went to. */
  readonly target: Color
}

/** What the request path knows of mirroring, for GET /mirror. */
export interface MirrorLiveStatus {
  enabled: boolean
  percent: number | null
  inFlight: number
}

export interface MirrorComparisonsOptions {
  config: MirrorConfig
  logger: Logger
  /** Each copy's result, once (bluegreen_mirror_requests_total). */
  count: (result: MirrorResult) => void
}

/** Routes whose figures are kept for GET /mirror; beyond it, new routes are left out. */
const MAX_ROUTES = 1000

export class MirrorComparisons {
  readonly diffs: DiffLog
  readonly noise = new NoiseMemory()
  readonly #options: MirrorComparisonsOptions
  #config: MirrorConfig
  #windows: SlidingWindows
  #ignore: ReadonlySet<string>
  readonly #counts: Record<MirrorResult, number> = { match: 0, mismatch: 0, error: 0, dropped: 0 }
  readonly #dropped: Record<DropReason, number> = {
    inFlight: 0,
    bodyTooLarge: 0,
    liveFailed: 0,
    noiseUnknown: 0,
  }
  readonly #routes = new Map<string, { compared: number; mismatched: number }>()
  /** When mirroring was last turned on or off or its share changed: the figures the gate reads start there. */
  #since = 0
  /** The state generation the figures started at, and whether a change seen while running started them. */
  #from = { generation: 0, changed: false }
  #lastError: { at: string; message: string } | undefined

  constructor(options: MirrorComparisonsOptions) {
    const { config } = options
    this.#options = options
    this.#config = config
    this.diffs = new DiffLog(config.diffs)
    this.#windows = new SlidingWindows(config.window)
    this.#ignore = new Set(config.compare.ignore)
  }

  /** The settings in force: read at each use, so a reload applies from the next copy on. */
  get config(): MirrorConfig {
    return this.#config
  }

  /**
   * New settings (a reload). Figures counted or noise learned under other comparison rules would judge the next gate
   * by those rules: a change to `window` or `compare` starts the window's figures, the per-route figures and the
   * learned noise again, as turning mirroring on does. Any other change keeps them, and the differences listed.
   */
  reconfigure(config: MirrorConfig): void {
    const before = this.#config
    this.#config = config
    this.#ignore = new Set(config.compare.ignore)
    this.diffs.resize(config.diffs)
    if (config.window !== before.window || !sameValue(config.compare, before.compare)) {
      // Not a state change: as far as the other replicas can tell, figures that started with the generation before.
      this.startFiguresAgain(this.#from.generation, false)
      this.#routes.clear()
      this.noise.clear()
    }
  }

  /**
   * Mirroring was turned on or off or its share changed: the figures start again, from the state `generation` that
   * did it. `changed`: a change seen while running, rather than this process's first state (exchange.ts sameEpoch).
   */
  startFiguresAgain(generation: number, changed: boolean): void {
    this.#since = Date.now()
    this.#from = { generation, changed }
    // A new window rather than a later start in the old one: its one-second buckets would blur the edge.
    this.#windows.close()
    this.#windows = new SlidingWindows(this.#config.window)
  }

  drop(reason: DropReason): undefined {
    this.#dropped[reason]++
    this.#result('dropped')
    return undefined
  }

  /** A copy could not be sent or got no answer: remembered as the last error, counted as an error. */
  failed(message: string): void {
    this.#lastError = { at: new Date().toISOString(), message }
    this.#options.logger.debug({ message }, 'mirror copy failed')
    this.#result('error')
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

  /** This replica's figures as published for the others; `share` the share copied, part of what they count. */
  snapshot(share: number): MirrorSnapshot {
    const counts = (color: Color): MirrorCounts => {
      const { compared, mismatched } = this.figures(color)
      return { compared, mismatched }
    }
    return {
      epoch: JSON.stringify([share, this.#config.window, this.#config.compare]),
      since: this.#since,
      from: { ...this.#from },
      window: { blue: counts('blue'), green: counts('green') },
      routes: this.#mismatchedRoutes(),
    }
  }

  #mismatchedRoutes(): Array<{ route: string } & MirrorCounts> {
    return [...this.#routes.entries()]
      .filter(([, figures]) => figures.mismatched > 0)
      .sort((a, b) => b[1].mismatched - a[1].mismatched)
      .slice(0, ROUTES)
      .map(([route, figures]) => ({ route, ...figures }))
  }

  /**
   * GET /mirror: the request path's part (`live`) and what the comparisons found: the fleet's figures (`fleet`,
   * pooled across replicas) in `window` and `mismatchedRoutes`, this replica's own in `thisReplica`.
   */
  status(live: MirrorLiveStatus, fleet: FleetMirror): unknown {
    const own = {
      blue: this.figures('blue'),
      green: this.figures('green'),
    }
    return {
      enabled: live.enabled,
      percent: live.percent,
      since: live.enabled ? new Date(this.#since).toISOString() : null,
      inFlight: live.inFlight,
      results: { ...this.#counts },
      dropped: { ...this.#dropped },
      window: {
        seconds: this.#config.window / 1000,
        replicas: fleet.replicas,
        ...(fleet.problem ? { problem: fleet.problem } : {}),
        blue: fleet.window.blue,
        green: fleet.window.green,
      },
      mismatchedRoutes: fleet.routes,
      thisReplica: { window: own, mismatchedRoutes: this.#mismatchedRoutes() },
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

  close(): void {
    this.#windows.close()
  }

  /** The copy's answer and the live one, compared; `sample` the live color's second answer, when asked twice. */
  compared(
    copy: CopiedRequest,
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
  errored(copy: CopiedRequest, error: Error, latencyMs: number): void {
    this.#windows.record(copy.target, 500, latencyMs)
    this.#routeFigures(copy.route, true)
    this.failed(`${copy.method} ${redactedTarget(copy.path)} to ${copy.target}: ${error.message}`)
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
