// `bluegreen serve --workers N`: one primary and N workers (node:cluster) that share the public and admin ports.
// The primary serves no traffic. It keeps N workers running, relays each committed state from the worker that
// made it to the others (and each worker's rollback-window figures), adds up the workers' metrics for /metrics,
// and passes a shutdown on to every worker.
// This file is the primary and the message protocol; cluster-worker.ts is the workers' end of it.

import cluster, { type Worker } from 'node:cluster'
import { AggregatorRegistry } from 'prom-client'
import { prepareReload, type ReloadTrigger } from './app/reload.ts'
import type { Color } from './colors.ts'
import type { ReloadOutcome } from './config/changes.ts'
import type { Config } from './config/types.ts'
import type { Logger } from './log.ts'
import type { SeriesEntry } from './metrics/series-exchange.ts'
import type { WindowFigures } from './metrics/windows.ts'
import type { MirrorEntry } from './mirror/exchange.ts'
import type { State } from './state/state.ts'

/** Everything the primary and its workers say to each other over the cluster's IPC channels. */
export type Message =
  /** Worker -> primary: its link listens, so it can be sent states and asked for metrics. */
  | { type: 'bluegreen:hello' }
  /** Worker -> primary: both listeners are bound; a worker that never says so failed to start. */
  | { type: 'bluegreen:started' }
  /** Both ways: a committed state. With an id the sender wants to hear once every recipient has applied it. */
  | { type: 'bluegreen:state'; state: State; id?: number }
  | { type: 'bluegreen:state-applied'; id: number }
  /** Primary -> the committing worker: every sibling has applied it (or `late` did not in time). */
  | { type: 'bluegreen:state-shared'; id: number; late: number[] }
  /** Worker -> primary: the metrics of every worker, please; the answer is `metrics-sum`. */
  | { type: 'bluegreen:metrics'; id: number }
  | { type: 'bluegreen:metrics-request'; id: number }
  | { type: 'bluegreen:metrics-response'; id: number; metrics: object[]; error?: string }
  | { type: 'bluegreen:metrics-sum'; id: number; text?: string; error?: string }
  /**
   * Both ways: a worker's rollback-window figures for a watched change, passed on by the primary to the others
   * (with `from`), so each worker's release guard judges all the traffic, not its own share of it.
   */
  | { type: 'bluegreen:windows'; generation: number; color: Color; figures: WindowFigures; from?: number }
  /** Worker -> primary: POST /reload came to it; the primary reloads every worker and answers `reload-result`. */
  | { type: 'bluegreen:reload'; id: number }
  | { type: 'bluegreen:reload-result'; id: number; outcome: ReloadOutcome }
  /** Primary -> every worker: a config validated and planned once, to apply; each answers `reload-applied`. */
  | { type: 'bluegreen:reload-apply'; id: number; config: Config }
  | { type: 'bluegreen:reload-applied'; id: number; error?: string }
  /** Primary -> one worker: record a reload no worker asked for (SIGHUP) in the log, audit trail and metrics. */
  | { type: 'bluegreen:reload-record'; outcome: ReloadOutcome; trigger: ReloadTrigger }
  /** Both ways: a worker's buckets for the console's charts, passed on by the primary to the others (with `from`). */
  | { type: 'bluegreen:series'; entry: SeriesEntry; from?: number }
  /** Both ways: a worker's mirror figures for GET /mirror and the gate, passed on to the others (with `from`). */
  | { type: 'bluegreen:mirror'; entry: MirrorEntry; from?: number }

/** How long a committing worker waits for its siblings to apply a change before answering anyway. */
export const SHARE_TIMEOUT_MS = 2_000
/** How long the primary waits for every worker's metrics; a scrape fails rather than sum some of them. */
export const METRICS_TIMEOUT_MS = 3_000
/** A crashed worker is restarted after 100 ms, doubling with each crash in a row, up to 10 s. */
const RESTART_FIRST_MS = 100
const RESTART_MAX_MS = 10_000
/** A worker that ran this long before dying was healthy: the next restart is quick again. */
const STABLE_MS = 10_000
/** How long the primary waits for every worker to apply a reload before answering which did not. */
export const RELOAD_TIMEOUT_MS = 10_000
/** Set in the environment of a worker forked after a reload: the running config, which the file may no longer be. */
export const RUNNING_CONFIG_ENV = 'BLUEGREEN_RUNNING_CONFIG'

export function isMessage(value: unknown): value is Message {
  const type = (value as { type?: unknown } | null)?.type
  return typeof type === 'string' && type.startsWith('bluegreen:')
}

function send(worker: Worker, message: Message): void {
  // A worker that has just died may still be listed; its messages have nowhere to go.
  if (worker.isConnected()) worker.send(message)
}

export interface PrimaryOptions {
  workers: number
  logger: Logger
  /** How connections reach workers: 'rr' (the primary accepts and deals them out in turn) or 'none' (the kernel). */
  schedulingPolicy: 'rr' | 'none'
  /** How long the workers get to drain after stop() before they are killed (ms). */
  stopTimeout: number
  /** The file the config was read from, re-read by a reload, and the config the workers started with. */
  configFile: string
  config: Config
}

export interface Primary {
  /** The exit code, once every worker has exited: 0 when all drained cleanly after stop(), 1 otherwise. */
  readonly exited: Promise<number>
  /** The first call passes SIGTERM to every worker (a graceful drain); a second kills them. */
  stop(reason: string): void
  /** Re-reads the config file, validates it once and has every worker apply it (SIGHUP). */
  reload(trigger: ReloadTrigger): Promise<ReloadOutcome>
}

/** A reload sent to the workers, waiting for each to say it applied it. */
interface Rollout {
  waiting: Set<Worker>
  applied: number[]
  failed: { worker: number; error: string }[]
  done: () => void
}

/** A committed state sent to the siblings, waiting for each to say it has applied it. */
interface Share {
  origin: Worker
  originId: number
  waiting: Set<Worker>
  timer: NodeJS.Timeout
}

/** A scrape of /metrics, waiting for every worker's registry. */
interface Gather {
  requester: Worker
  requesterId: number
  waiting: Set<Worker>
  responses: Map<Worker, object[]>
  timer: NodeJS.Timeout
}

export function startPrimary(options: PrimaryOptions): Primary {
  const primary = new ClusterPrimary(options)
  primary.start()
  return primary
}

/**
 * The primary of `serve --workers N`: it forks the workers and restarts those that die, relays each committed state
 * and each worker's window figures to the others, adds up their metrics, and passes a shutdown on to all of them.
 */
class ClusterPrimary implements Primary {
  readonly exited: Promise<number>
  readonly #options: PrimaryOptions
  readonly #logger: Logger
  #exit!: (code: number) => void
  /** Every worker not yet seen to exit, and when it was forked. */
  readonly #live = new Map<Worker, number>()
  /** The workers whose link listens: they can be sent states and asked for metrics. */
  readonly #listening = new Set<Worker>()
  readonly #shares = new Map<number, Share>()
  readonly #gathers = new Map<number, Gather>()
  readonly #restartTimers = new Set<NodeJS.Timeout>()
  readonly #reloads = new Map<number, Rollout>()
  /** The config the workers run: a reload replaces it once the workers have it. */
  #config: Config
  #reloaded = false
  #reloadQueue: Promise<unknown> = Promise.resolve()
  #nextId = 0
  /**
   * The newest state any worker committed, for a worker that starts after it (its own read of the store may have
   * come just before the commit).
   */
  #latest: State | undefined
  #anyStarted = false
  /** Deaths in a row, each within STABLE_MS of its start: the restart delay doubles with each. */
  #restartStreak = 0
  #stopping = false
  #killTimer: NodeJS.Timeout | undefined
  #failed = false
  #finished = false

  constructor(options: PrimaryOptions) {
    const { workers, stopTimeout } = options
    if (!cluster.isPrimary) throw new Error('startPrimary must run in the primary process')
    if (!Number.isInteger(workers) || workers < 2)
      throw new TypeError('workers must be an integer of 2 or more')
    if (!Number.isInteger(stopTimeout) || stopTimeout <= 0) {
      throw new TypeError('stopTimeout must be a positive integer (milliseconds)')
    }
    this.#options = options
    this.#logger = options.logger
    this.#config = options.config
    this.exited = new Promise<number>((resolve) => {
      this.#exit = resolve
    })
  }

  start(): void {
    const { workers, schedulingPolicy } = this.#options
    // Read by node:cluster when it first forks: it must be set before.
    cluster.schedulingPolicy = schedulingPolicy === 'none' ? cluster.SCHED_NONE : cluster.SCHED_RR
    cluster.on('message', this.#onMessage)
    cluster.on('exit', this.#onExit)
    this.#logger.info({ workers, schedulingPolicy }, 'starting the cluster')
    for (let i = 0; i < workers; i++) this.#fork()
  }

  stop(reason: string): void {
    for (const timer of this.#restartTimers) clearTimeout(timer)
    this.#restartTimers.clear()
    const remaining = [...this.#live.keys()]
    if (this.#stopping) {
      this.#logger.warn({ reason, workers: remaining.length }, 'stopping again: killing the workers')
      this.#failed = true
      for (const worker of remaining) worker.process.kill('SIGKILL')
      return
    }
    this.#stopping = true
    this.#logger.info({ reason, workers: remaining.length }, 'stopping: the workers drain and exit')
    if (remaining.length === 0) {
      this.#finish()
      return
    }
    for (const worker of remaining) worker.process.kill('SIGTERM')
    const { stopTimeout } = this.#options
    this.#killTimer = setTimeout(() => {
      this.#logger.error({ afterMs: stopTimeout }, 'workers still running after the drain time; killing them')
      this.stop('drain timeout')
    }, stopTimeout)
    this.#killTimer.unref()
  }

  #fork(): void {
    // After a reload, the file may say something else by now (or be broken): a new worker runs what the others do.
    const env = this.#reloaded ? { [RUNNING_CONFIG_ENV]: JSON.stringify(this.#config) } : undefined
    this.#live.set(cluster.fork(env), Date.now())
  }

  /** A reload no worker asked for (SIGHUP): one worker records it, so it is counted and audited once. */
  async reload(trigger: ReloadTrigger): Promise<ReloadOutcome> {
    const outcome = await this.#queued(trigger)
    const recorder = [...this.#listening]
      .filter((worker) => worker.isConnected())
      .sort((a, b) => a.id - b.id)[0]
    if (recorder) send(recorder, { type: 'bluegreen:reload-record', outcome, trigger })
    return outcome
  }

  /** One reload at a time, whoever asked. */
  #queued(trigger: ReloadTrigger): Promise<ReloadOutcome> {
    const run = () => this.#reload(trigger)
    const result = this.#reloadQueue.then(run, run)
    this.#reloadQueue = result.catch(() => {})
    return result
  }

  async #reload(trigger: ReloadTrigger): Promise<ReloadOutcome> {
    const prepared = await prepareReload(this.#options.configFile, this.#config)
    if ('outcome' in prepared) {
      this.#logger.warn(
        { result: prepared.outcome.result, problems: prepared.outcome.problems, by: trigger.actor },
        `config reload ${prepared.outcome.result}: ${prepared.outcome.message}`,
      )
      return prepared.outcome
    }
    const { next, changed } = prepared
    const workers = await this.#applyEverywhere(next)
    this.#config = next
    this.#reloaded = true
    const file = this.#options.configFile
    if (workers.failed.length > 0) {
      const names = workers.failed.map((failure) => `worker ${failure.worker}: ${failure.error}`).join('; ')
      this.#logger.error({ changed, workers }, 'config reload: not every worker applied it')
      return {
        result: 'applied',
        file,
        changed,
        workers,
        code: 'BG_RELOAD_FAILED',
        message: `applied by workers ${workers.applied.join(', ') || 'none'}, not by ${names}`,
      }
    }
    this.#logger.info(
      { changed, workers: workers.applied, by: trigger.actor },
      'config reloaded by every worker',
    )
    return { result: 'applied', file, changed, workers, message: `applied: ${changed.join(', ')}` }
  }

  /** Sends the new config to every worker and waits until each has applied it, or RELOAD_TIMEOUT_MS. */
  #applyEverywhere(config: Config): Promise<NonNullable<ReloadOutcome['workers']>> {
    const id = this.#nextId++
    const targets = [...this.#listening].filter((worker) => worker.isConnected())
    return new Promise((resolve) => {
      const rollout: Rollout = {
        waiting: new Set(targets),
        applied: [],
        failed: [],
        done: () => {
          clearTimeout(timer)
          this.#reloads.delete(id)
          for (const worker of rollout.waiting) {
            rollout.failed.push({ worker: worker.id, error: `did not answer within ${RELOAD_TIMEOUT_MS} ms` })
          }
          resolve({ applied: rollout.applied.sort((a, b) => a - b), failed: rollout.failed })
        },
      }
      const timer = setTimeout(() => rollout.done(), RELOAD_TIMEOUT_MS)
      this.#reloads.set(id, rollout)
      for (const worker of targets) send(worker, { type: 'bluegreen:reload-apply', id, config })
      if (targets.length === 0) rollout.done()
    })
  }

  #reloadApplied(worker: Worker, message: Extract<Message, { type: 'bluegreen:reload-applied' }>): void {
    const rollout = this.#reloads.get(message.id)
    if (!rollout?.waiting.delete(worker)) return
    if (message.error === undefined) rollout.applied.push(worker.id)
    else rollout.failed.push({ worker: worker.id, error: message.error })
    if (rollout.waiting.size === 0) rollout.done()
  }

  /** A worker's POST /reload: reloads every worker, then answers it (it records the reload). */
  #reloadFor(worker: Worker, id: number): void {
    const actor = `worker ${worker.id}`
    this.#queued({ actor, address: 'cluster' }).then(
      (outcome) => send(worker, { type: 'bluegreen:reload-result', id, outcome }),
      (error: unknown) => {
        this.#logger.error({ err: error }, 'config reload failed')
        const message = `the reload failed: ${(error as Error).message}`
        const outcome: ReloadOutcome = {
          result: 'refused',
          file: this.#options.configFile,
          changed: [],
          code: 'BG_RELOAD_FAILED',
          message,
        }
        send(worker, { type: 'bluegreen:reload-result', id, outcome })
      },
    )
  }

  readonly #onMessage = (worker: Worker, message: unknown): void => {
    if (!isMessage(message)) return
    switch (message.type) {
      case 'bluegreen:hello':
        this.#listening.add(worker)
        if (this.#latest) send(worker, { type: 'bluegreen:state', state: this.#latest })
        return
      case 'bluegreen:started':
        this.#anyStarted = true
        this.#logger.info({ worker: worker.id, pid: worker.process.pid }, 'worker serving')
        return
      case 'bluegreen:state':
        this.#share(worker, message.state, message.id)
        return
      case 'bluegreen:state-applied':
        this.#shareApplied(worker, message.id)
        return
      case 'bluegreen:metrics':
        this.#gather(worker, message.id)
        return
      case 'bluegreen:metrics-response':
        this.#gathered(worker, message)
        return
      case 'bluegreen:reload':
        this.#reloadFor(worker, message.id)
        return
      case 'bluegreen:reload-applied':
        this.#reloadApplied(worker, message)
        return
      case 'bluegreen:windows':
      case 'bluegreen:series':
      case 'bluegreen:mirror':
        for (const sibling of this.#listening) {
          if (sibling !== worker) send(sibling, { ...message, from: worker.id })
        }
        return
    }
  }

  readonly #onExit = (worker: Worker, code: number | null, signal: string | null): void => {
    this.#listening.delete(worker)
    const lifetime = Date.now() - (this.#live.get(worker) ?? Date.now())
    this.#live.delete(worker)
    this.#forgetWaitsOn(worker)
    const how = { worker: worker.id, pid: worker.process.pid, code, signal }
    if (this.#stopping) {
      if (code !== 0) {
        this.#failed = true
        this.#logger.error(how, 'worker exited uncleanly during shutdown')
      } else this.#logger.info(how, 'worker exited')
      if (this.#live.size === 0) this.#finish()
      return
    }
    if (!this.#anyStarted) {
      // Not one worker has come up (a port in use, say): restarting would only repeat the failure.
      this.#logger.error(how, 'a worker failed to start; stopping')
      this.#failed = true
      this.stop('a worker failed to start')
      return
    }
    this.#restartStreak = lifetime >= STABLE_MS ? 1 : this.#restartStreak + 1
    const delay = Math.min(RESTART_FIRST_MS * 2 ** (this.#restartStreak - 1), RESTART_MAX_MS)
    this.#logger.error({ ...how, restartInMs: delay }, 'worker died; restarting it')
    const timer = setTimeout(() => {
      this.#restartTimers.delete(timer)
      if (!this.#stopping) this.#fork()
    }, delay)
    this.#restartTimers.add(timer)
  }

  /** A worker that is gone answers nothing: what was waiting on it goes on without it. */
  #forgetWaitsOn(worker: Worker): void {
    for (const [id, share] of this.#shares) {
      if (share.origin === worker) {
        this.#shares.delete(id)
        clearTimeout(share.timer)
      } else if (share.waiting.delete(worker) && share.waiting.size === 0) this.#finishShare(id)
    }
    for (const rollout of this.#reloads.values()) {
      if (rollout.waiting.delete(worker)) {
        rollout.failed.push({ worker: worker.id, error: 'exited before applying it' })
        if (rollout.waiting.size === 0) rollout.done()
      }
    }
    for (const [id, gather] of this.#gathers) {
      if (gather.requester === worker) {
        this.#gathers.delete(id)
        clearTimeout(gather.timer)
      } else if (gather.waiting.delete(worker) && gather.waiting.size === 0) this.#finishGather(id)
    }
  }

  /** A worker committed a state: its siblings get it, and with an id the worker hears once they have applied it. */
  #share(origin: Worker, state: State, originId: number | undefined): void {
    if (!this.#latest || state.generation > this.#latest.generation) this.#latest = state
    const recipients = [...this.#listening].filter((worker) => worker !== origin && worker.isConnected())
    if (originId === undefined) {
      for (const worker of recipients) send(worker, { type: 'bluegreen:state', state })
      return
    }
    const id = this.#nextId++
    const timer = setTimeout(() => this.#finishShare(id), SHARE_TIMEOUT_MS)
    this.#shares.set(id, { origin, originId, waiting: new Set(recipients), timer })
    for (const worker of recipients) send(worker, { type: 'bluegreen:state', state, id })
    if (recipients.length === 0) this.#finishShare(id)
  }

  #shareApplied(worker: Worker, id: number): void {
    const share = this.#shares.get(id)
    share?.waiting.delete(worker)
    if (share?.waiting.size === 0) this.#finishShare(id)
  }

  #finishShare(id: number): void {
    const share = this.#shares.get(id)
    if (!share) return
    this.#shares.delete(id)
    clearTimeout(share.timer)
    const late = [...share.waiting].map((worker) => worker.id)
    if (late.length > 0) this.#logger.warn({ late }, 'workers did not apply a shared state in time')
    send(share.origin, { type: 'bluegreen:state-shared', id: share.originId, late })
  }

  /** A worker serves a scrape of /metrics: every worker, the requester too, sends its registry. */
  #gather(requester: Worker, requesterId: number): void {
    const id = this.#nextId++
    const targets = new Set([...this.#listening, requester].filter((worker) => worker.isConnected()))
    const timer = setTimeout(() => {
      const missing = [...(this.#gathers.get(id)?.waiting ?? [])].map((worker) => worker.id).join(', ')
      this.#finishGather(
        id,
        `worker(s) ${missing} did not send their metrics within ${METRICS_TIMEOUT_MS} ms`,
      )
    }, METRICS_TIMEOUT_MS)
    this.#gathers.set(id, { requester, requesterId, waiting: new Set(targets), responses: new Map(), timer })
    for (const worker of targets) send(worker, { type: 'bluegreen:metrics-request', id })
  }

  #gathered(worker: Worker, message: Extract<Message, { type: 'bluegreen:metrics-response' }>): void {
    const gather = this.#gathers.get(message.id)
    if (!gather?.waiting.delete(worker)) return
    if (message.error !== undefined) {
      this.#finishGather(message.id, `worker ${worker.id} could not collect its metrics: ${message.error}`)
      return
    }
    gather.responses.set(worker, message.metrics)
    if (gather.waiting.size === 0) this.#finishGather(message.id)
  }

  #finishGather(id: number, error?: string): void {
    const gather = this.#gathers.get(id)
    if (!gather) return
    this.#gathers.delete(id)
    clearTimeout(gather.timer)
    const answer = (text?: string, problem?: string) =>
      send(gather.requester, { type: 'bluegreen:metrics-sum', id: gather.requesterId, text, error: problem })
    if (error) {
      answer(undefined, error)
      return
    }
    // In worker order, so that the 'first' aggregator always takes the same (the oldest) worker's values.
    const ordered = [...gather.responses].sort(([a], [b]) => a.id - b.id).map(([, metrics]) => metrics)
    AggregatorRegistry.aggregate(ordered)
      .metrics()
      .then(
        (text) => answer(text),
        (failure: unknown) =>
          answer(undefined, `could not add up the metrics: ${(failure as Error).message}`),
      )
  }

  #finish(): void {
    if (this.#finished) return
    this.#finished = true
    clearTimeout(this.#killTimer)
    this.#logger.info({ failed: this.#failed }, 'every worker has exited')
    this.#exit(this.#failed ? 1 : 0)
  }
}
