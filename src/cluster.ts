// `bluegreen serve --workers N`: one primary and N workers (node:cluster) that share the public and admin ports.
// The primary serves no traffic. It keeps N workers running, relays each committed state from the worker that
// made it to the others (and each worker's rollback-window figures), adds up the workers' metrics for /metrics,
// and passes a shutdown on to every worker.
// This file is the primary and the message protocol; cluster-worker.ts is the workers' end of it.

import cluster, { type Worker } from 'node:cluster'
import { AggregatorRegistry } from 'prom-client'
import type { Color } from './colors.ts'
import type { Logger } from './log.ts'
import type { WindowFigures } from './metrics/windows.ts'
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

/** How long a committing worker waits for its siblings to apply a change before answering anyway. */
export const SHARE_TIMEOUT_MS = 2_000
/** How long the primary waits for every worker's metrics; a scrape fails rather than sum some of them. */
export const METRICS_TIMEOUT_MS = 3_000
/** A crashed worker is restarted after 100 ms, doubling with each crash in a row, up to 10 s. */
const RESTART_FIRST_MS = 100
const RESTART_MAX_MS = 10_000
/** A worker that ran this long before dying was healthy: the next restart is quick again. */
const STABLE_MS = 10_000

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
}

export interface Primary {
  /** The exit code, once every worker has exited: 0 when all drained cleanly after stop(), 1 otherwise. */
  readonly exited: Promise<number>
  /** The first call passes SIGTERM to every worker (a graceful drain); a second kills them. */
  stop(reason: string): void
}

interface Gather {
  requester: Worker
  requesterId: number
  waiting: Set<Worker>
  responses: Map<Worker, object[]>
  timer: NodeJS.Timeout
}

interface Share {
  origin: Worker
  originId: number
  waiting: Set<Worker>
  timer: NodeJS.Timeout
}

export function startPrimary(options: PrimaryOptions): Primary {
  const { workers, logger, stopTimeout } = options
  if (!cluster.isPrimary) throw new Error('startPrimary must run in the primary process')
  if (!Number.isInteger(workers) || workers < 2)
    throw new TypeError('workers must be an integer of 2 or more')
  if (!Number.isInteger(stopTimeout) || stopTimeout <= 0) {
    throw new TypeError('stopTimeout must be a positive integer (milliseconds)')
  }
  // Read by node:cluster when it first forks: it must be set before.
  cluster.schedulingPolicy = options.schedulingPolicy === 'none' ? cluster.SCHED_NONE : cluster.SCHED_RR

  /** Every worker not yet seen to exit, and when it was forked. */
  const live = new Map<Worker, number>()
  const listening = new Set<Worker>()
  let anyStarted = false
  let restartStreak = 0
  const restartTimers = new Set<NodeJS.Timeout>()
  let stopping = false
  let killTimer: NodeJS.Timeout | undefined
  let failed = false
  let exit!: (code: number) => void
  const exited = new Promise<number>((resolve) => {
    exit = resolve
  })
  // The newest state any worker committed, for a worker that starts after it (its own read of the store may
  // have come just before the commit).
  let latest: State | undefined
  let nextId = 0
  const shares = new Map<number, Share>()
  const gathers = new Map<number, Gather>()

  const fork = (): void => {
    live.set(cluster.fork(), Date.now())
  }

  const finishShare = (id: number): void => {
    const share = shares.get(id)
    if (!share) return
    shares.delete(id)
    clearTimeout(share.timer)
    const late = [...share.waiting].map((worker) => worker.id)
    if (late.length > 0) logger.warn({ late }, 'workers did not apply a shared state in time')
    send(share.origin, { type: 'bluegreen:state-shared', id: share.originId, late })
  }

  const finishGather = (id: number, error?: string): void => {
    const gather = gathers.get(id)
    if (!gather) return
    gathers.delete(id)
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

  const onShare = (origin: Worker, state: State, originId: number | undefined): void => {
    if (!latest || state.generation > latest.generation) latest = state
    const recipients = [...listening].filter((worker) => worker !== origin && worker.isConnected())
    if (originId === undefined) {
      for (const worker of recipients) send(worker, { type: 'bluegreen:state', state })
      return
    }
    const id = nextId++
    const timer = setTimeout(() => finishShare(id), SHARE_TIMEOUT_MS)
    shares.set(id, { origin, originId, waiting: new Set(recipients), timer })
    for (const worker of recipients) send(worker, { type: 'bluegreen:state', state, id })
    if (recipients.length === 0) finishShare(id)
  }

  const onMetrics = (requester: Worker, requesterId: number): void => {
    const id = nextId++
    // The requester answers too: it is serving this very scrape.
    const targets = new Set([...listening, requester].filter((worker) => worker.isConnected()))
    const timer = setTimeout(() => {
      const missing = [...(gathers.get(id)?.waiting ?? [])].map((worker) => worker.id).join(', ')
      finishGather(id, `worker(s) ${missing} did not send their metrics within ${METRICS_TIMEOUT_MS} ms`)
    }, METRICS_TIMEOUT_MS)
    gathers.set(id, { requester, requesterId, waiting: new Set(targets), responses: new Map(), timer })
    for (const worker of targets) send(worker, { type: 'bluegreen:metrics-request', id })
  }

  cluster.on('message', (worker: Worker, message: unknown) => {
    if (!isMessage(message)) return
    switch (message.type) {
      case 'bluegreen:hello':
        listening.add(worker)
        if (latest) send(worker, { type: 'bluegreen:state', state: latest })
        return
      case 'bluegreen:started':
        anyStarted = true
        logger.info({ worker: worker.id, pid: worker.process.pid }, 'worker serving')
        return
      case 'bluegreen:state':
        return onShare(worker, message.state, message.id)
      case 'bluegreen:state-applied': {
        const share = shares.get(message.id)
        share?.waiting.delete(worker)
        if (share?.waiting.size === 0) finishShare(message.id)
        return
      }
      case 'bluegreen:metrics':
        return onMetrics(worker, message.id)
      case 'bluegreen:windows':
        for (const sibling of listening) {
          if (sibling !== worker) send(sibling, { ...message, from: worker.id })
        }
        return
      case 'bluegreen:metrics-response': {
        const gather = gathers.get(message.id)
        if (!gather?.waiting.delete(worker)) return
        if (message.error !== undefined) {
          finishGather(message.id, `worker ${worker.id} could not collect its metrics: ${message.error}`)
          return
        }
        gather.responses.set(worker, message.metrics)
        if (gather.waiting.size === 0) finishGather(message.id)
        return
      }
    }
  })

  cluster.on('exit', (worker: Worker, code: number | null, signal: string | null) => {
    listening.delete(worker)
    const lifetime = Date.now() - (live.get(worker) ?? Date.now())
    live.delete(worker)
    // A worker that is gone answers nothing: what was waiting on it goes on without it.
    for (const [id, share] of shares) {
      if (share.origin === worker) {
        shares.delete(id)
        clearTimeout(share.timer)
      } else if (share.waiting.delete(worker) && share.waiting.size === 0) finishShare(id)
    }
    for (const [id, gather] of gathers) {
      if (gather.requester === worker) {
        gathers.delete(id)
        clearTimeout(gather.timer)
      } else if (gather.waiting.delete(worker) && gather.waiting.size === 0) finishGather(id)
    }
    const how = { worker: worker.id, pid: worker.process.pid, code, signal }
    if (stopping) {
      if (code !== 0) {
        failed = true
        logger.error(how, 'worker exited uncleanly during shutdown')
      } else logger.info(how, 'worker exited')
      if (live.size === 0) finish()
      return
    }
    if (!anyStarted) {
      // Not one worker has come up (a port in use, say): restarting would only repeat the failure.
      logger.error(how, 'a worker failed to start; stopping')
      failed = true
      stop('a worker failed to start')
      return
    }
    restartStreak = lifetime >= STABLE_MS ? 1 : restartStreak + 1
    const delay = Math.min(RESTART_FIRST_MS * 2 ** (restartStreak - 1), RESTART_MAX_MS)
    logger.error({ ...how, restartInMs: delay }, 'worker died; restarting it')
    const timer = setTimeout(() => {
      restartTimers.delete(timer)
      if (!stopping) fork()
    }, delay)
    restartTimers.add(timer)
  })

  let finished = false
  const finish = (): void => {
    if (finished) return
    finished = true
    clearTimeout(killTimer)
    logger.info({ failed }, 'every worker has exited')
    exit(failed ? 1 : 0)
  }

  const stop = (reason: string): void => {
    for (const timer of restartTimers) clearTimeout(timer)
    restartTimers.clear()
    const remaining = [...live.keys()]
    if (stopping) {
      logger.warn({ reason, workers: remaining.length }, 'stopping again: killing the workers')
      failed = true
      for (const worker of remaining) worker.process.kill('SIGKILL')
      return
    }
    stopping = true
    logger.info({ reason, workers: remaining.length }, 'stopping: the workers drain and exit')
    if (remaining.length === 0) {
      finish()
      return
    }
    for (const worker of remaining) worker.process.kill('SIGTERM')
    killTimer = setTimeout(() => {
      logger.error({ afterMs: stopTimeout }, 'workers still running after the drain time; killing them')
      stop('drain timeout')
    }, stopTimeout)
    killTimer.unref()
  }

  logger.info({ workers, schedulingPolicy: options.schedulingPolicy }, 'starting the cluster')
  for (let i = 0; i < workers; i++) fork()
  return { exited, stop }
}
