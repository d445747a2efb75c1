import { Agent, request } from 'undici'
import type { EventStream, LiveEvent } from '../admin/event-stream.ts'
import type { AuditEvent, AuditTrail, NotificationOutcome } from '../audit/audit.ts'
import type { NotifyTargetConfig } from '../config/types.ts'
import type { Logger } from '../log.ts'
import type { Metrics } from '../metrics/registry.ts'
import { type Notification, notificationsOf } from './events.ts'
import { bodyFor, headersFor } from './message.ts'

export interface NotifierOptions {
  /** None is allowed: a reload may add some (see reconfigure). */
  targets: readonly NotifyTargetConfig[]
  /** This replica's live events: what the notifier reads. */
  events: EventStream
  audit: AuditTrail
  metrics: Metrics
  logger: Logger
  replicaId: string
  /**
   * Claims a notification every replica observes for this replica: true when no other replica has claimed its id
   * (with the file store, the only replica, always true).
   */
  claim: (id: string) => Promise<boolean>
  /** Deliveries a target may have pending (being attempted or waiting to retry) before new ones are dropped. */
  maxPending?: number
  /** How long shutdown waits for deliveries under way before it cuts them off (ms). */
  closeWithin?: number
}

/** What one attempt came to. */
interface Attempted {
  ok: boolean
  status?: number
  /** A refusal another attempt would get too (a 4xx other than 408 and 429). */
  permanent?: boolean
  error?: string
}

/** The longest wait between two attempts, however many came before. */
const MAX_BACKOFF_MS = 30_000

/**
 * Tells webhook targets what happened (README "Notifications"). It reads this replica's live events, never the
 * request path or a change's: a change is answered first, and its notification is sent after, by the replica that
 * made it. Each delivery is retried with exponential backoff for the target's `retryFor`, through a connection
 * pool of its own with short timeouts; every outcome is audited (action `notify`) and counted in
 * bluegreen_notifications_total{target,result}. A target with `maxPending` deliveries pending drops new ones.
 */
export class Notifier {
  readonly #options: NotifierOptions
  readonly #agent: Agent
  readonly #pending = new Map<string, number>()
  readonly #underWay = new Set<Promise<void>>()
  /** Deliveries waiting to retry: how to wake each, by its target's name. */
  readonly #sleepers = new Map<() => void, string>()
  readonly #unsubscribe: () => void
  #targets: readonly NotifyTargetConfig[] = []
  #closing = false

  constructor(options: NotifierOptions) {
    this.#options = options
    // Each attempt sets its target's own timeouts (and a signal that bounds the connect as well).
    this.#agent = new Agent({ connect: { timeout: 5_000 }, keepAliveTimeout: 4_000, connections: 8 })
    this.reconfigure(options.targets)
    this.#unsubscribe = options.events.subscribe((event) => this.#observed(event))
  }

  /**
   * The targets from now on (a reload). An event is sent to the targets in force when it happens. A delivery
   * pending to a target the reload changed makes its next attempts with the new settings (URL, secret, format,
   * timeouts); one pending to a removed target is not retried: it ends at once (an attempt under way is let finish)
   * and counts as dropped. Targets are told apart by name.
   */
  reconfigure(targets: readonly NotifyTargetConfig[]): void {
    for (const target of targets) {
      if (this.#targets.some((known) => known.name === target.name)) continue
      for (const result of ['delivered', 'retried', 'failed', 'dropped'])
        this.#options.metrics.notifications.labels(target.name, result).inc(0)
    }
    this.#targets = targets
    // A delivery waiting to retry to a removed target ends now, not when its retry was due.
    for (const [wake, name] of this.#sleepers) {
      if (!targets.some((target) => target.name === name)) wake()
    }
  }

  /**
   * Stops taking events, cuts short the waits between retries, and gives deliveries under way `closeWithin` to end
   * before their connections are destroyed: a receiver that hangs must not hold up the shutdown.
   */
  async close(): Promise<void> {
    this.#closing = true
    this.#unsubscribe()
    for (const wake of this.#sleepers.keys()) wake()
    const within = this.#options.closeWithin ?? 2_000
    let timer: NodeJS.Timeout | undefined
    const late = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, within)
    })
    await Promise.race([Promise.allSettled([...this.#underWay]), late])
    clearTimeout(timer)
    await this.#agent.destroy()
  }

  #observed(event: LiveEvent): void {
    if (this.#closing) return
    const notifications = notificationsOf(event)
    if (notifications.length === 0) return
    // After the publisher's turn: nothing here runs inside the change (or the request) that published the event.
    setImmediate(() => {
      if (this.#closing) return
      for (const notification of notifications) this.#track(this.#notify(notification))
    })
  }

  #track(work: Promise<void>): void {
    this.#underWay.add(work)
    void work.finally(() => this.#underWay.delete(work))
  }

  async #notify(notification: Notification): Promise<void> {
    const targets = this.#targets.filter((target) => target.events.includes(notification.event))
    if (targets.length === 0) return
    if (notification.claimed && !(await this.#claimed(notification))) return
    if (this.#closing) return
    for (const target of targets) {
      const pending = this.#pending.get(target.name) ?? 0
      if (pending >= (this.#options.maxPending ?? 100)) {
        this.#outcome(target, notification, { result: 'dropped', attempt: 0 }, 'too many deliveries pending')
        continue
      }
      this.#pending.set(target.name, pending + 1)
      this.#track(
        this.#deliver(target, notification).finally(() => {
          this.#pending.set(target.name, (this.#pending.get(target.name) ?? 1) - 1)
        }),
      )
    }
  }

  async #claimed(notification: Notification): Promise<boolean> {
    try {
      const won = await this.#options.claim(notification.id)
      if (!won) this.#options.logger.debug({ id: notification.id }, 'notification claimed by another replica')
      return won
    } catch (error) {
      // Unclaimed, every replica might send it: better that none does than all of them.
      this.#options.logger.warn(
        { err: error, id: notification.id, event: notification.event },
        'cannot claim a notification: not sent',
      )
      return false
    }
  }

  async #deliver(first: NotifyTargetConfig, notification: Notification): Promise<void> {
    let target = first
    const started = Date.now()
    for (let attempt = 1; ; attempt++) {
      const body = bodyFor(target.format, notification, this.#options.replicaId)
      const attempted = await this.#attempt(target, notification, body)
      const status = attempted.status === undefined ? {} : { status: attempted.status }
      if (attempted.ok) {
        this.#outcome(target, notification, { result: 'delivered', attempt, ...status })
        return
      }
      const wait = Math.min(target.backoff * 2 ** (attempt - 1), MAX_BACKOFF_MS)
      const retrying =
        !attempted.permanent && !this.#closing && Date.now() + wait - started <= target.retryFor
      const result = retrying ? 'retried' : 'failed'
      this.#outcome(target, notification, { result, attempt, ...status }, attempted.error)
      if (!retrying) return
      await this.#sleep(wait, target.name)
      if (this.#closing) {
        this.#outcome(
          target,
          notification,
          { result: 'failed', attempt, ...status },
          'shut down before the retry',
        )
        return
      }
      const now = this.#targets.find((known) => known.name === target.name)
      if (now === undefined) {
        this.#outcome(
          target,
          notification,
          { result: 'dropped', attempt },
          'its target was removed by a reload',
        )
        return
      }
      target = now
    }
  }

  async #attempt(target: NotifyTargetConfig, notification: Notification, body: string): Promise<Attempted> {
    try {
      const response = await request(target.url, {
        method: 'POST',
        dispatcher: this.#agent,
        headers: headersFor(target, notification, body, Date.now()),
        body,
        headersTimeout: target.timeout,
        bodyTimeout: target.timeout,
        signal: AbortSignal.timeout(target.timeout),
      })
      await response.body.dump()
      const status = response.statusCode
      if (status >= 200 && status < 300) return { ok: true, status }
      const permanent = status < 500 && status !== 408 && status !== 429
      return { ok: false, status, permanent, error: `the receiver answered ${status}` }
    } catch (error) {
      return { ok: false, error: describeError(error) }
    }
  }

  #sleep(ms: number, targetName: string): Promise<void> {
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer)
        this.#sleepers.delete(wake)
        resolve()
      }
      const timer = setTimeout(wake, ms)
      this.#sleepers.set(wake, targetName)
    })
  }

  /** Audited and counted, whatever it was; logged as a warning unless delivered. */
  #outcome(
    target: NotifyTargetConfig,
    notification: Notification,
    outcome: Pick<NotificationOutcome, 'result' | 'attempt' | 'status'>,
    problem?: string,
  ): void {
    const { audit, metrics, logger, replicaId } = this.#options
    metrics.notifications.labels(target.name, outcome.result).inc()
    const detail: NotificationOutcome = {
      target: target.name,
      event: notification.event,
      id: notification.id,
      ...outcome,
    }
    const event: AuditEvent = {
      at: new Date().toISOString(),
      actor: 'bluegreen',
      address: replicaId,
      action: 'notify',
      from: null,
      to: null,
      reason: `${notification.event} to ${target.name}: ${outcome.result}${outcome.attempt > 0 ? ` (attempt ${outcome.attempt})` : ''}`,
      result: outcome.result === 'delivered' ? 'accepted' : 'refused',
      notification: detail,
      ...(problem === undefined ? {} : { message: problem }),
    }
    if (outcome.result === 'delivered') logger.info({ notification: detail }, 'notification delivered')
    else logger.warn({ notification: detail, problem }, `notification ${outcome.result}`)
    audit.record(event).catch((error: unknown) => {
      logger.error({ err: error, audit: event }, 'could not store an audit event')
    })
  }
}

/** undici's errors say what failed in their code (ECONNREFUSED, UND_ERR_HEADERS_TIMEOUT) and message. */
function describeError(error: unknown): string {
  const cause = (error as { cause?: { code?: string; message?: string } }).cause
  const code = (error as { code?: string }).code ?? cause?.code
  const message = (error as Error).message || cause?.message || 'failed'
  return code && !message.includes(code) ? `${code}: ${message}` : message
}
