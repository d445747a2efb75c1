// The shared state store for many replicas: one Redis hash holds the state, its generation and the state it
// replaced. Every change is one Lua compare-and-set that also publishes the new state, so each replica applies it
// the moment Redis has it. Pub/sub drops messages while a replica is disconnected, so a replica also re-reads the
// key on every (re)connect and on a slow poll. The request path never waits for any of this.

import type { Redis } from 'ioredis'
import type { Color } from '../colors.ts'
import type { RedisConfig } from '../config/types.ts'
import { asUnavailable, BlueGreenError, unavailable } from '../errors.ts'
import type { Logger } from '../log.ts'
import { createRedis, plainRedisError, redisAddress, unreachableMessage } from './redis-connection.ts'
import { CHANGE, READ, type ScriptedRedis, SEED } from './redis-scripts.ts'
import { DEFAULT_KEEP_FOR_MS } from './standby.ts'
import {
  checkedChange,
  checkedGeneration,
  freezeState,
  initialState,
  rollbackTarget,
  type State,
  type StateChange,
  stateProblem,
  supersedes,
} from './state.ts'
import type { Commit, StateListener, StateStore, StoreStatus } from './store.ts'

export interface RedisStateStoreOptions {
  config: RedisConfig
  initial: Color
  logger: Logger
  /** Names the connections in CLIENT LIST, so an operator can tell the replicas apart. */
  replicaId: string
  /** Called for every invalid state found in Redis (it is ignored; the last good state stays). */
  onInvalidState?: (problem: string) => void
  /** How long (ms) a color that lost all its traffic stays on standby (standby.keepFor). Default 24 h. */
  standbyKeepFor?: number
}

/** How soon a connection ioredis gave up on is started again. */
const RESTART_ENDED_CONNECTION_MS = 200

export function changesChannel(key: string): string {
  return `${key}:changes`
}

export class RedisStateStore implements StateStore {
  readonly #options: RedisStateStoreOptions
  readonly #key: string
  readonly #channel: string
  readonly #client: ScriptedRedis
  readonly #subscriber: Redis
  readonly #listeners = new Set<StateListener>()
  readonly #logger: Logger
  #standbyKeepFor: number
  #current: State | undefined
  #starting: Promise<State> | undefined
  #started = false
  #closed = false
  #pollTimer: NodeJS.Timeout | undefined
  #reachable = false
  /** An outage has been logged and its end has not (see #unreachable). */
  #outage = false
  #lastSyncAt: number | undefined
  #lastInvalid: string | undefined
  /** The local file the state served came from, until Redis answers (see adopt). */
  #restoredFrom: string | undefined
  /** Redis's clock minus this process's, in ms, measured on reads; undefined until the first read. */
  #clockOffset: number | undefined

  constructor(options: RedisStateStoreOptions) {
    this.#options = options
    this.#logger = options.logger
    this.#standbyKeepFor = options.standbyKeepFor ?? DEFAULT_KEEP_FOR_MS
    this.#key = options.config.key
    this.#channel = changesChannel(this.#key)
    this.#client = createRedis(options.config, `bluegreen:${options.replicaId}`) as ScriptedRedis
    this.#client.defineCommand('bluegreenChange', { numberOfKeys: 1, lua: CHANGE })
    this.#client.defineCommand('bluegreenSeed', { numberOfKeys: 1, lua: SEED })
    this.#client.defineCommand('bluegreenRead', { numberOfKeys: 1, lua: READ })
    this.#subscriber = createRedis(options.config, `bluegreen:${options.replicaId}:sub`)
    this.#watchConnection(this.#client, 'commands')
    this.#watchConnection(this.#subscriber, 'subscriber')
    this.#subscriber.on('message', (channel: string, message: string) => {
      if (channel === this.#channel) this.#receive(message, 'published')
    })
  }

  /** The command connection, shared with the replica registry. */
  get client(): Redis {
    return this.#client
  }

  /** The subscriber connection, shared with the replica registry. */
  get subscriber(): Redis {
    return this.#subscriber
  }

  start(): Promise<State> {
    if (this.#closed) return Promise.reject(unavailable('the Redis state store is closed'))
    this.#starting ??= this.#load().catch((error: unknown) => {
      this.#starting = undefined
      throw this.#failure(
        error,
        'cannot load the state',
        `cannot load the state from Redis (${this.#where()})`,
      )
    })
    return this.#starting
  }

  current(): State | undefined {
    return this.#current
  }

  /** standby.keepFor for the changes from now on (a reload); a standby already in force keeps its keepUntil. */
  keepStandbyFor(ms: number): void {
    this.#standbyKeepFor = ms
  }

  status(): StoreStatus {
    const status: StoreStatus = { reachable: this.#reachable, lastSyncAt: this.#lastSyncAt }
    if (this.#restoredFrom !== undefined) status.restoredFrom = this.#restoredFrom
    return status
  }

  /**
   * Start-up while Redis does not answer: serve the state this replica applied before it restarted (its local
   * copy, from `file`, written at `savedAt`) until Redis answers. Loading then settles it by generation: Redis's
   * newer state wins, and a Redis that lost its data gets this one back. Ignored once a state is applied.
   */
  adopt(state: State, savedAt: number, file: string): boolean {
    if (this.#current || this.#closed) return false
    this.#lastSyncAt = savedAt
    this.#restoredFrom = file
    this.#apply(state)
    return true
  }

  async change(change: StateChange, expectedGeneration?: number): Promise<State> {
    return (await this.commit(change, expectedGeneration)).state
  }

  async commit(change: StateChange, expectedGeneration?: number): Promise<Commit> {
    if (!this.#started || this.#closed) {
      throw unavailable(`the Redis state store is ${this.#closed ? 'closed' : 'not loaded yet'}`)
    }
    const requested = checkedChange(change)
    checkedGeneration(expectedGeneration)
    const now = new Date()
    const keepUntil = new Date(now.getTime() + this.#standbyKeepFor)
    const body = JSON.stringify({
      active: requested.active,
      weights: requested.weights,
      updatedAt: now.toISOString(),
      updatedBy: requested.updatedBy,
      reason: requested.reason,
      trigger: requested.trigger,
      rollout: requested.rollout,
      mirror: requested.mirror,
    })
    // Half the command timeout for Redis to run it, the rest for the reply to come back (see CHANGE).
    const { commandTimeout } = this.#options.config
    const deadline = Math.floor(Date.now() + (this.#clockOffset ?? 0) + commandTimeout / 2)
    let reply: [number, string?]
    try {
      reply = await this.#client.bluegreenChange(
        this.#key,
        expectedGeneration?.toString() ?? '',
        body,
        this.#channel,
        String(this.#current?.generation ?? 0),
        String(deadline),
        keepUntil.toISOString(),
      )
    } catch (error) {
      this.#unreachable(error)
      throw this.#failure(
        error,
        'the change was not made',
        `Redis (${this.#where()}) did not take the change; it was not made`,
      )
    }
    this.#synced()
    const [outcome, detail] = reply
    if (outcome === 0) {
      // Someone else got there first: pick their state up now rather than at the next message or poll.
      void this.#refresh('conflict')
      throw new BlueGreenError(
        'BG_GENERATION_CONFLICT',
        `expected generation ${expectedGeneration} but the state is at ${detail}`,
      )
    }
    if (outcome === -1) throw unavailable(`Redis has no state at key ${this.#key}`)
    if (outcome === -3) {
      throw unavailable(
        `Redis (${this.#where()}) was too slow to run the change within ${commandTimeout / 2} ms; it was not made`,
      )
    }
    if (outcome === -2)
      throw unavailable(`the state in Redis at key ${this.#key} is invalid (${detail}); fix it first`)
    const state = this.#parse(detail)
    if (!state) throw unavailable('Redis answered the change with an invalid state')
    // Outcome 2 answers the stored state, unchanged: news to this replica if it was behind.
    this.#apply(state)
    return { state, changed: outcome === 1 }
  }

  async previous(): Promise<State | undefined> {
    let stored: (string | null)[]
    try {
      stored = await this.#client.hmget(this.#key, 'state', 'previous')
    } catch (error) {
      throw this.#failure(
        error,
        'cannot read the previous state',
        `cannot read the previous state from Redis (${this.#where()})`,
      )
    }
    const [state, previous] = stored.map((text) => (text ? this.#parse(text) : undefined))
    const current = state ?? this.#current
    if (!previous || !current) return previous
    return rollbackTarget(current, previous)
  }

  subscribe(listener: StateListener): () => void {
    this.#listeners.add(listener)
    return () => this.#listeners.delete(listener)
  }

  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    clearInterval(this.#pollTimer)
    await Promise.allSettled([quit(this.#subscriber), quit(this.#client)])
  }

  async #load(): Promise<State> {
    const timeout = this.#options.config.connectTimeout
    await Promise.all([connected(this.#client, timeout), connected(this.#subscriber, timeout)])
    await this.#subscriber.subscribe(this.#channel)
    // An adopted state seeds like the initial one: written only when Redis has none or an older one. Read before
    // seeding: the seed's own publication can reach the subscriber (and #current) before its reply.
    const adopted = this.#current
    const seed = adopted ?? initialState(this.#options.initial)
    const seeded = await this.#client.bluegreenSeed(
      this.#key,
      String(seed.generation),
      JSON.stringify(seed),
      '',
      this.#channel,
    )
    if (seeded === 1 && adopted) {
      this.#logger.warn(
        { key: this.#key, generation: seed.generation },
        'Redis had no state or an older one; put back the state this replica served from its local copy',
      )
    }
    const stored = await this.#read()
    const state = stored === undefined ? undefined : this.#parse(stored)
    if (!state) {
      throw unavailable(
        `the state in Redis at key ${this.#key} is invalid (${this.#lastInvalid}); fix or delete it`,
      )
    }
    this.#synced()
    this.#restoredFrom = undefined
    // Only ever forward: Redis's newer state, or its other content at the same generation (see supersedes).
    this.#apply(state)
    this.#started = true
    this.#pollTimer = setInterval(() => void this.#refresh('poll'), this.#options.config.pollInterval)
    this.#pollTimer.unref()
    this.#logger.info(
      { key: this.#key, redis: this.#where(), generation: state.generation },
      'state loaded from Redis',
    )
    return this.#current!
  }

  /** The stored state's JSON, or undefined when there is none; measures the clock offset on the way. */
  async #read(): Promise<string | undefined> {
    const sent = Date.now()
    const [seconds, microseconds, state] = await this.#client.bluegreenRead(this.#key)
    const received = Date.now()
    // Only a quick round trip says much about the offset: its error is at most half the round trip.
    if (this.#clockOffset === undefined || received - sent <= this.#options.config.commandTimeout / 4) {
      const redisNow = Number(seconds) * 1000 + Math.floor(Number(microseconds) / 1000)
      this.#clockOffset = redisNow - (sent + received) / 2
    }
    return state
  }

  /** Re-reads the key: on every reconnect (pub/sub lost whatever was published meanwhile) and on the poll. */
  async #refresh(why: string): Promise<void> {
    if (!this.#started || this.#closed) return
    let stored: string | undefined
    try {
      stored = await this.#read()
    } catch (error) {
      this.#unreachable(error)
      return
    }
    this.#synced()
    if (stored === undefined) {
      await this.#restore('the state key is gone')
      return
    }
    const state = this.#parse(stored)
    if (!state) return
    const current = this.#current
    if (current && state.generation < current.generation) {
      await this.#restore(`Redis is back at generation ${state.generation}`)
      return
    }
    this.#receive(state, why)
  }

  /**
   * Redis lost changes this replica has applied (restarted without persistence, flushed, failed over to a replica
   * that had not received them): put back the last state this replica had. Generations never go backwards.
   */
  async #restore(why: string): Promise<void> {
    const state = this.#current
    if (!state) return
    let written: number
    try {
      written = await this.#client.bluegreenSeed(
        this.#key,
        String(state.generation),
        JSON.stringify(state),
        '',
        this.#channel,
      )
    } catch (error) {
      this.#unreachable(error)
      return
    }
    if (written === 1) {
      this.#logger.warn(
        { key: this.#key, generation: state.generation },
        `${why} in Redis; restored this replica's state`,
      )
    }
  }

  #receive(message: string | State, source: string): void {
    const state = typeof message === 'string' ? this.#parse(message) : message
    if (!state || !supersedes(state, this.#current)) return
    if (this.#current?.generation === state.generation) {
      this.#logger.warn(
        { generation: state.generation, source, active: state.active, weights: state.weights },
        'Redis holds another state at the generation this replica applied (a change raced a Redis restart); following Redis',
      )
    } else this.#logger.debug({ generation: state.generation, source }, 'state received')
    this.#apply(state)
  }

  /** An untrusted state from Redis: valid, or logged, counted and ignored. */
  #parse(text: string | undefined): State | undefined {
    let value: unknown
    let problem: string | undefined
    try {
      value = JSON.parse(text ?? '')
      problem = stateProblem(value)
    } catch {
      problem = 'not JSON'
    }
    if (problem === undefined) return freezeState(value as State)
    // Log once per distinct bad value, not on every poll.
    if (problem !== this.#lastInvalid) {
      this.#logger.error(
        { key: this.#key, problem },
        'invalid state in Redis ignored; keeping the last good state',
      )
    }
    this.#lastInvalid = problem
    this.#options.onInvalidState?.(problem)
    return undefined
  }

  #apply(state: State): void {
    if (!supersedes(state, this.#current)) return
    this.#current = state
    this.#lastInvalid = undefined
    for (const listener of [...this.#listeners]) {
      try {
        listener(state)
      } catch (error) {
        this.#logger.error({ err: error }, 'a state listener failed')
      }
    }
  }

  #synced(): void {
    if (this.#outage)
      this.#logger.info({ redis: this.#where() }, `Redis at ${redisAddress(this.#client)} is reachable again`)
    this.#outage = false
    this.#reachable = true
    this.#lastSyncAt = Date.now()
  }

  /** Logged once per outage, with the reason the connection gives (ECONNREFUSED...), not once per failed command. */
  #unreachable(error: unknown): void {
    this.#reachable = false
    if (this.#outage || this.#closed) {
      this.#logger.debug({ err: error }, 'Redis still unreachable')
      return
    }
    this.#outage = true
    this.#logger.error(
      { redis: this.#where(), generation: this.#current?.generation },
      `${unreachableMessage(this.#client)}${this.#current ? '; serving the last applied state' : ''}`,
    )
  }

  /** A failed command: while Redis is unreachable, says so plainly; otherwise what failed, in context. */
  #failure(error: unknown, plainContext: string, context: string): BlueGreenError {
    const plain = plainRedisError(this.#client, error)
    if (plain !== error && plain instanceof BlueGreenError)
      return unavailable(`${plainContext}: ${plain.message}`)
    return asUnavailable(error, context)
  }

  #watchConnection(connection: Redis, role: string): void {
    connection.on('error', (error: Error) => this.#unreachable(error))
    // A closed connection is reconnected at once; only a failure to reconnect (an 'error', with its reason) or a
    // failed command is an outage worth a line.
    connection.on('close', () => {
      if (!this.#closed) this.#reachable = false
    })
    // ioredis stops reconnecting for good in some cases: with Sentinel, a failover announced while it is still
    // asking the sentinels for the master ends the connection ("Connection is closed."). A proxy must not stay
    // cut off from its store until restarted, so start it again.
    connection.on('end', () => {
      if (this.#closed) return
      this.#unreachable(new Error(`the ${role} connection ended`))
      const timer = setTimeout(() => {
        if (!this.#closed && connection.status === 'end') connection.connect().catch(() => {})
      }, RESTART_ENDED_CONNECTION_MS)
      timer.unref()
    })
    connection.on('ready', () => {
      // ioredis re-subscribes on its own only to channels the last connection had confirmed; this is idempotent.
      if (connection === this.#subscriber && this.#started) {
        this.#subscriber
          .subscribe(this.#channel)
          .catch((error: unknown) => this.#logger.debug({ err: error }, 'cannot subscribe yet'))
      }
      // Whatever was published while this connection was down is lost: read the key again.
      void this.#refresh(`${role} reconnected`)
    })
  }

  #where(): string {
    const { config } = this.#options
    if (config.sentinels && config.name) return `sentinel master ${config.name}`
    const url = new URL(config.url)
    return `${url.protocol}//${url.host}`
  }
}

/**
 * Waits until the connection is ready, starting it if it is not (the connections are created lazily). ioredis keeps
 * reconnecting in the background, so a failed wait can simply be tried again.
 */
async function connected(connection: Redis, timeoutMs: number): Promise<void> {
  if (connection.status === 'ready') return
  if (connection.status === 'wait') connection.connect().catch(() => {})
  await new Promise<void>((resolve, reject) => {
    const done = (error?: Error) => {
      clearTimeout(timer)
      connection.off('ready', onReady)
      connection.off('end', onEnd)
      if (error) reject(error)
      else resolve()
    }
    const onReady = () => done()
    const onEnd = () => done(new Error('the connection ended'))
    const timer = setTimeout(() => done(new Error(`not connected within ${timeoutMs} ms`)), timeoutMs)
    connection.once('ready', onReady)
    connection.once('end', onEnd)
  })
}

async function quit(connection: Redis): Promise<void> {
  try {
    if (connection.status === 'ready') await connection.quit()
    else connection.disconnect()
  } catch {
    connection.disconnect()
  }
}
