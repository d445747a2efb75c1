// The replica registry on Redis: each replica heartbeats its id, host, pid and applied generation into one hash,
// stamped with Redis's own clock (so clock skew between hosts cannot make a replica look dead or alive), and
// publishes an acknowledgement the moment it applies a generation, so `wait: true` answers in milliseconds.
// A replica that stops heartbeating stays in the hash, listed as missing, until it comes back, an operator
// forgets it, or it ages out: one cut off from Redis still serves whatever it last applied.

import { hostname } from 'node:os'
import type { Redis } from 'ioredis'
import type { Logger } from '../log.ts'
import { onRedis } from './redis-connection.ts'
import type { ReplicaDrain } from './standby.ts'
import type { ForgetResult, ReplicaInfo, ReplicaListing, ReplicaRegistry, WaitResult } from './store.ts'

// KEYS[1] the registry hash. ARGV: replica id, its JSON, ack channel ('' for a plain heartbeat), ack message.
const HEARTBEAT = `
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], now .. '|' .. ARGV[2])
if ARGV[3] ~= '' then redis.call('PUBLISH', ARGV[3], ARGV[4]) end
return now
`

// KEYS[1] the registry hash. ARGV: how old (ms) an entry may be before it is dropped. Returns {now, id, entry, ...}.
const LIST = `
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local entries = redis.call('HGETALL', KEYS[1])
local result = {now}
for i = 1, #entries, 2 do
  local seen = tonumber(string.match(entries[i + 1], '^(%d+)|'))
  if not seen or now - seen > tonumber(ARGV[1]) then
    redis.call('HDEL', KEYS[1], entries[i])
  else
    table.insert(result, entries[i])
    table.insert(result, entries[i + 1])
  end
end
return result
`

// KEYS[1] the registry hash. ARGV: replica id, how old (ms) its entry must be to count as missing.
// Returns {1, entry} when forgotten, {-1, entry} when the replica is live (left alone), {0} when there is none.
const FORGET = `
local entry = redis.call('HGET', KEYS[1], ARGV[1])
if not entry then return {0} end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local seen = tonumber(string.match(entry, '^(%d+)|'))
if seen and now - seen <= tonumber(ARGV[2]) then return {-1, entry} end
redis.call('HDEL', KEYS[1], ARGV[1])
return {1, entry}
`

interface ScriptedRedis extends Redis {
  bluegreenHeartbeat(key: string, id: string, entry: string, channel: string, ack: string): Promise<number>
  bluegreenReplicas(key: string, dropAfterMs: string): Promise<(string | number)[]>
  bluegreenForget(key: string, id: string, liveForMs: string): Promise<[number, string?]>
}

/** What a replica publishes when it has applied a generation; appliedAt is a high-resolution epoch time in ms. */
export interface Acknowledgement {
  id: string
  generation: number
  appliedAt: number
}

export interface RedisReplicaRegistryOptions {
  client: Redis
  subscriber: Redis
  key: string
  replicaId: string
  heartbeatInterval: number
  /** How long a missing replica stays listed before it is dropped from the registry. */
  forgetMissingAfter: number
  logger: Logger
}

export function registryKey(stateKey: string): string {
  return `${stateKey}:replicas`
}

export function acknowledgementChannel(stateKey: string): string {
  return `${stateKey}:applied`
}

export class RedisReplicaRegistry implements ReplicaRegistry {
  readonly #options: RedisReplicaRegistryOptions
  readonly #client: ScriptedRedis
  readonly #key: string
  readonly #channel: string
  readonly #host = hostname()
  readonly #waiters = new Set<(ack: Acknowledgement) => void>()
  readonly #timer: NodeJS.Timeout
  #generation = -1
  #drain: ReplicaDrain | undefined

  constructor(options: RedisReplicaRegistryOptions) {
    this.#options = options
    this.#client = options.client as ScriptedRedis
    this.#client.defineCommand('bluegreenHeartbeat', { numberOfKeys: 1, lua: HEARTBEAT })
    this.#client.defineCommand('bluegreenReplicas', { numberOfKeys: 1, lua: LIST })
    this.#client.defineCommand('bluegreenForget', { numberOfKeys: 1, lua: FORGET })
    this.#key = registryKey(options.key)
    this.#channel = acknowledgementChannel(options.key)
    options.subscriber.on('message', (channel: string, message: string) => {
      if (channel !== this.#channel || this.#waiters.size === 0) return
      const ack = parseAcknowledgement(message)
      if (ack) for (const waiter of this.#waiters) waiter(ack)
    })
    // ioredis re-subscribes after a reconnect only to channels a server has confirmed, and the connection is lazy,
    // so a SUBSCRIBE sent now would be refused and never retried: subscribe on every ready instead (idempotent).
    const subscribe = () => {
      options.subscriber
        .subscribe(this.#channel)
        .catch((error: unknown) =>
          options.logger.debug({ err: error }, 'cannot subscribe to acknowledgements yet'),
        )
    }
    options.subscriber.on('ready', subscribe)
    if (options.subscriber.status === 'ready') subscribe()
    this.#timer = setInterval(() => this.#beat(undefined), options.heartbeatInterval)
    this.#timer.unref()
  }

  /** A replica counts as live while its last heartbeat is at most three intervals old. */
  get #liveFor(): number {
    return this.#options.heartbeatInterval * 3
  }

  report(generation: number): void {
    this.#generation = generation
    const ack: Acknowledgement = {
      id: this.#options.replicaId,
      generation,
      appliedAt: performance.timeOrigin + performance.now(),
    }
    this.#beat(ack)
  }

  reportDrain(drain: ReplicaDrain): void {
    this.#drain = drain
    this.#beat(undefined)
  }

  async list(): Promise<ReplicaListing> {
    const reply = await onRedis(this.#client, () =>
      this.#client.bluegreenReplicas(this.#key, String(this.#options.forgetMissingAfter)),
    )
    const now = Number(reply[0])
    const live: ReplicaInfo[] = []
    const silent: ReplicaInfo[] = []
    for (let i = 1; i < reply.length; i += 2) {
      const entry = parseEntry(String(reply[i + 1]))
      if (entry) (now - entry.seen > this.#liveFor ? silent : live).push(entry.replica)
    }
    // A restarted container comes back under its host name and process id (1): two processes cannot hold one pid
    // on one host at once, so a silent entry with the same pair as a live one is its dead predecessor.
    const replaced = silent.filter((old) =>
      live.some((next) => next.host === old.host && next.pid === old.pid),
    )
    if (replaced.length > 0) {
      this.#client
        .hdel(this.#key, ...replaced.map((replica) => replica.id))
        .catch((error: unknown) =>
          this.#options.logger.debug({ err: error }, 'cannot drop a replaced replica'),
        )
    }
    return {
      live: byId(live),
      missing: byId(silent.filter((replica) => !replaced.includes(replica))),
    }
  }

  async waitFor(generation: number, timeoutMs: number): Promise<WaitResult> {
    const deadline = Date.now() + timeoutMs
    const acknowledged = new Set<string>()
    let wake: (() => void) | undefined
    const waiter = (ack: Acknowledgement) => {
      if (ack.generation >= generation) acknowledged.add(ack.id)
      wake?.()
    }
    this.#waiters.add(waiter)
    try {
      for (;;) {
        const listing = await this.list()
        const pending = listing.live.filter(
          (replica) => replica.generation < generation && !acknowledged.has(replica.id),
        )
        // A missing replica may still serve an older state: the change is not confirmed while one is silent.
        const missing = listing.missing.filter((replica) => !acknowledged.has(replica.id))
        const outstanding = [...pending, ...missing]
        if (outstanding.length === 0 || Date.now() >= deadline) {
          return { complete: outstanding.length === 0, generation, replicas: listing.live, pending, missing }
        }
        // Wait for the next acknowledgement, or re-list every interval so a replica that died or came back is seen.
        await new Promise<void>((resolve) => {
          const timer = setTimeout(
            resolve,
            Math.min(this.#options.heartbeatInterval, Math.max(deadline - Date.now(), 0)),
          )
          wake = () => {
            if (outstanding.some((replica) => !acknowledged.has(replica.id))) return
            clearTimeout(timer)
            resolve()
          }
        })
      }
    } finally {
      this.#waiters.delete(waiter)
    }
  }

  async forget(id: string): Promise<ForgetResult> {
    const [outcome, entry] = await onRedis(this.#client, () =>
      this.#client.bluegreenForget(this.#key, id, String(this.#liveFor)),
    )
    const replica = entry === undefined ? undefined : parseEntry(entry)?.replica
    if (outcome === 0 || !replica) return { result: 'unknown' }
    return { result: outcome === 1 ? 'forgotten' : 'live', replica }
  }

  async close(): Promise<void> {
    clearInterval(this.#timer)
    try {
      if (this.#client.status === 'ready') await this.#client.hdel(this.#key, this.#options.replicaId)
    } catch {
      // Gone anyway once its heartbeats stop.
    }
  }

  #beat(ack: Acknowledgement | undefined): void {
    if (this.#generation < 0 || this.#client.status !== 'ready') return
    const entry = JSON.stringify({
      id: this.#options.replicaId,
      host: this.#host,
      pid: process.pid,
      generation: this.#generation,
      ...(this.#drain === undefined ? {} : { drain: this.#drain }),
    })
    this.#client
      .bluegreenHeartbeat(
        this.#key,
        this.#options.replicaId,
        entry,
        ack ? this.#channel : '',
        ack ? JSON.stringify(ack) : '',
      )
      .catch((error: unknown) => this.#options.logger.debug({ err: error }, 'heartbeat failed'))
  }
}

/** A registry entry, "<seen ms>|<json>"; anything else in the hash is not a replica. */
function parseEntry(entry: string): { seen: number; replica: ReplicaInfo } | undefined {
  const separator = entry.indexOf('|')
  const seen = Number(entry.slice(0, separator))
  if (separator === -1 || !Number.isSafeInteger(seen)) return undefined
  try {
    const info = JSON.parse(entry.slice(separator + 1)) as Omit<ReplicaInfo, 'lastSeen'>
    if (typeof info.id !== 'string') return undefined
    return { seen, replica: { ...info, lastSeen: new Date(seen).toISOString() } }
  } catch {
    return undefined
  }
}

function byId(replicas: ReplicaInfo[]): ReplicaInfo[] {
  return replicas.sort((a, b) => a.id.localeCompare(b.id))
}

export function parseAcknowledgement(message: string): Acknowledgement | undefined {
  try {
    const value = JSON.parse(message) as Acknowledgement
    if (typeof value.id === 'string' && Number.isSafeInteger(value.generation)) return value
  } catch {
    // not ours
  }
  return undefined
}
