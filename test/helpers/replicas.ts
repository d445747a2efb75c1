// Proxy replicas as child processes sharing one Redis state, and the small HTTP helpers the Redis tests use.

import { Agent, request } from 'node:http'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { adminGet } from './admin.ts'
import { eventually } from './eventually.ts'
import { type ChildProxy, spawnProxy, startServer, tempDir, writeConfig } from './servers.ts'

export interface ReplicaOptions {
  /**
   * state.redis, as the config file says it. Unless it names a lastStateFile, the replica keeps its local copy of
   * the state in its own temp dir (removed by close()), never in the default shared by every proxy on the host.
   */
  redis: Record<string, unknown>
  blue: string
  green: string
  /** More keys of the state section beside store and redis (maxStaleness, initial). */
  state?: Record<string, unknown>
  /** admin.waitTimeout for `wait: true`. */
  waitTimeout?: string
  /** More top-level config sections (rollback, pools with health checks, ...), merged over the defaults here. */
  extra?: Record<string, unknown>
}

export interface Replica extends ChildProxy {
  /** Stops the process (SIGTERM, then SIGKILL if it does not exit in time) and removes its config. */
  close(): Promise<void>
}

/** `bluegreen serve` with the Redis store, on free loopback ports; it may or may not have loaded its state yet. */
export async function startReplica(options: ReplicaOptions): Promise<Replica> {
  const dir = await tempDir('bluegreen-replica-')
  const file = await writeConfig(dir.path, {
    listen: '127.0.0.1:0',
    admin: { listen: '127.0.0.1:0', waitTimeout: options.waitTimeout ?? '3s' },
    pools: { blue: { upstreams: [options.blue] }, green: { upstreams: [options.green] } },
    state: {
      store: 'redis',
      redis: { lastStateFile: join(dir.path, 'last-state.json'), ...options.redis },
      ...options.state,
    },
    log: { level: 'info' },
    shutdown: { grace: '1s' },
    ...options.extra,
  })
  let proxy: ChildProxy
  try {
    proxy = await spawnProxy(file)
  } catch (error) {
    await dir.remove()
    throw error
  }
  return {
    ...proxy,
    close: async () => {
      const timer = setTimeout(() => proxy.child.kill('SIGKILL'), 5_000)
      await proxy.stop()
      clearTimeout(timer)
      await dir.remove()
    },
  }
}

export async function startReplicas(count: number, options: ReplicaOptions): Promise<Replica[]> {
  const replicas = await Promise.all(Array.from({ length: count }, () => startReplica(options)))
  await Promise.all(replicas.map((replica) => waitReady(replica)))
  return replicas
}

/** Replicas sharing one Redis whose green release fails, and the upstreams they route to. */
export interface FailingGreenFleet {
  replicas: Replica[]
  /** Closes the replicas, then the upstreams. */
  close(): Promise<void>
}

/**
 * Replicas on Redis (`redis`: state.redis) in front of a blue that answers 200 and a green that answers 500 to every
 * request but its health checks, so a switch to green is rolled back. The guard needs 30 requests in its 5 s window:
 * with three replicas each seeing 10, only the pooled figures can decide. `extra`: more config sections.
 */
export async function startFailingGreenFleet(
  count: number,
  redis: Record<string, unknown>,
  extra: Record<string, unknown> = {},
): Promise<FailingGreenFleet> {
  const upstream = (color: string, status: number) =>
    startServer((req, res) => {
      res.writeHead(req.url === '/health' ? 200 : status)
      res.end(color)
    })
  const blue = await upstream('blue', 200)
  const green = await upstream('green', 500)
  const replicas = await startReplicas(count, {
    redis: { pollInterval: '500ms', ...redis },
    blue: blue.url,
    green: green.url,
    extra: {
      pools: {
        blue: { upstreams: [blue.url], healthCheck: { path: '/health' } },
        green: { upstreams: [green.url], healthCheck: { path: '/health' } },
      },
      rollback: { window: '5s', evaluateEvery: '100ms', minRequests: 30, maxErrorRatio: 0.1, watch: '30s' },
      ...extra,
    },
  }).catch(async (error: unknown) => {
    await Promise.allSettled([blue.close(), green.close()])
    throw error
  })
  return {
    replicas,
    close: async () => {
      closeConnections()
      await Promise.all(replicas.map((replica) => replica.close()))
      await Promise.allSettled([blue.close(), green.close()])
    },
  }
}

export async function waitReady(replica: ChildProxy, timeout = 10_000): Promise<void> {
  await eventually(async () => (await adminGet(replica.admin, '/readyz')).status === 200, {
    timeout,
    interval: 20,
    message: `${replica.admin}/readyz to answer 200\n${replica.output()}`,
  })
}

// One keep-alive agent for the tests' requests, so a latency figure is the proxy's, not a TCP handshake's.
const agent = new Agent({ keepAlive: true, maxSockets: 8 })

export interface Answer {
  status: number
  color: string | undefined
  body: string
  ms: number
}

/** A GET through a proxy: status, the x-bluegreen-color header, the body and how long it took. */
export function get(url: string): Promise<Answer> {
  const started = performance.now()
  return new Promise((resolve, reject) => {
    const req = request(url, { agent, timeout: 5_000 }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (chunk: Buffer) => chunks.push(chunk))
      res.on('end', () => {
        const color = res.headers['x-bluegreen-color']
        resolve({
          status: res.statusCode ?? 0,
          color: typeof color === 'string' ? color : undefined,
          body: Buffer.concat(chunks).toString(),
          ms: performance.now() - started,
        })
      })
      res.on('error', reject)
    })
    req.on('timeout', () => req.destroy(new Error(`GET ${url} timed out`)))
    req.on('error', reject)
    req.end()
  })
}

/** GET /state: the state and what this replica has applied. */
export interface ReplicaState {
  active: string
  generation: number
  replica: {
    id: string
    appliedGeneration: number
    store: { reachable: boolean; lastSyncAt: string | null; staleSeconds: number | null }
  }
}

export async function stateOf(replica: ChildProxy): Promise<ReplicaState> {
  const { status, body } = await adminGet<ReplicaState>(replica.admin, '/state')
  if (status !== 200) throw new Error(`GET /state answered ${status}: ${JSON.stringify(body)}`)
  return body
}

/** The value of an unlabelled metric in a replica's /metrics. */
export async function metric(replica: ChildProxy, name: string): Promise<number> {
  const { body } = await get(`${replica.admin}/metrics`)
  const line = body.split('\n').find((entry) => entry.startsWith(`${name} `))
  if (!line) throw new Error(`no ${name} in /metrics`)
  return Number(line.slice(name.length + 1))
}

export function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? Number.NaN
}

/** A plain client straight to a Redis, for the test to read or tamper with the state behind the proxies' backs. */
export async function withRedis<T>(port: number, use: (client: Redis) => Promise<T>): Promise<T> {
  const client = new Redis({
    port,
    host: '127.0.0.1',
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  })
  try {
    await client.connect()
    return await use(client)
  } finally {
    client.disconnect()
  }
}

/** Closes the test's keep-alive connections (afterAll). */
export function closeConnections(): void {
  agent.destroy()
}
