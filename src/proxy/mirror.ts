import type { IncomingMessage } from 'node:http'
import type { Agent } from 'undici'
import { type Color, otherColor } from '../colors.ts'
import type { MirrorConfig } from '../config/types.ts'
import type { Logger } from '../log.ts'
import {
  type DropReason,
  type FleetMirror,
  MirrorComparisons,
  type MirrorFigures,
  type MirrorResult,
} from '../mirror/comparisons.ts'
import type { DiffLog } from '../mirror/diffs.ts'
import { localMirrorExchange, type MirrorExchange } from '../mirror/exchange.ts'
import { routeKey } from '../mirror/noise.ts'
import { chooseUpstream } from '../routing/pick.ts'
import type { RoutingSnapshot } from '../routing/snapshot.ts'
import type { MirrorSetting, State } from '../state/state.ts'
import { MirrorCopy } from './mirror-copy.ts'
import { copiesAgent } from './mirror-send.ts'

// Mirroring: a share of live requests is copied to the other color once the client's request has been read, and
// the copy's answer is compared with the one the client got (src/mirror/comparisons.ts). Nothing here is awaited by
// the request path: the client's answer streams on as it would, and the copy lives on its own connections, with its
// own short timeout, bounded in number. This file decides which requests are copied and bounds the copies in flight;
// mirror-copy.ts tees one copy's body and live answer, mirror-send.ts sends it. README's "Mirroring" tells the story.

export type { DropReason, MirrorFigures, MirrorResult } from '../mirror/comparisons.ts'

export interface MirrorOptions {
  config: MirrorConfig
  logger: Logger
  /** Each copy's result, once (bluegreen_mirror_requests_total). */
  count: (result: MirrorResult) => void
  random?: () => number
}

export class Mirror {
  /** The share of matching requests copied right now, 0..1; 0 when off, which is all the request path tests. */
  share = 0
  /** What the copies found: counts, figures, noise, differences. */
  readonly comparisons: MirrorComparisons
  /** The copies' connections; a reload that changes maxInFlight or timeout replaces them (see reconfigure). */
  agent: Agent
  /** How the figures are pooled across replicas (app/mirror.ts sets Redis's); this process's own by default. */
  exchange: MirrorExchange = localMirrorExchange()
  #applied = false
  #methods: ReadonlySet<string>
  readonly #random: () => number
  #setting: MirrorSetting | undefined
  #inFlight = 0

  constructor(options: MirrorOptions) {
    const { config } = options
    this.comparisons = new MirrorComparisons(options)
    this.#methods = new Set(config.methods)
    this.#random = options.random ?? Math.random
    this.agent = copiesAgent(config)
  }

  /** The settings in force: read at each use, so a reload applies from the next copy on. */
  get config(): MirrorConfig {
    return this.comparisons.config
  }

  /** The latest differences (GET /mirror/diffs, the gate's top differences). */
  get diffs(): DiffLog {
    return this.comparisons.diffs
  }

  /**
   * New settings (a reload), from the next copy on; the share turned on stays (it is in the state). Copies under way
   * finish as they started. A change to `window` or `compare` starts the figures and the learned noise again
   * (MirrorComparisons.reconfigure).
   */
  reconfigure(config: MirrorConfig): void {
    const before = this.config
    this.comparisons.reconfigure(config)
    this.#methods = new Set(config.methods)
    if (config.maxInFlight !== before.maxInFlight || config.timeout !== before.timeout) {
      const previous = this.agent
      this.agent = copiesAgent(config)
      // Copies under way finish on the connections they have; the old pool then closes.
      previous.close().catch(() => {})
    }
  }

  /** Every applied state: on, off, or another share. */
  stateApplied(state: State): void {
    const next = state.mirror
    const share = next?.enabled ? next.percent / 100 : 0
    // Turned on, off, or another share: the figures start again, so a fixed release is judged on its own answers.
    if (share !== this.share) this.comparisons.startFiguresAgain(state.generation, this.#applied)
    this.#applied = true
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
    const config = this.config
    const prefixes = config.pathPrefixes
    if (prefixes.length > 0 && !prefixes.some((prefix) => url.startsWith(prefix))) return undefined
    if (this.#random() >= this.share) return undefined
    const declared = Number(req.headers['content-length'] ?? 0)
    if (declared > config.maxBodyBytes) return this.drop('bodyTooLarge')
    if (this.#inFlight >= config.maxInFlight) return this.drop('inFlight')
    const target = otherColor(route.color)
    const upstream = chooseUpstream(route.snapshot.pools[target])
    if (upstream === undefined) {
      this.comparisons.failed(`no available upstream in the ${target} pool`)
      return undefined
    }
    const key = routeKey(req.method ?? 'GET', url)
    const { noise } = this.comparisons
    const sample = noise.wantsSample(key, config.compare.noiseSampleRate, this.#random())
      ? chooseUpstream(route.snapshot.pools[route.color])
      : undefined
    this.#inFlight++
    return new MirrorCopy(this, req, key, headers, route.color, upstream, sample)
  }

  drop(reason: DropReason): undefined {
    return this.comparisons.drop(reason)
  }

  /** The window's figures for copies sent to `color`, since mirroring was last turned on or its share changed. */
  figures(color: Color): MirrorFigures & { p50Ms: number; p99Ms: number; since: number } {
    return this.comparisons.figures(color)
  }

  /**
   * The window's figures pooled across replicas (GET /mirror, the gate). When the others' cannot be read (Redis
   * down), this replica's own, with `problem` saying so.
   */
  async fleet(): Promise<FleetMirror> {
    const local = this.comparisons.snapshot(this.share)
    const ratio = ({ compared, mismatched }: { compared: number; mismatched: number }): MirrorFigures => ({
      compared,
      mismatched,
      ratio: compared === 0 ? 0 : mismatched / compared,
    })
    try {
      const pooled = await this.exchange.pooled(local)
      return {
        window: { blue: ratio(pooled.window.blue), green: ratio(pooled.window.green) },
        routes: pooled.routes,
        replicas: pooled.replicas,
      }
    } catch (error) {
      return {
        window: { blue: ratio(local.window.blue), green: ratio(local.window.green) },
        routes: local.routes,
        replicas: 1,
        problem: `only this replica's figures: cannot read the others' (${(error as Error).message})`,
      }
    }
  }

  /** This replica's figures as published for the others. */
  snapshot(): ReturnType<MirrorComparisons['snapshot']> {
    return this.comparisons.snapshot(this.share)
  }

  async status(): Promise<unknown> {
    const fleet = await this.fleet()
    return this.comparisons.status(
      {
        enabled: this.share > 0,
        percent: this.#setting?.percent ?? null,
        inFlight: this.#inFlight,
      },
      fleet,
    )
  }

  async close(): Promise<void> {
    this.comparisons.close()
    await this.agent.destroy()
  }

  /** A copy is over (compared, failed or dropped) and none of its requests is still out. */
  released(): void {
    this.#inFlight--
  }
}
