// A `serve --workers N` worker's end of the cluster (cluster.ts is the primary's): the states this worker commits go
// to its siblings through the primary, theirs come back to the app, /metrics asks the primary for the sum, and the
// release guard's figures and the console's charts are pooled with the siblings' (file store).

import cluster, { type Worker } from 'node:cluster'
import type { Registry } from 'prom-client'
import type { ReloadTrigger } from './app/reload.ts'
import {
  isMessage,
  METRICS_TIMEOUT_MS,
  type Message,
  RELOAD_TIMEOUT_MS,
  SHARE_TIMEOUT_MS,
} from './cluster.ts'
import type { Color } from './colors.ts'
import type { ReloadOutcome } from './config/changes.ts'
import type { Config } from './config/types.ts'
import { deepFreeze } from './config/validate.ts'
import { BlueGreenError } from './errors.ts'
import type { Logger } from './log.ts'
import type { SeriesSnapshot } from './metrics/series.ts'
import { entryOf, type SeriesExchange, seriesExchange, snapshotOf } from './metrics/series-exchange.ts'
import { addFigures, emptyFigures, type WindowFigures } from './metrics/windows.ts'
import { type MirrorExchange, type MirrorSnapshot, mirrorExchange } from './mirror/exchange.ts'
import type { WindowExchange } from './rollout/exchange.ts'
import type { SharedFigures, Stamped } from './state/shared-figures.ts'
import type { State } from './state/state.ts'
import { freezeState } from './state/state.ts'
import type { StateStore } from './state/store.ts'

/** What a worker's app needs from the cluster. */
export interface ClusterLink {
  /** The cluster's id for this worker (1, 2, ...; a restarted worker gets a new one). */
  readonly workerId: number
  /**
   * The store as the app should use it: each change this worker commits is sent to its siblings, and change()
   * resolves once they have all applied it, so the very next request to any worker is routed by it.
   */
  shareChanges(store: StateStore): StateStore
  /**
   * The app's side: `apply` takes the siblings' states (it ignores generations it has), `registry` its metrics,
   * `applyConfig` a reload the primary has validated, `recordReload` one this worker is to log, audit and count.
   */
  attach(hooks: Hooks): void
  /** POST /reload on this worker: the primary validates the file once and every worker applies it. */
  requestReload(): Promise<ReloadOutcome>
  /** Says the app has bound its listeners. */
  started(): void
  /** The metrics of every worker, added up by the primary. */
  clusterMetrics(): Promise<string>
  /**
   * The workers' rollback-window figures pooled through the primary, for the file store (with Redis they meet in
   * Redis already): each evaluation sends this worker's figures to its siblings and adds up theirs that are
   * fresher than `freshMs` and about the same change.
   */
  windowExchange(freshMs: number): WindowExchange
  /**
   * The console's charts pooled through the primary, for the file store: every `stepMs` this worker's buckets go
   * to its siblings, and GET /windows adds up theirs that are fresh.
   */
  seriesExchange(stepMs: number): SeriesExchange
  /**
   * The mirror's figures pooled through the primary, for the file store: every `stepMs` this worker's go to its
   * siblings, and GET /mirror and the gate add up theirs that are fresh and of the same mirror generation.
   */
  mirrorExchange(stepMs: number): MirrorExchange
}

interface Hooks {
  apply: (state: State) => void
  registry: Registry
  applyConfig: (config: Config) => void
  recordReload: (outcome: ReloadOutcome, trigger: ReloadTrigger) => void
}

/** A sibling's latest figures, stamped when they arrived. */
interface SiblingFigures {
  generation: number
  color: Color
  figures: WindowFigures
  at: number
}

/** This process's link to the primary, when it is a cluster worker; undefined otherwise. */
export function joinCluster(logger: Logger): ClusterLink | undefined {
  const worker = cluster.worker
  if (!cluster.isWorker || !worker) return undefined
  return new WorkerLink(worker, logger)
}

class WorkerLink implements ClusterLink {
  readonly workerId: number
  readonly #worker: Worker
  readonly #logger: Logger
  #hooks: Hooks | undefined
  /** A state that arrives before the app is wired up waits for it. */
  #pending: State | undefined
  #nextId = 0
  /** Questions put to the primary, by id, waiting for its answer. */
  readonly #waiting = new Map<number, (message: Message) => void>()
  readonly #siblingFigures = new Map<number, SiblingFigures>()
  /** The siblings' latest chart buckets, stamped when they were taken. */
  readonly #siblingSeries = new Map<number, Stamped<SeriesSnapshot>>()
  /** The siblings' latest mirror figures. */
  readonly #siblingMirror = new Map<number, Stamped<MirrorSnapshot>>()

  constructor(worker: Worker, logger: Logger) {
    this.workerId = worker.id
    this.#worker = worker
    this.#logger = logger
    worker.on('message', this.#onMessage)
    worker.send({ type: 'bluegreen:hello' })
  }

  shareChanges(store: StateStore): StateStore {
    const commit: StateStore['commit'] = async (change, expectedGeneration) => {
      const committed = await store.commit(change, expectedGeneration)
      // A change that altered nothing has nothing to share; the siblings follow the store as always.
      if (committed.changed) await this.#share(committed.state)
      return committed
    }
    return {
      start: () => store.start(),
      current: () => store.current(),
      commit,
      change: async (change, expectedGeneration) => (await commit(change, expectedGeneration)).state,
      previous: () => store.previous(),
      subscribe: (listener) => store.subscribe(listener),
      close: () => store.close(),
      status: store.status ? () => store.status!() : undefined,
    }
  }

  attach(hooks: Hooks): void {
    this.#hooks = hooks
    if (this.#pending) hooks.apply(this.#pending)
    this.#pending = undefined
  }

  async requestReload(): Promise<ReloadOutcome> {
    const answer = await this.#ask<Extract<Message, { type: 'bluegreen:reload-result' }>>(
      { type: 'bluegreen:reload', id: this.#nextId++ },
      RELOAD_TIMEOUT_MS + 5_000,
    )
    return answer.outcome
  }

  started(): void {
    this.#worker.send({ type: 'bluegreen:started' })
  }

  windowExchange(freshMs: number): WindowExchange {
    return {
      combine: async (generation, color, local) => this.#combine(freshMs, generation, color, local),
      close: async () => {},
    }
  }

  seriesExchange(stepMs: number): SeriesExchange {
    const send = (snapshot: SeriesSnapshot, at: number) =>
      this.#toSiblings({ type: 'bluegreen:series', entry: entryOf(snapshot, at) }, 'chart figures')
    return seriesExchange(new RelayedFigures(this.#siblingSeries, send, stepMs))
  }

  mirrorExchange(stepMs: number): MirrorExchange {
    const send = (snapshot: MirrorSnapshot, at: number) =>
      this.#toSiblings({ type: 'bluegreen:mirror', entry: { at, snapshot } }, 'mirror figures')
    return mirrorExchange(new RelayedFigures(this.#siblingMirror, send, stepMs))
  }

  async clusterMetrics(): Promise<string> {
    const answer = await this.#ask<Extract<Message, { type: 'bluegreen:metrics-sum' }>>(
      { type: 'bluegreen:metrics', id: this.#nextId++ },
      METRICS_TIMEOUT_MS + 1_000,
    ).catch((error: unknown) => ({ text: undefined, error: (error as Error).message }))
    if (answer.text === undefined) {
      throw new BlueGreenError(
        'BG_METRICS_UNAVAILABLE',
        `cannot add up the workers' metrics: ${answer.error}`,
      )
    }
    return answer.text
  }

  readonly #onMessage = (message: unknown): void => {
    if (!isMessage(message)) return
    switch (message.type) {
      case 'bluegreen:state':
        this.#receiveState(message.state, message.id)
        return
      case 'bluegreen:metrics-request':
        this.#sendMetrics(message.id)
        return
      case 'bluegreen:windows':
        if (message.from !== undefined) {
          const { generation, color, figures } = message
          this.#siblingFigures.set(message.from, { generation, color, figures, at: Date.now() })
        }
        return
      case 'bluegreen:reload-apply':
        this.#applyConfig(message.id, message.config)
        return
      case 'bluegreen:reload-record':
        this.#hooks?.recordReload(message.outcome, message.trigger)
        return
      case 'bluegreen:series':
        if (message.from !== undefined) {
          this.#siblingSeries.set(message.from, { at: message.entry.at, value: snapshotOf(message.entry) })
        }
        return
      case 'bluegreen:mirror':
        if (message.from !== undefined) {
          this.#siblingMirror.set(message.from, { at: message.entry.at, value: message.entry.snapshot })
        }
        return
      case 'bluegreen:state-shared':
      case 'bluegreen:reload-result':
      case 'bluegreen:metrics-sum': {
        const resolve = this.#waiting.get(message.id)
        this.#waiting.delete(message.id)
        resolve?.(message)
        return
      }
    }
  }

  #receiveState(received: State, id: number | undefined): void {
    const state = freezeState(received)
    if (this.#hooks) this.#hooks.apply(state)
    else if (!this.#pending || state.generation > this.#pending.generation) this.#pending = state
    // Unwired, it loads the state itself; either way it will not route by anything older.
    if (id !== undefined) this.#worker.send({ type: 'bluegreen:state-applied', id })
  }

  #applyConfig(id: number, config: Config): void {
    let error: string | undefined
    try {
      if (!this.#hooks) throw new Error('this worker is still starting')
      this.#hooks.applyConfig(deepFreeze(config))
    } catch (failure) {
      this.#logger.error({ err: failure }, 'could not apply a reloaded config')
      error = (failure as Error).message ?? String(failure)
    }
    this.#worker.send({ type: 'bluegreen:reload-applied', id, ...(error === undefined ? {} : { error }) })
  }

  #sendMetrics(id: number): void {
    if (!this.#hooks) return void this.#worker.send({ type: 'bluegreen:metrics-response', id, metrics: [] })
    this.#hooks.registry.getMetricsAsJSON().then(
      (metrics) => this.#worker.send({ type: 'bluegreen:metrics-response', id, metrics }),
      (error: unknown) => {
        this.#logger.error({ err: error }, 'could not collect the metrics of this worker')
        const problem = (error as Error).message ?? String(error)
        this.#worker.send({ type: 'bluegreen:metrics-response', id, metrics: [], error: problem })
      },
    )
  }

  #ask<T extends Message>(message: Message & { id: number }, timeoutMs: number): Promise<T> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiting.delete(message.id)
        reject(new Error(`the cluster primary did not answer within ${timeoutMs} ms`))
      }, timeoutMs)
      this.#waiting.set(message.id, (answer) => {
        clearTimeout(timer)
        resolve(answer as T)
      })
      this.#worker.send(message)
    })
  }

  async #share(state: State): Promise<void> {
    try {
      await this.#ask({ type: 'bluegreen:state', state, id: this.#nextId++ }, SHARE_TIMEOUT_MS + 1_000)
    } catch (error) {
      // The siblings still follow the store; they are only slower to see the change.
      this.#logger.warn(
        { err: error, generation: state.generation },
        'could not share a state with the other workers',
      )
    }
  }

  /** Best effort, like the window figures: without the primary, readers add up what this worker has heard. */
  #toSiblings(message: Message, what: string): void {
    if (!this.#worker.isConnected()) return
    try {
      this.#worker.send(message)
    } catch (error) {
      this.#logger.debug({ err: error }, `could not send the ${what} to the other workers`)
    }
  }

  /** This worker's figures go to its siblings; theirs that are fresh and about the same change are added. */
  #combine(freshMs: number, generation: number, color: Color, local: WindowFigures): WindowFigures {
    // Best effort: without the primary this worker still judges what it has, its own figures included.
    if (this.#worker.isConnected()) {
      try {
        this.#worker.send({ type: 'bluegreen:windows', generation, color, figures: local })
      } catch (error) {
        this.#logger.debug({ err: error }, 'could not send the window figures to the other workers')
      }
    }
    const total = addFigures(emptyFigures(), local)
    const now = Date.now()
    for (const [sibling, entry] of this.#siblingFigures) {
      // A worker that died or stopped sending drops out; its figures go once they are well past fresh.
      if (now - entry.at > freshMs * 10) this.#siblingFigures.delete(sibling)
      if (entry.generation !== generation || entry.color !== color || now - entry.at > freshMs) continue
      addFigures(total, entry.figures)
    }
    return total
  }
}

/**
 * Figures of one kind shared with the sibling workers through the primary (the file store's SharedFigures): sent
 * every step and at each read; a sibling's that have not come for three steps (it died, or stopped sending) drop
 * out. `latest` is the worker link's, which the messages from the primary fill.
 */
class RelayedFigures<T> implements SharedFigures<T> {
  readonly #latest: Map<number, Stamped<T>>
  readonly #send: (value: T, at: number) => void
  readonly #stepMs: number
  #timer: NodeJS.Timeout | undefined

  constructor(latest: Map<number, Stamped<T>>, send: (value: T, at: number) => void, stepMs: number) {
    this.#latest = latest
    this.#send = send
    this.#stepMs = stepMs
  }

  start(source: () => T): void {
    this.#timer = setInterval(() => this.#send(source(), Date.now()), this.#stepMs)
    this.#timer.unref()
  }

  async gather(local: T): Promise<T[]> {
    // Sent on every read too, so a sibling's reader sees this worker's latest figures as soon as it has read them.
    this.#send(local, Date.now())
    const now = Date.now()
    const gathered = [local]
    for (const [sibling, { at, value }] of this.#latest) {
      if (now - at > this.#stepMs * 3) this.#latest.delete(sibling)
      else gathered.push(value)
    }
    return gathered
  }

  async close(): Promise<void> {
    clearInterval(this.#timer)
  }
}
