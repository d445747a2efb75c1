import { Client } from 'undici'
import type { HealthCheckConfig } from '../config/types.ts'
import type { Upstream } from '../routing/upstream.ts'
import { probe } from './probe.ts'

/** The outcome of one active check. */
export interface CheckResult {
  /** When it finished (epoch ms). */
  at: number
  up: boolean
  /** "HTTP 200", or why there was no usable answer ("ECONNREFUSED", "no answer within 2000 ms"). */
  detail: string
  durationMs: number
}

/** Called when a check flips an upstream's verdict; `why` is one line for the log. */
export type VerdictListener = (index: number, healthy: boolean, why: string) => void

/**
 * The threshold rule for one upstream, pure: `unhealthyThreshold` failed checks in a row take a healthy upstream
 * out, `healthyThreshold` passing checks in a row bring it back. It starts healthy, so a fresh proxy serves at once
 * and only a run of failures from the very first check takes an upstream out.
 */
export class CheckVerdict {
  healthy = true
  /** The current run: passes while positive, failures while negative. */
  #run = 0
  readonly #healthyThreshold: number
  readonly #unhealthyThreshold: number

  constructor(healthyThreshold: number, unhealthyThreshold: number) {
    if (!Number.isInteger(healthyThreshold) || healthyThreshold < 1) {
      throw new TypeError(`healthyThreshold must be a positive integer, got ${healthyThreshold}`)
    }
    if (!Number.isInteger(unhealthyThreshold) || unhealthyThreshold < 1) {
      throw new TypeError(`unhealthyThreshold must be a positive integer, got ${unhealthyThreshold}`)
    }
    this.#healthyThreshold = healthyThreshold
    this.#unhealthyThreshold = unhealthyThreshold
  }

  /** How many checks in a row have had this result, counting the last one. */
  get run(): number {
    return Math.abs(this.#run)
  }

  /** Records one check; true when it changed the verdict. */
  record(up: boolean): boolean {
    if (up) this.#run = this.#run > 0 ? this.#run + 1 : 1
    else this.#run = this.#run < 0 ? this.#run - 1 : -1
    if (this.healthy && this.#run <= -this.#unhealthyThreshold) this.healthy = false
    else if (!this.healthy && this.#run >= this.#healthyThreshold) this.healthy = true
    else return false
    return true
  }
}

function startingVerdict(config: HealthCheckConfig, unhealthy: boolean): CheckVerdict {
  const verdict = new CheckVerdict(config.healthyThreshold, config.unhealthyThreshold)
  verdict.healthy = !unhealthy
  return verdict
}

/** Spread checks a little, so many upstreams (and replicas) do not probe in lockstep. */
const JITTER = 0.1

interface Checked {
  readonly index: number
  readonly upstream: Upstream
  readonly verdict: CheckVerdict
  /** Checks get a connection of their own: busy traffic connections must not make a live upstream look dead. */
  readonly client: Client
  timer: NodeJS.Timeout | undefined
  inFlight: Promise<void> | undefined
  last: CheckResult | undefined
}

/**
 * Active health checks for one pool: every `interval` (give or take 10%), a GET of `path` on each upstream,
 * judged by CheckVerdict. The next check is timed from the end of the previous one, so a slow upstream is never
 * probed twice at once.
 */
export class ActiveChecks {
  readonly enabled: boolean
  readonly #config: HealthCheckConfig
  readonly #checked: Checked[]
  readonly #onVerdict: VerdictListener
  readonly #abort = new AbortController()
  #started = false
  #closed = false

  /** `unhealthy` names upstreams that start unhealthy: a reload keeps the verdict of an upstream it keeps. */
  constructor(
    upstreams: readonly Upstream[],
    config: HealthCheckConfig,
    onVerdict: VerdictListener,
    unhealthy: (upstream: Upstream) => boolean = () => false,
  ) {
    this.enabled = config.enabled && upstreams.length > 0
    this.#config = config
    this.#onVerdict = onVerdict
    this.#checked = this.enabled
      ? upstreams.map((upstream, index) => ({
          index,
          upstream,
          verdict: startingVerdict(config, unhealthy(upstream)),
          client: new Client(upstream.origin, {
            pipelining: 1,
            connect: { timeout: config.timeout, ...upstream.tls },
            headersTimeout: config.timeout,
            bodyTimeout: config.timeout,
          }),
          timer: undefined,
          inFlight: undefined,
          last: undefined,
        }))
      : []
  }

  /** Begins checking; the first round starts within a tenth of an interval. */
  start(): void {
    if (!this.enabled || this.#started || this.#closed) return
    this.#started = true
    for (const checked of this.#checked)
      this.#schedule(checked, Math.random() * JITTER * this.#config.interval)
  }

  /** The verdict for the upstream at `index` in the pool; always true with checks off. */
  healthy(index: number): boolean {
    return this.#checked[index]?.verdict.healthy ?? true
  }

  lastCheck(index: number): CheckResult | undefined {
    return this.#checked[index]?.last
  }

  /** Stops every timer, aborts the checks in flight, waits for them to settle, closes the check connections. */
  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    for (const checked of this.#checked) clearTimeout(checked.timer)
    this.#abort.abort(new Error('health checks closed'))
    await Promise.all(this.#checked.map((checked) => checked.inFlight))
    await Promise.all(this.#checked.map((checked) => checked.client.destroy()))
  }

  #schedule(checked: Checked, delay: number): void {
    checked.timer = setTimeout(() => {
      checked.timer = undefined
      checked.inFlight = this.#check(checked)
    }, delay)
    checked.timer.unref()
  }

  async #check(checked: Checked): Promise<void> {
    const startedAt = performance.now()
    const result = await probe(checked.upstream, this.#config, {
      dispatcher: checked.client,
      signal: this.#abort.signal,
    })
    checked.inFlight = undefined
    if (this.#closed) return
    checked.last = {
      at: Date.now(),
      up: result.up,
      detail: result.detail,
      durationMs: performance.now() - startedAt,
    }
    const { verdict } = checked
    if (verdict.record(result.up)) {
      const why = verdict.healthy
        ? `${verdict.run} passing health checks in a row (${result.detail})`
        : `${verdict.run} failed health checks in a row (last: ${result.detail})`
      this.#onVerdict(checked.index, verdict.healthy, why)
    }
    const { interval } = this.#config
    this.#schedule(checked, interval * (1 - JITTER + Math.random() * 2 * JITTER))
  }
}
