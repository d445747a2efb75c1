import { spawn } from 'node:child_process'
import { once } from 'node:events'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runCli } from '../helpers/cli.ts'
import { type Cluster, fresh, spawnCluster } from '../helpers/cluster.ts'
import { eventually } from '../helpers/eventually.ts'
import { CLI, startServer, type TestServer, tempDir, writeConfig } from '../helpers/servers.ts'

// `bluegreen serve --workers 2` as operators run it: a primary and two workers sharing both ports, every request
// on a fresh connection so that the primary deals them out to both workers.

interface StateAnswer {
  active: string
  generation: number
  replica: { id: string; appliedGeneration: number }
}

async function stateOf(admin: string): Promise<StateAnswer> {
  const answer = await fresh(`${admin}/state`)
  expect(answer.status).toBe(200)
  return JSON.parse(answer.body) as StateAnswer
}

/** The pid inside a replica id (`host-pid-random`). */
function pidOf(replicaId: string): number {
  return Number(/-(\d+)-[0-9a-f]+$/.exec(replicaId)?.[1])
}

/** The replica ids answering GET /state, once `count` different ones have. */
function replicasAnswering(admin: string, count: number): Promise<Set<string>> {
  const seen = new Set<string>()
  return eventually(
    async () => {
      seen.add((await stateOf(admin)).replica.id)
      return seen.size >= count && seen
    },
    { timeout: 10_000, message: `${count} workers to answer` },
  )
}

/** Sum of every series of a counter in the Prometheus text format. */
function total(metrics: string, name: string): number {
  let sum = 0
  for (const line of metrics.split('\n')) {
    if (line.startsWith(`${name}{`) || line.startsWith(`${name} `)) sum += Number(line.split(' ').at(-1))
  }
  return sum
}

function sample(metrics: string, series: string): number | undefined {
  const line = metrics.split('\n').find((entry) => entry.startsWith(`${series} `))
  return line === undefined ? undefined : Number(line.split(' ').at(-1))
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

describe('bluegreen serve --workers 2', () => {
  let blue: TestServer
  let green: TestServer
  let dir: Awaited<ReturnType<typeof tempDir>>
  let cluster: Cluster
  const workerPids = new Set<number>()
  let slowReceived = 0

  /** An upstream naming its color; /slow answers after 300 ms, for the drain. */
  const upstream = (name: string) =>
    startServer((req: IncomingMessage, res: ServerResponse) => {
      req.resume()
      const answer = () => {
        res.writeHead(200, { 'content-type': 'text/plain', 'x-upstream': name })
        res.end(name)
      }
      if (req.url !== '/slow') return answer()
      slowReceived++
      setTimeout(answer, 300)
    })

  beforeAll(async () => {
    blue = await upstream('blue')
    green = await upstream('green')
    dir = await tempDir('bluegreen-workers-')
    const file = await writeConfig(dir.path, {
      listen: '127.0.0.1:0',
      admin: { listen: '127.0.0.1:0' },
      pools: { blue: { upstreams: [blue.url] }, green: { upstreams: [green.url] } },
      state: { path: join(dir.path, 'state.json') },
      log: { access: true },
      shutdown: { grace: '2s' },
    })
    cluster = await spawnCluster(file, 2)
  })
  afterAll(async () => {
    if (cluster && cluster.child.exitCode === null && cluster.child.signalCode === null) {
      cluster.child.kill('SIGKILL')
      await cluster.exited
    }
    // Workers lose their primary's channel and exit by themselves; this is for a test that failed half-way.
    for (const pid of workerPids) if (alive(pid)) process.kill(pid, 'SIGKILL')
    await blue?.close()
    await green?.close()
    await dir?.remove()
  })

  it('both workers answer, on the admin port and on the public port', async () => {
    const replicas = await replicasAnswering(cluster.admin, 2)
    const pids = [...replicas].map(pidOf)
    for (const pid of pids) workerPids.add(pid)
    expect(new Set(pids).size).toBe(2)
    expect(pids).not.toContain(cluster.child.pid)
    // The access log says which process served each proxied request.
    for (let i = 0; i < 10; i++) expect((await fresh(`${cluster.url}/hello`)).body).toBe('blue')
    await eventually(
      () => {
        const served = cluster.lines().filter((line) => line.part === 'access' && line.path === '/hello')
        return served.length === 10 && new Set(served.map((line) => line.pid)).size === 2
      },
      { message: 'access log lines from both workers' },
    )
  })

  it('GET /metrics on any worker answers the sum over all workers', async () => {
    const before = total((await fresh(`${cluster.admin}/metrics`)).body, 'bluegreen_requests_total')
    const requests = 20
    for (let i = 0; i < requests; i++) expect((await fresh(`${cluster.url}/count`)).status).toBe(200)
    const served = cluster.lines().filter((line) => line.part === 'access' && line.path === '/count')
    expect(new Set(served.map((line) => line.pid)).size).toBe(2)
    // Asked on fresh connections, each worker adds up the same figures.
    for (let i = 0; i < 4; i++) {
      const metrics = await fresh(`${cluster.admin}/metrics`)
      expect(metrics.status).toBe(200)
      expect(metrics.headers['content-type']).toContain('text/plain')
      expect(total(metrics.body, 'bluegreen_requests_total') - before).toBe(requests)
      // One state seen by two workers: not added up.
      expect(sample(metrics.body, 'bluegreen_active_color{color="blue"}')).toBe(1)
      expect(sample(metrics.body, 'bluegreen_traffic_weight{color="blue"}')).toBe(100)
      expect(sample(metrics.body, 'bluegreen_state_store_reachable')).toBe(1)
    }
  })

  it("GET /windows on any worker adds up every worker's chart figures", async () => {
    /** Blue's requests over the charts' whole span (5 minutes: longer than this file), and how many pooled. */
    const charts = async () => {
      const answer = await fresh(`${cluster.admin}/windows`)
      expect(answer.status).toBe(200)
      const body = JSON.parse(answer.body) as {
        replicas: number
        colors: { blue: { points: { requests: number }[] } }
      }
      return {
        replicas: body.replicas,
        requests: body.colors.blue.points.reduce((sum, p) => sum + p.requests, 0),
      }
    }
    // Each worker publishes its buckets every 5 s: wait until both have, so the count before is the pooled one.
    const before = await eventually(
      async () => {
        const first = await charts()
        const second = await charts()
        return first.replicas === 2 && second.replicas === 2 && first.requests === second.requests && first
      },
      { timeout: 15_000, interval: 250, message: 'both workers to publish their charts' },
    )
    const requests = 20
    for (let i = 0; i < requests; i++) expect((await fresh(`${cluster.url}/charted`)).status).toBe(200)
    const served = cluster.lines().filter((line) => line.part === 'access' && line.path === '/charted')
    expect(new Set(served.map((line) => line.pid)).size).toBe(2)
    // Asked on fresh connections (either worker may answer), the pooled count takes in both workers' share.
    for (let i = 0; i < 3; i++) {
      await eventually(async () => (await charts()).requests - before.requests === requests, {
        timeout: 15_000,
        interval: 250,
        message: "every worker's requests in the charts",
      })
    }
  }, 60_000)

  it('a switch through one worker is seen by the very next requests to every worker', async () => {
    const switched = await fresh(`${cluster.admin}/switch`, 'POST', { to: 'green' })
    expect(switched.status, switched.body).toBe(200)
    const { generation } = JSON.parse(switched.body) as { generation: number }
    // No polling: once the switch has been answered, every worker routes by it.
    const replicas = new Set<string>()
    for (let i = 0; i < 8; i++) {
      const state = await stateOf(cluster.admin)
      replicas.add(state.replica.id)
      expect(state.replica.appliedGeneration).toBe(generation)
      expect(state.active).toBe('green')
      expect((await fresh(`${cluster.url}/after-switch`)).body).toBe('green')
    }
    expect(replicas.size).toBe(2)
    const metrics = (await fresh(`${cluster.admin}/metrics`)).body
    // Each worker applied the one switch: counted once, not once per worker.
    expect(sample(metrics, 'bluegreen_switches_total{trigger="admin"}')).toBe(1)
    expect(sample(metrics, 'bluegreen_state_generation')).toBe(generation)
    expect(sample(metrics, 'bluegreen_active_color{color="green"}')).toBe(1)
  })

  it('a killed worker is replaced, with the current state', async () => {
    const [victim, survivor] = [...(await replicasAnswering(cluster.admin, 2))]
    process.kill(pidOf(victim!), 'SIGKILL')
    // Until the primary has seen the exit, round-robin may still hand the dead worker a connection.
    await eventually(() => cluster.lines().some((line) => line.msg === 'worker died; restarting it'), {
      message: 'the primary to see the worker die',
    })
    const replicas = await eventually(
      async () => {
        const ids = await replicasAnswering(cluster.admin, 2)
        return ids.size === 2 && ids.has(survivor!) && !ids.has(victim!) ? [...ids] : undefined
      },
      { timeout: 10_000, message: 'a new worker in place of the killed one' },
    )
    const replacement = replicas.find((id) => id !== survivor)!
    workerPids.add(pidOf(replacement))
    expect(alive(pidOf(victim!))).toBe(false)
    // It serves the state the others have: green, at the switch's generation.
    for (let i = 0; i < 6; i++) {
      const state = await stateOf(cluster.admin)
      expect(state.active).toBe('green')
      expect(state.replica.appliedGeneration).toBe(state.generation)
    }
    expect((await fresh(`${cluster.admin}/metrics`)).status).toBe(200)
  })

  it('reloads on SIGHUP to the primary; a worker leaves SIGHUP to the primary: the same workers keep serving', async () => {
    const before = await replicasAnswering(cluster.admin, 2)
    const hangups = () => cluster.lines().filter((line) => line.signal === 'SIGHUP')
    cluster.child.kill('SIGHUP')
    await eventually(() => hangups().length === 1, { message: 'the primary to log SIGHUP' })
    for (const id of before) process.kill(pidOf(id), 'SIGHUP')
    await eventually(() => hangups().length === 3, { message: 'each worker to log SIGHUP' })
    const logged = hangups()
    expect(logged.filter((line) => line.part === 'cluster')).toHaveLength(1)
    expect(new Set(logged.map((line) => line.worker).filter((worker) => worker !== undefined)).size).toBe(2)
    // The primary's SIGHUP was a reload of a file that has not changed.
    await eventually(
      () =>
        cluster.lines().some((line) => line.by === 'signal:SIGHUP' && line.msg === 'config reload unchanged'),
      { message: 'the reload to be recorded by a worker' },
    )
    expect(cluster.child.exitCode).toBeNull()
    for (let i = 0; i < 6; i++) expect((await fresh(`${cluster.url}/after-hup`)).status).toBe(200)
    // Not one worker restarted: the same two answer.
    expect(await replicasAnswering(cluster.admin, 2)).toEqual(before)
    expect(
      cluster.lines().some((line) => line.msg === 'worker died; restarting it' && line.signal === 'SIGHUP'),
    ).toBe(false)
  })

  it('SIGTERM drains every worker, then the primary exits 0', async () => {
    const pids = [...(await replicasAnswering(cluster.admin, 2))].map(pidOf)
    const inFlight = [fresh(`${cluster.url}/slow`), fresh(`${cluster.url}/slow`)]
    await eventually(() => slowReceived === 2, { message: 'the slow requests to reach the upstream' })
    cluster.child.kill('SIGTERM')
    const answers = await Promise.all(inFlight)
    expect(answers.map((answer) => answer.body)).toEqual(['green', 'green'])
    const { code, signal } = await cluster.exited
    expect({ code, signal }, cluster.output()).toEqual({ code: 0, signal: null })
    for (const pid of pids) expect(alive(pid)).toBe(false)
    expect(cluster.lines().filter((line) => line.msg === 'shutdown complete')).toHaveLength(2)
  })
})

describe('bluegreen serve --workers 2 with the file store: the automatic rollback', () => {
  let blue: TestServer
  let green: TestServer
  let dir: Awaited<ReturnType<typeof tempDir>>
  let cluster: Cluster
  const minRequests = 40

  beforeAll(async () => {
    blue = await startServer((req, res) => {
      req.resume()
      res.end('blue')
    })
    green = await startServer((req, res) => {
      req.resume()
      res.writeHead(500).end('green is broken')
    })
    dir = await tempDir('bluegreen-workers-rollback-')
    const file = await writeConfig(dir.path, {
      listen: '127.0.0.1:0',
      admin: { listen: '127.0.0.1:0' },
      pools: {
        blue: { upstreams: [blue.url] },
        // Nothing but the rollback reacts to green's errors here.
        green: {
          upstreams: [green.url],
          healthCheck: { enabled: false },
          outlier: { consecutiveFailures: 0 },
        },
      },
      state: { path: join(dir.path, 'state.json') },
      rollback: { minRequests, evaluateEvery: '200ms', window: '10s' },
      log: { access: true },
    })
    cluster = await spawnCluster(file, 2)
  })
  afterAll(async () => {
    if (cluster && cluster.child.exitCode === null && cluster.child.signalCode === null) {
      cluster.child.kill('SIGTERM')
      await cluster.exited
    }
    await blue?.close()
    await green?.close()
    await dir?.remove()
  })

  it('judges the traffic of every worker: fewer than minRequests each, enough together, and it rolls back', async () => {
    const switched = await fresh(`${cluster.admin}/switch`, 'POST', { to: 'green', force: true })
    expect(switched.status, switched.body).toBe(200)
    const { generation } = JSON.parse(switched.body) as { generation: number }
    const requests = minRequests + 10
    for (let sent = 0; sent < requests; sent++) {
      const answer = await fresh(`${cluster.url}/broken`)
      // Once the rollback is in, the rest are blue's.
      if (answer.status === 200) break
    }
    const rolledBack = await eventually(
      async () => {
        const state = JSON.parse((await fresh(`${cluster.admin}/state`)).body)
        return state.generation > generation && state
      },
      { timeout: 5_000, message: 'the automatic rollback' },
    )
    expect(rolledBack).toMatchObject({ active: 'blue', trigger: 'rollback', generation: generation + 1 })
    // Neither worker saw enough on its own: only the pooled figures could have reached minRequests.
    const byWorker = new Map<unknown, number>()
    for (const line of cluster.lines()) {
      if (line.part === 'access' && line.color === 'green')
        byWorker.set(line.worker, (byWorker.get(line.worker) ?? 0) + 1)
    }
    expect(byWorker.size, JSON.stringify([...byWorker])).toBe(2)
    for (const [worker, count] of byWorker) expect(count, `worker ${worker}`).toBeLessThan(minRequests)
  })
})

describe('bluegreen serve --workers, bad usage', () => {
  it('exits 2 for a worker count that is not one', async () => {
    for (const value of ['0', 'two', '1.5']) {
      const child = spawn(process.execPath, [CLI, 'serve', '--config', 'x.json', '--workers', value], {
        stdio: ['ignore', 'pipe', 'pipe'],
      })
      let stderr = ''
      child.stderr.on('data', (chunk) => {
        stderr += chunk
      })
      const [code] = (await once(child, 'close')) as [number | null]
      expect(code, stderr).toBe(2)
      expect(stderr).toMatch(/^bluegreen: --workers takes a whole number/)
    }
  })
})

describe('bluegreen serve --workers 2 when no worker can start', () => {
  it('stops the others and exits 1 instead of restarting them (the public port is taken)', async () => {
    const taken = await startServer((_req, res) => res.end())
    const dir = await tempDir('bluegreen-workers-')
    try {
      const file = await writeConfig(dir.path, {
        listen: `127.0.0.1:${taken.port}`,
        admin: { listen: '127.0.0.1:0' },
        pools: { blue: { upstreams: [taken.url] }, green: { upstreams: [] } },
        state: { path: join(dir.path, 'state.json') },
      })
      const result = await runCli(['serve', '--config', file, '--workers', '2'])
      const lines = result.stdout
        .split('\n')
        .filter((line) => line.startsWith('{'))
        .map((line) => JSON.parse(line) as { msg: string; failed?: boolean })
      const messages = lines.map((line) => line.msg)
      expect(result.code, result.stdout + result.stderr).toBe(1)
      expect(messages).toContain('a worker failed to start; stopping')
      expect(messages).not.toContain('worker died; restarting it')
      expect(lines).toContainEqual(expect.objectContaining({ msg: 'every worker has exited', failed: true }))
    } finally {
      await taken.close()
      await dir.remove()
    }
  })
})
