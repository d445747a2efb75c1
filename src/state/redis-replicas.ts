// The replica registry on Redis: each replica heartbeats its id, host, pid and applied generation into one hash,
// stamped with Redis's own clock (so clock skew between hosts cannot make a replica look dead or alive), and
// publishes an acknowledgement the moment it applies a generation, so `wait: true` answers in milliseconds.

import { hostname } from 'node:os'
import type { Redis } from 'ioredis'
import type { Logger } from '../log.ts'
import type { ReplicaInfo, ReplicaRegistry, WaitResult } from './store.ts'

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

interface ScriptedRedis extends Redis {
  bluegreenHeartbeat(key: string, id: string, entry: string, channel: string, ack: string): Promise<number>
  bluegreenReplicas(key: string, dropAfterMs: string): Promise<(string | number)[]>
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

  constructor(options: RedisReplicaRegistryOptions) {
    this.#options = options
    this.#client = options.client as ScriptedRedis
    this.#client.defineCommand('bluegreenHeartbeat', { numberOfKeys: 1, lua: HEARTBEAT })
    this.#client.defineCommand('bluegreenReplicas', { numberOfKeys: 1, lua: LIST })
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

  async list(): Promise<ReplicaInfo[]> {
    // Entries far past their liveness are dropped for good; recently silent ones are only left out.
    const reply = await this.#client.bluegreenReplicas(this.#key, String(this.#liveFor * 20))
    const now = Number(reply[0])
    const replicas: ReplicaInfo[] = []
    for (let i = 1; i < reply.length; i += 2) {
      const entry = String(reply[i + 1])
      const separator = entry.indexOf('|')
      const seen = Number(entry.slice(0, separator))
      if (now - seen > this.#liveFor) continue
      try {
        const info = JSON.parse(entry.slice(separator + 1)) as Omit<ReplicaInfo, 'lastSeen'>
        replicas.push({ ...info, lastSeen: new Date(seen).toISOString() })
      } catch {
        // Someone else's garbage in our hash; not a replica.
      }
    }
    return replicas.sort((a, b) => a.id.localeCompare(b.id))
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
        const replicas = await this.list()
        const pending = replicas.filter(
          (replica) => replica.generation < generation && !acknowledged.has(replica.id),
        )
        if (pending.length === 0 || Date.now() >= deadline) {
          return { complete: pending.length === 0, generation, replicas, pending }
        }
        // Wait for the next acknowledgement, or re-list every interval so a replica that died drops out.
        await new Promise<void>((resolve) => {
          const timer = setTimeout(
            resolve,
            Math.min(this.#options.heartbeatInterval, Math.max(deadline - Date.now(), 0)),
          )
          wake = () => {
            const stillPending = pending.some((replica) => !acknowledged.has(replica.id))
            if (stillPending) return
            clearTimeout(timer)
            resolve()
          }
        })
      }
    } finally {
      this.#waiters.delete(waiter)
    }
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

export function parseAcknowledgement(message: string): Acknowledgement | undefined {
  try {
    const value = JSON.parse(message) as Acknowledgement
    if (typeof value.id === 'string' && Number.isSafeInteger(value.generation)) return value
  } catch {
    // not ours
  }
  return undefined
}
