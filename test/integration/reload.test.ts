import { writeFile } from 'node:fs/promises'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { adminGet, adminPost, callAdmin, errorCode } from '../helpers/admin.ts'
import { killRunningClis, runCli, spawnCollecting } from '../helpers/cli.ts'
import { type Cluster, fresh, spawnCluster } from '../helpers/cluster.ts'
import { eventually } from '../helpers/eventually.ts'
import { scrapeMetrics } from '../helpers/metrics.ts'
import { startReceiver } from '../helpers/receiver.ts'
import {
  type ChildProxy,
  CLI,
  spawnProxy,
  startServer,
  type TestServer,
  tempDir,
  writeConfig,
} from '../helpers/servers.ts'
import { steadyTraffic } from '../helpers/traffic.ts'

// Reloading the config of a running `bluegreen serve` (README "Reloading the configuration"): real upstreams, the
// proxy as a child process, POST /reload, SIGHUP and the CLI.

/** An upstream that counts the requests it gets; /slow is held until release() (one at a time). */
interface CountingUpstream extends TestServer {
  name: string
  requests: number
  slowArrived: boolean
  release(): void
}

async function countingUpstream(name: string): Promise<CountingUpstream> {
  let releaseSlow: (() => void) | undefined
  const upstream = {} as CountingUpstream
  const server = await startServer((req: IncomingMessage, res: ServerResponse) => {
    req.resume()
    upstream.requests++
    const answer = () => {
      res.writeHead(200, { 'content-type': 'text/plain', 'x-upstream': name })
      res.end(name)
    }
    if (req.url !== '/slow') return answer()
    upstream.slowArrived = true
    releaseSlow = answer
  })
  return Object.assign(upstream, server, {
    name,
    requests: 0,
    slowArrived: false,
    release: () => releaseSlow?.(),
  })
}

interface ReloadAnswer {
  result: string
  changed: string[]
  workers?: { applied: number[]; failed: unknown[] }
}

interface ReloadError {
  error: {
    code: string
    message: string
    details: { needsRestart?: string[]; problems?: { path: string; message: string }[] }
  }
}

describe('reloading the config of bluegreen serve', () => {
  let a: CountingUpstream
  let b: CountingUpstream
  let green: CountingUpstream
  let dir: Awaited<ReturnType<typeof tempDir>>
  let file: string
  let proxy: ChildProxy
  /** The config as the tests change it, written whole each time. */
  let config: Record<string, unknown>

  const write = (changes: Record<string, unknown>) => {
    config = { ...config, ...changes }
    return writeConfig(dir.path, config, 'config.yaml')
  }
  const pools = (blue: string[]) => ({
    blue: { upstreams: blue },
    green: { upstreams: [green.url] },
  })
  const reload = (token?: string) => adminPost<ReloadAnswer & ReloadError>(proxy.admin, '/reload', {}, token)

  beforeAll(async () => {
    a = await countingUpstream('a')
    b = await countingUpstream('b')
    green = await countingUpstream('green')
    dir = await tempDir('bluegreen-reload-')
    config = {
      listen: '127.0.0.1:0',
      admin: { listen: '127.0.0.1:0', token: 'old-token' },
      pools: pools([a.url]),
      state: { path: join(dir.path, 'state.json') },
      shutdown: { grace: '5s' },
    }
    file = await write({})
    proxy = await spawnProxy(file)
  })
  afterAll(async () => {
    killRunningClis()
    await proxy?.stop('SIGKILL')
    for (const server of [a, b, green]) await server?.close()
    await dir?.remove()
  })

  it('adds an upstream and removes one under steady load: no request fails, the removed one drains', async () => {
    const traffic = steadyTraffic(proxy.url, { everyMs: 5 })
    await eventually(() => traffic.answers.length >= 20, { timeout: 10_000, message: 'traffic to flow' })
    // A request in flight on the upstream about to be removed, held until the end.
    const slow = fetch(`${proxy.url}/slow`)
    await eventually(() => a.slowArrived, { message: 'the slow request to reach a' })
    await write({ pools: pools([b.url]) })

    const answer = await reload('old-token')
    expect(answer.status).toBe(200)
    expect(answer.body).toMatchObject({ result: 'applied', changed: ['pools.blue.upstreams'] })
    // The new upstream takes the traffic; the removed one gets nothing new once what was in flight has landed.
    await eventually(() => b.requests >= 20, { timeout: 10_000, message: 'the new upstream to get traffic' })
    const aAfter = a.requests
    const bBefore = b.requests
    await eventually(() => b.requests >= bBefore + 50, { timeout: 10_000, message: 'more traffic' })
    expect(a.requests).toBe(aAfter)
    // Still in flight, so not yet closed: the drain waits for it.
    expect(proxy.output()).not.toContain('removed upstream drained')
    a.release()
    const slowAnswer = await slow
    expect(slowAnswer.status).toBe(200)
    expect(await slowAnswer.text()).toBe('a')
    await eventually(() => proxy.output().includes('removed upstream drained'), {
      message: 'the removed upstream to be closed',
    })

    const answers = await traffic.stop()
    expect(answers.length).toBeGreaterThan(70)
    expect(answers.filter((one) => one.status !== 200)).toEqual([])
    const state = await adminGet<{ replica: { health: { blue: { url: string }[] } } }>(proxy.admin, '/state')
    expect(state.body.replica.health.blue.map((upstream) => upstream.url)).toEqual([b.url])
  })

  it('leaves the running config untouched for a file that does not parse, and says where', async () => {
    await writeFile(file, 'pools: [blue\nlisten: 1\n')
    const answer = await reload('old-token')
    expect(answer.status).toBe(400)
    expect(errorCode(answer)).toBe('BG_CONFIG_UNREADABLE')
    expect(answer.body.error.message).toContain('the running config is unchanged')
    expect(answer.body.error.details.problems?.[0]?.message).toContain('config.yaml:')
    expect((await fetch(`${proxy.url}/`)).headers.get('x-upstream')).toBe('b')
  })

  it("says where a file does not parse, but never quotes the line: it may hold a token or a webhook's URL", async () => {
    await writeFile(file, 'admin:\n  token: hunter6-token: x\n')
    const answer = await reload('old-token')
    expect(answer.status).toBe(400)
    expect(errorCode(answer)).toBe('BG_CONFIG_UNREADABLE')
    expect(answer.body.error.details.problems?.[0]?.message).toMatch(/config\.yaml:2:\d+: Nested mappings/)
    const events = await adminGet<{ events: unknown[] }>(proxy.admin, '/events?limit=5')
    expect(JSON.stringify(events.body.events[0])).toContain('BG_CONFIG_UNREADABLE')
    expect(JSON.stringify(answer.body)).not.toContain('hunter6')
    expect(JSON.stringify(events.body)).not.toContain('hunter6')
    expect(proxy.output()).not.toContain('hunter6')
  })

  it('lists every problem of an invalid file with its key path, and applies none of it', async () => {
    await write({
      pools: { blue: { upstreams: [a.url], balance: 'fastest' }, green: { upstreams: ['ftp://nowhere'] } },
      proxy: { retries: { max: -1 } },
    })
    const answer = await reload('old-token')
    expect(answer.status).toBe(400)
    expect(errorCode(answer)).toBe('BG_CONFIG_INVALID')
    const paths = answer.body.error.details.problems?.map((problem) => problem.path)
    expect(paths).toEqual(
      expect.arrayContaining(['pools.blue.balance', 'pools.green.upstreams[0]', 'proxy.retries.max']),
    )
    // The valid part (blue back on a) was not applied either.
    for (let i = 0; i < 5; i++) expect((await fetch(`${proxy.url}/`)).headers.get('x-upstream')).toBe('b')
    config = { ...config, proxy: undefined }
  })

  it('refuses a change that needs a restart, naming the keys, and applies nothing of the file', async () => {
    await write({
      listen: '127.0.0.1:1',
      state: { path: join(dir.path, 'other.json') },
      pools: pools([a.url, b.url]),
    })
    const answer = await reload('old-token')
    expect(answer.status).toBe(422)
    expect(errorCode(answer)).toBe('BG_RELOAD_REFUSED')
    expect(answer.body.error.details.needsRestart).toEqual(['listen', 'state.path'])
    expect(answer.body.error.message).toContain('listen, state.path need a restart')
    for (let i = 0; i < 5; i++) expect((await fetch(`${proxy.url}/`)).headers.get('x-upstream')).toBe('b')
    await write({
      listen: '127.0.0.1:0',
      state: { path: join(dir.path, 'state.json') },
      pools: pools([b.url]),
    })
    expect((await reload('old-token')).body.result).toBe('unchanged')
  })

  it('reloads on SIGHUP', async () => {
    await write({ pools: pools([a.url]) })
    proxy.child.kill('SIGHUP')
    await eventually(async () => (await fetch(`${proxy.url}/`)).headers.get('x-upstream') === 'a', {
      timeout: 10_000,
      message: 'SIGHUP to move blue to a',
    })
    expect(proxy.output()).toMatch(/"by":"signal:SIGHUP".*"msg":"config reload applied"/)
    expect(proxy.child.exitCode).toBeNull()
  })

  it('rotates the admin token: the old one is refused after the reload, the new one accepted', async () => {
    await write({ admin: { listen: '127.0.0.1:0', token: 'new-token' } })
    expect((await reload('old-token')).status).toBe(200)
    const withOld = await adminPost(proxy.admin, '/switch', { to: 'green' }, 'old-token')
    expect(withOld.status).toBe(401)
    const withNew = await adminPost(proxy.admin, '/switch', { to: 'green' }, 'new-token')
    expect(withNew.status).toBe(200)
    // A reload is a mutating call: without the token it is refused, and audited.
    const anonymous = await reload()
    expect(anonymous.status).toBe(401)
    type Events = { events: { action: string; actor: string; result: string; keys?: string[] }[] }
    // The trail is written after the answer.
    const reloads = await eventually(async () => {
      const events = await adminGet<Events>(proxy.admin, '/events?limit=20')
      const found = events.body.events.filter((event) => event.action === 'reload')
      return found[0]?.result === 'refused' && found
    })
    expect(reloads[0]).toMatchObject({ result: 'refused', actor: '127.0.0.1' })
    expect(reloads[1]).toMatchObject({ result: 'accepted', actor: 'token:admin', keys: ['admin.tokens'] })
  })

  it('bluegreen reload exits 0 when applied or unchanged, 1 when refused, 2 on bad usage', async () => {
    const cli = (...args: string[]) =>
      runCli(['reload', '--admin', proxy.admin, '--token', 'new-token', ...args])
    await write({ pools: pools([a.url, b.url]) })
    const applied = await cli()
    expect(applied.code, applied.stderr).toBe(0)
    expect(applied.stdout).toContain('reloaded; changed pools.blue.upstreams')
    const unchanged = await cli()
    expect(unchanged.code).toBe(0)
    expect(unchanged.stdout).toContain('nothing changed')
    await write({ admin: { listen: '127.0.0.1:1', token: 'new-token' } })
    const refused = await cli()
    expect(refused.code).toBe(1)
    expect(refused.stderr).toContain('admin.listen needs a restart')
    expect(refused.stderr).toContain('BG_RELOAD_REFUSED')
    expect((await cli('now')).code).toBe(2)
    await write({ admin: { listen: '127.0.0.1:0', token: 'new-token' } })
  })

  it('applies new upstream timeouts to the next request (the upstream connection pools are made anew)', async () => {
    const slowAnswer = async () => {
      const answer = await fetch(`${proxy.url}/slow`)
      return { status: answer.status, text: await answer.text() }
    }
    await write({ proxy: { timeouts: { header: '300ms' }, retries: { max: 0 } } })
    const answer = await reload('new-token')
    expect(answer.body.changed).toEqual(['proxy.retries.max', 'proxy.timeouts.header'])
    const timedOut = await slowAnswer()
    expect(timedOut.status).toBe(504)
    expect(timedOut.text).toContain('BG_UPSTREAM_TIMEOUT')
    config = { ...config, proxy: undefined }
    await write({})
    expect((await reload('new-token')).body.result).toBe('applied')
  })

  it('counts every reload by result in bluegreen_config_reloads_total', async () => {
    const metrics = await scrapeMetrics(proxy.admin)
    // applied: the drain test, SIGHUP, the token rotation, the CLI, the timeouts twice; one more each way above.
    expect(metrics.get('bluegreen_config_reloads_total{result="applied"}')).toBe(6)
    // invalid: the two files that do not parse, and the file with problems.
    expect(metrics.get('bluegreen_config_reloads_total{result="invalid"}')).toBe(3)
    expect(metrics.get('bluegreen_config_reloads_total{result="refused"}')).toBe(2)
    expect(metrics.get('bluegreen_config_reloads_total{result="unchanged"}')).toBe(2)
  })

  it('publishes each reload as a live event', async () => {
    const controller = new AbortController()
    const stream = await fetch(`${proxy.admin}/events/stream`, { signal: controller.signal })
    const reader = stream.body!.getReader()
    await write({ pools: pools([b.url]) })
    await reload('new-token')
    let text = ''
    await eventually(
      async () => {
        text += new TextDecoder().decode((await reader.read()).value)
        return text.includes('event: reload')
      },
      { message: 'a reload event' },
    )
    controller.abort()
    expect(text).toMatch(/event: reload\ndata: \{"result":"applied".*"changed":\["pools.blue.upstreams"\]/)
  })
})

describe('bluegreen demo, which has no config file', () => {
  it('refuses POST /reload and SIGHUP clearly, and keeps serving', async () => {
    const dir = await tempDir('bluegreen-reload-demo-')
    const demo = spawnCollecting(process.execPath, [CLI, 'demo', '--port', '0', '--admin-port', '0'], {
      cwd: dir.path,
    })
    try {
      const admin = await eventually(() => /admin {3}(http:\/\/\S+)/.exec(demo.output())?.[1], {
        timeout: 15_000,
        message: 'the demo to start',
      })
      const answer = await callAdmin<ReloadError>(admin, '/reload', { method: 'POST', body: {} })
      expect(answer.status).toBe(422)
      expect(errorCode(answer)).toBe('BG_RELOAD_REFUSED')
      expect(answer.body.error.message).toContain('started without a config file')
      demo.child.kill('SIGHUP')
      await eventually(() => /"by":"signal:SIGHUP".*config reload refused/.test(demo.output()), {
        message: 'the SIGHUP reload to be refused',
      })
      expect((await adminGet(admin, '/healthz')).status).toBe(200)
    } finally {
      demo.child.kill('SIGKILL')
      await demo.exited
      await dir.remove()
    }
  })
})

describe('reloading bluegreen serve --workers 2', () => {
  let a: CountingUpstream
  let b: CountingUpstream
  let dir: Awaited<ReturnType<typeof tempDir>>
  let file: string
  let cluster: Cluster
  let admin: string
  let url: string
  const write = (blue: string[], extra: Record<string, unknown> = {}) =>
    writeConfig(
      dir.path,
      {
        listen: '127.0.0.1:0',
        admin: { listen: '127.0.0.1:0' },
        pools: { blue: { upstreams: blue }, green: { upstreams: [a.url] } },
        state: { path: join(dir.path, 'state.json') },
        ...extra,
      },
      'config.json',
    )
  /** Per worker (by replica id), the blue upstreams it routes to, once `count` workers have answered. */
  const blueOfEachWorker = async (count = 2) => {
    const seen = new Map<string, string[]>()
    return eventually(
      async () => {
        const answer = await fresh(`${admin}/state`)
        const state = JSON.parse(answer.body) as {
          replica: { id: string; health: { blue: { url: string }[] } }
        }
        seen.set(
          state.replica.id,
          state.replica.health.blue.map((upstream) => upstream.url),
        )
        return seen.size >= count && seen
      },
      { timeout: 15_000, message: `${count} workers to answer` },
    )
  }

  beforeAll(async () => {
    a = await countingUpstream('a')
    b = await countingUpstream('b')
    dir = await tempDir('bluegreen-reload-workers-')
    file = await write([a.url])
    cluster = await spawnCluster(file, 2)
    ;({ admin, url } = cluster)
  })
  afterAll(async () => {
    if (cluster && cluster.child.exitCode === null) {
      cluster.child.kill('SIGKILL')
      await cluster.exited
    }
    await a?.close()
    await b?.close()
    await dir?.remove()
  })

  it('validates once in the primary and answers once both workers applied it; a worker forwards POST /reload', async () => {
    await write([b.url])
    const answer = await adminPost<ReloadAnswer>(admin, '/reload', {})
    expect(answer.status).toBe(200)
    expect(answer.body.result).toBe('applied')
    expect(answer.body.workers?.applied).toHaveLength(2)
    expect(answer.body.workers?.failed).toEqual([])
    for (const blue of (await blueOfEachWorker()).values()) expect(blue).toEqual([b.url])
    for (let i = 0; i < 10; i++) expect((await fresh(`${url}/`)).headers['x-upstream']).toBe('b')
  })

  it('has every worker apply a notify target and mirror settings: each sends the switches it makes', async () => {
    const receiver = await startReceiver()
    try {
      await write([b.url], {
        notify: [{ name: 'hook', url: receiver.url, events: ['switch'] }],
        mirror: { methods: ['GET', 'OPTIONS'] },
      })
      const answer = await adminPost<ReloadAnswer>(admin, '/reload', {})
      expect(answer.body).toMatchObject({ result: 'applied', changed: ['mirror.methods', 'notify'] })
      expect(answer.body.workers?.applied).toHaveLength(2)
      // Each on a connection of its own, so that both workers answer and make switches.
      for (let i = 0; i < 6; i++) {
        const mirror = JSON.parse((await fresh(`${admin}/mirror`)).body) as { config: { methods: string[] } }
        expect(mirror.config.methods).toEqual(['GET', 'OPTIONS'])
      }
      // Switches back and forth until both workers have made (and sent) one.
      let switches = 0
      const senders = await eventually(
        async () => {
          const to = switches % 2 === 0 ? 'green' : 'blue'
          expect((await fresh(`${admin}/switch`, 'POST', { to })).status).toBe(200)
          switches++
          await eventually(() => receiver.received.length === switches, {
            message: `switch ${switches} to be delivered`,
          })
          const replicas = new Set(receiver.bodies<{ replica: string }>().map((body) => body.replica))
          return replicas.size === 2 && replicas
        },
        { timeout: 20_000, message: 'both workers to send a switch' },
      )
      expect(senders.size).toBe(2)
      await write([b.url])
      expect((await adminPost<ReloadAnswer>(admin, '/reload', {})).body.result).toBe('applied')
    } finally {
      await receiver.close()
    }
  })

  it('reloads every worker on SIGHUP to the primary, counted once', async () => {
    await write([a.url, b.url])
    cluster.child.kill('SIGHUP')
    await eventually(
      async () => {
        const workers = await blueOfEachWorker()
        return [...workers.values()].every((blue) => blue.length === 2)
      },
      { timeout: 15_000, message: 'both workers to route to a and b' },
    )
    const metrics = await scrapeMetrics(admin)
    expect(metrics.get('bluegreen_config_reloads_total{result="applied"}')).toBe(4)
  })

  it('refuses in the primary a change that needs a restart: no worker applies any of it', async () => {
    await writeConfig(
      dir.path,
      {
        listen: '127.0.0.1:1',
        admin: { listen: '127.0.0.1:0' },
        pools: { blue: { upstreams: [a.url] }, green: { upstreams: [a.url] } },
        state: { path: join(dir.path, 'state.json') },
      },
      'config.json',
    )
    const answer = await adminPost<ReloadError>(admin, '/reload', {})
    expect(answer.status).toBe(422)
    expect(answer.body.error.details.needsRestart).toEqual(['listen'])
    for (const blue of (await blueOfEachWorker()).values()) expect(blue).toHaveLength(2)
  })

  it('a worker restarted after a reload runs the reloaded config, not what the file says now', async () => {
    const pid = JSON.parse((await fresh(`${admin}/state`)).body)
      .replica.id.split('-')
      .at(-2)
    process.kill(Number(pid), 'SIGKILL')
    await eventually(() => cluster.lines().filter((line) => line.msg === 'worker serving').length >= 3, {
      timeout: 20_000,
      message: 'the worker to be restarted',
    })
    // The file now says listen 127.0.0.1:1 and blue [a]; the workers run blue [a, b] on the ports they share.
    for (const blue of (await blueOfEachWorker()).values()) expect(blue).toHaveLength(2)
  })
})
