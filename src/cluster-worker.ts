// A `serve --workers N` worker's end of the cluster (cluster.ts is the primary's): the states this worker commits go
// to its siblings through the primary, theirs come back to the app, /metrics asks the primary for the sum, and the
// release guard's figures are pooled with the siblings' (file store).

import cluster from 'node:cluster'
import type { Registry } from 'prom-client'
import { isMessage, METRICS_TIMEOUT_MS, type Message, SHARE_TIMEOUT_MS } from './cluster.ts'
import type { Color } from './colors.ts'
import { BlueGreenError } from './errors.ts'
import type { Logger } from './log.ts'
import { addFigures, emptyFigures, type WindowFigures } from './metrics/windows.ts'
import type { WindowExchange } from './rollout/exchange.ts'
import { freezeState } from './state/atomic-file.ts'
import type { State } from './state/state.ts'
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
  /** The app's side: `apply` takes the siblings' states (it ignores generations it has), `registry` its metrics. */
  attach(hooks: { apply: (state: State) => void; registry: Registry }): void
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
  let hooks: { apply: (state: State) => void; registry: Registry } | undefined
  // A state that arrives before the app is wired up waits for it.
  let pending: State | undefined
  let nextId = 0
  const waiting = new Map<number, (message: Message) => void>()
  const siblingFigures = new Map<number, SiblingFigures>()

  const ask = <T extends Message>(message: Message & { id: number }, timeoutMs: number): Promise<T> =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        waiting.delete(message.id)
        reject(new Error(`the cluster primary did not answer within ${timeoutMs} ms`))
      }, timeoutMs)
      waiting.set(message.id, (answer) => {
        clearTimeout(timer)
        resolve(answer as T)
      })
      worker.send(message)
    })

  worker.on('message', (message: unknown) => {
    if (!isMessage(message)) return
    switch (message.type) {
      case 'bluegreen:state': {
        const state = freezeState(message.state)
        if (hooks) hooks.apply(state)
        else if (!pending || state.generation > pending.generation) pending = state
        // Unwired, it loads the state itself; either way it will not route by anything older.
        if (message.id !== undefined) worker.send({ type: 'bluegreen:state-applied', id: message.id })
        return
      }
      case 'bluegreen:metrics-request':
        if (!hooks)
          return void worker.send({ type: 'bluegreen:metrics-response', id: message.id, metrics: [] })
        hooks.registry.getMetricsAsJSON().then(
          (metrics) => worker.send({ type: 'bluegreen:metrics-response', id: message.id, metrics }),
          (error: unknown) => {
            logger.error({ err: error }, 'could not collect the metrics of this worker')
            const problem = (error as Error).message ?? String(error)
            worker.send({ type: 'bluegreen:metrics-response', id: message.id, metrics: [], error: problem })
          },
        )
        return
      case 'bluegreen:windows':
        if (message.from !== undefined) {
          const { generation, color, figures } = message
          siblingFigures.set(message.from, { generation, color, figures, at: Date.now() })
        }
        return
      case 'bluegreen:state-shared':
      case 'bluegreen:metrics-sum': {
        const resolve = waiting.get(message.id)
        waiting.delete(message.id)
        resolve?.(message)
        return
      }
    }
  })
  worker.send({ type: 'bluegreen:hello' })

  const share = async (state: State): Promise<void> => {
    try {
      await ask({ type: 'bluegreen:state', state, id: nextId++ }, SHARE_TIMEOUT_MS + 1_000)
    } catch (error) {
      // The siblings still follow the store; they are only slower to see the change.
      logger.warn(
        { err: error, generation: state.generation },
        'could not share a state with the other workers',
      )
    }
  }

  return {
    workerId: worker.id,
    shareChanges: (store) => {
      const commit: StateStore['commit'] = async (change, expectedGeneration) => {
        const committed = await store.commit(change, expectedGeneration)
        // A change that altered nothing has nothing to share; the siblings follow the store as always.
        if (committed.changed) await share(committed.state)
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
    },
    attach: (wired) => {
      hooks = wired
      if (pending) wired.apply(pending)
      pending = undefined
    },
    started: () => worker.send({ type: 'bluegreen:started' }),
    windowExchange: (freshMs) => ({
      pool: async (generation, color, local) => {
        // Best effort: without the primary this worker still judges what it has, its own figures included.
        if (worker.isConnected()) {
          try {
            worker.send({ type: 'bluegreen:windows', generation, color, figures: local })
          } catch (error) {
            logger.debug({ err: error }, 'could not send the window figures to the other workers')
          }
        }
        const total = addFigures(emptyFigures(), local)
        const now = Date.now()
        for (const [sibling, entry] of siblingFigures) {
          // A worker that died or stopped sending drops out; its figures go once they are well past fresh.
          if (now - entry.at > freshMs * 10) siblingFigures.delete(sibling)
          if (entry.generation !== generation || entry.color !== color || now - entry.at > freshMs) continue
          addFigures(total, entry.figures)
        }
        return total
      },
      close: async () => {},
    }),
    clusterMetrics: async () => {
      const answer = await ask<Extract<Message, { type: 'bluegreen:metrics-sum' }>>(
        { type: 'bluegreen:metrics', id: nextId++ },
        METRICS_TIMEOUT_MS + 1_000,
      ).catch((error: unknown) => ({ text: undefined, error: (error as Error).message }))
      if (answer.text === undefined) {
        throw new BlueGreenError(
          'BG_METRICS_UNAVAILABLE',
          `cannot add up the workers' metrics: ${answer.error}`,
          503,
        )
      }
      return answer.text
    },
  }
}
